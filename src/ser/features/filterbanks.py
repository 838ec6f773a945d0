"""Filterbanks and everything else about a :class:`FeatureConfig` that does not depend on the
clip: numpy restatements of librosa's and torchaudio's (tests/featurize/test_fast_path.py pins them
equal), computed once per config (:func:`bases`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ser.errors import SerError
from ser.features.config import FeatureConfig


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window ``(n_fft,)`` float32: ``torch.hann_window`` and librosa's ``"hann"``."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def fft_frequencies(sr: int, n_fft: int) -> np.ndarray:
    """Centre frequency of each STFT bin in Hz, ``(1 + n_fft // 2,)`` float64."""
    return np.fft.rfftfreq(n_fft, 1.0 / sr)


def _slaney_hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mels = f / f_sp
    log_part = f >= min_log_hz
    return np.where(log_part, min_log_hz / f_sp + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, mels)


def _slaney_mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def _triangles(bin_freqs: np.ndarray, f_pts: np.ndarray) -> np.ndarray:
    """Overlapping triangles with corners ``f_pts``: ``(len(f_pts) - 2, bins)`` float64."""
    f_diff = np.diff(f_pts)
    ramps = f_pts[:, None] - bin_freqs[None, :]
    down = -ramps[:-2] / f_diff[:-1, None]
    up = ramps[2:] / f_diff[1:, None]
    return np.maximum(0.0, np.minimum(down, up))


@lru_cache(maxsize=16)
def mel_filters(sr: int, n_fft: int, n_mels: int, *, htk: bool = False) -> np.ndarray:
    """Mel filterbank ``(n_mels, 1 + n_fft // 2)`` float32 from 0 Hz to ``sr / 2``.

    ``htk=False``: librosa's ``filters.mel`` default (Slaney scale, Slaney area norm), used by
    the descriptor mel bands and MFCCs. ``htk=True``: torchaudio's ``melscale_fbanks`` as
    ``MelSpectrogram`` uses it (HTK scale, no norm), used by the 2D mel spectrogram.
    """
    if htk:
        m_max = 2595.0 * np.log10(1.0 + (sr / 2.0) / 700.0)
        f_pts = 700.0 * (10.0 ** (np.linspace(0.0, m_max, n_mels + 2) / 2595.0) - 1.0)
        # torchaudio's bin frequencies: linspace(0, sr // 2, n_freqs)
        weights = _triangles(np.linspace(0, sr // 2, 1 + n_fft // 2), f_pts)
    else:
        f_pts = _slaney_mel_to_hz(np.linspace(_slaney_hz_to_mel(0.0), _slaney_hz_to_mel(sr / 2.0), n_mels + 2))
        weights = _triangles(fft_frequencies(sr, n_fft), f_pts)
        weights *= (2.0 / (f_pts[2:] - f_pts[:-2]))[:, None]
    return _shared(weights)


def _shared(a: np.ndarray) -> np.ndarray:
    """A cached array as read-only float32: callers share it."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    a.setflags(write=False)
    return a


@lru_cache(maxsize=16)
def chroma_filters(sr: int, n_fft: int, n_chroma: int = 12) -> np.ndarray:
    """librosa's ``filters.chroma`` (tuning 0, ctroct 5, octwidth 2, L2 norm, base C):
    ``(n_chroma, 1 + n_fft // 2)`` float32."""
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    frqbins = n_chroma * np.log2(frequencies / (440.0 / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    d = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    d = np.remainder(d + half + 10 * n_chroma, n_chroma) - half
    wts = np.exp(-0.5 * (2 * d / binwidthbins[None, :]) ** 2)
    norms = np.sqrt(np.sum(wts ** 2, axis=0, keepdims=True))
    wts = wts / np.where(norms < np.finfo(wts.dtype).tiny, 1.0, norms)
    wts *= np.exp(-0.5 * (((frqbins / n_chroma - 5.0) / 2.0) ** 2))[None, :]
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return _shared(wts[:, : 1 + n_fft // 2])


def contrast_bands(sr: int, n_fft: int, n_bands: int, *, fmin: float = 200.0,
                   quantile: float = 0.02) -> list[tuple[int, int, int]]:
    """librosa's ``spectral_contrast`` octave bands as ``(first_bin, end_bin, k)``: the band's
    peak is the mean of its ``k`` largest magnitudes, its valley the mean of its ``k`` smallest."""
    freq = fft_frequencies(sr, n_fft)
    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    if np.any(octa[:-1] >= 0.5 * sr):
        raise SerError("spectral contrast bands exceed Nyquist: reduce n_contrast_bands")
    bands = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        current = np.logical_and(freq >= f_low, freq <= f_high)
        idx = np.flatnonzero(current)
        if k > 0:
            current[idx[0] - 1] = True
        if k == n_bands:
            current[idx[-1] + 1:] = True
        sel = np.flatnonzero(current)
        if k < n_bands:
            sel = sel[:-1]
        q = int(max(np.rint(quantile * np.sum(current)), 1))
        bands.append((int(sel[0]), int(sel[-1]) + 1, q))
    return bands


@dataclass(frozen=True, eq=False)
class Bases:
    """Everything about a FeatureConfig that does not depend on the clip, computed once.

    Spectra are laid out ``(bins, frames)``, as librosa's are, so every product below is a
    matrix times the block's spectrum with no transposed copy.
    """

    window: np.ndarray       # (n_fft, 1)
    freqs: np.ndarray        # (bins,) float32, Hz
    mels: Any                # scipy.sparse CSR (n_desc_mels + n_mels, bins): both mel banks at once
    chroma: np.ndarray       # (n_chroma, bins): the chroma filters
    moments: np.ndarray      # (2, bins): f and f^2, f in kHz
    dct: np.ndarray          # (n_mfcc, n_desc_mels): orthonormal DCT-II, the MFCCs
    band_first: np.ndarray   # contrast bands (int64, one per band): first bin,
    band_end: np.ndarray     # end bin,
    band_k: np.ndarray       # and how many of the band's largest / smallest magnitudes are averaged


@lru_cache(maxsize=8)
def bases(cfg: FeatureConfig) -> Bases:
    """The clip-independent arrays of ``cfg``, built once per config and shared (read-only)."""
    import scipy.fft
    import scipy.sparse

    sr, n_fft = cfg.sample_rate, cfg.n_fft
    freqs = fft_frequencies(sr, n_fft)
    both = np.concatenate([mel_filters(sr, n_fft, cfg.n_desc_mels), mel_filters(sr, n_fft, cfg.n_mels, htk=True)])
    f_khz = freqs / 1000.0
    dct = scipy.fft.dct(np.eye(cfg.n_desc_mels), type=2, norm="ortho", axis=0)[: cfg.n_mfcc]
    bands = np.array(contrast_bands(sr, n_fft, cfg.n_contrast_bands), dtype=np.int64)
    return Bases(
        window=hann_window(n_fft)[:, None],
        freqs=freqs.astype(np.float32),
        # sparse: a mel filter has a handful of non-zero bins, so a few thousand multiply-adds
        # per frame instead of the dense product's 100k
        mels=scipy.sparse.csr_array(both),
        chroma=chroma_filters(sr, n_fft, cfg.n_chroma),
        moments=np.stack([f_khz, f_khz ** 2]).astype(np.float32),
        dct=np.ascontiguousarray(dct, dtype=np.float32),
        band_first=bands[:, 0].copy(),
        band_end=bands[:, 1].copy(),
        band_k=bands[:, 2].copy(),
    )
