"""Feature maths: pure functions of ``(y, config)``, no I/O.

Two families come out of one decode and one STFT per waveform:

- **descriptors**: a fixed-length vector of frame statistics (mean, optionally std) of
  zero-crossing rate, RMS energy, spectral centroid/bandwidth/rolloff/flatness, MFCCs,
  chroma, log-mel band energies and spectral contrast, with librosa's definitions, shape ``(D,)``;
- **mel**: mel power in dB (torchaudio's filterbank and dB conversion), shape
  ``(n_mels, frames)`` with ``frames`` fixed by ``max_seconds``: shorter clips are padded
  with the clip's dB floor, longer ones cut; the true frame count is returned beside it.

Every spectral feature reads the same STFT, so a clip costs one transform, not ten. The
maths is restated here in numpy (tests/test_features.py and tests/test_fast_path.py pin it
to librosa and torchaudio) for speed, and so that a worker process needs neither torch nor
librosa (each costs seconds of import and hundreds of MB per process; numba, for the two
compiled loops of :mod:`ser.features.kernels`, costs ~0.5 s to import and load and ~110 MiB):

- a clip's variants are laid end to end in one buffer and transformed together, in blocks of
  :data:`_BLOCK` frames, so the number of numpy calls per clip is small and fixed;
- the mel filterbanks are sparse (two non-zeros per bin), chroma and the spectral moments are
  small dense products; rolloff and spectral contrast are compiled loops over the bins, each
  vectorised across the block's frames (:mod:`ser.features.kernels`);
- zero-crossing rate and RMS come from cumulative sums over the waveform, not framed copies.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from ser.errors import SerError

STATS = ("mean", "std")
EXTRAS = ("prosody", "dynamics")  # optional clip-level functionals (see prosody.py)


@dataclass(frozen=True)
class FeatureConfig:
    """What the features are; saved in the store and in every checkpoint."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    max_seconds: float = 4.0
    n_mels: int = 64          # mel bands of the 2D spectrogram
    top_db: float = 80.0      # dynamic range kept below each spectrogram's peak
    n_mfcc: int = 40
    n_desc_mels: int = 128    # mel bands averaged into the descriptor vector
    n_chroma: int = 12
    n_contrast_bands: int = 6
    stats: tuple[str, ...] = ("mean",)
    extras: tuple[str, ...] = ()  # "prosody" (pitch, loudness), "dynamics" (MFCC deltas, flux)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0:
            raise SerError("sample_rate, n_fft and hop_length must be positive")
        if self.max_seconds <= 0:
            raise SerError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.n_mels <= 0 or self.n_mfcc <= 0 or self.n_desc_mels < self.n_mfcc:
            raise SerError("n_mels and n_mfcc must be positive and n_desc_mels >= n_mfcc")
        bad = [s for s in self.stats if s not in STATS]
        if bad or not self.stats:
            raise SerError(f"stats must be a non-empty subset of {STATS}, got {self.stats}")
        object.__setattr__(self, "stats", tuple(self.stats))
        bad = [e for e in self.extras if e not in EXTRAS]
        if bad:
            raise SerError(f"extras must be a subset of {EXTRAS}, got {tuple(self.extras)}")
        if "dynamics" in self.extras and self.n_mfcc < 20:
            raise SerError("extras 'dynamics' needs n_mfcc >= 20")
        object.__setattr__(self, "extras", tuple(e for e in EXTRAS if e in self.extras))

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames of the fixed-size mel spectrogram (centred STFT)."""
        return 1 + self.max_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stats"] = list(self.stats)
        d["extras"] = list(self.extras)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SerError(f"unknown feature config key(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("stats", "extras"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def _frame_feature_names(cfg: FeatureConfig) -> list[str]:
    names = ["zcr", "rms", "centroid", "bandwidth", "rolloff", "flatness"]
    names += [f"mfcc{i:02d}" for i in range(cfg.n_mfcc)]
    names += [f"chroma{i:02d}" for i in range(cfg.n_chroma)]
    names += [f"mel{i:03d}" for i in range(cfg.n_desc_mels)]
    names += [f"contrast{i}" for i in range(cfg.n_contrast_bands + 1)]
    return names


def descriptor_names(cfg: FeatureConfig) -> list[str]:
    """Names of the descriptor vector's entries, ``<feature>_<stat>``, in order."""
    from ser.features.prosody import dynamics_names, prosody_names

    base = _frame_feature_names(cfg)
    names = [f"{name}_{stat}" for stat in cfg.stats for name in base]
    if "prosody" in cfg.extras:
        names += prosody_names()
    if "dynamics" in cfg.extras:
        names += dynamics_names()
    return names


# -- filterbanks: numpy restatements of librosa's and torchaudio's (pinned equal by the tests) ------


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


#: Frames per STFT block: enough to amortise the ~40 numpy calls a block takes (64 frames
#: cost 30% more per clip; 256 to a whole clip the same), few enough to bound the working
#: memory (~1 MB of spectrum per 256 frames).
_BLOCK = 256
_ROLL_PERCENT = 0.85
_AMIN = 1e-10
_DB_PER_LOG = 10.0 / np.log(10.0)  # 10 log10(x) = _DB_PER_LOG ln(x); ln is several times faster


@dataclass(frozen=True, eq=False)
class _Bases:
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
def _bases(cfg: FeatureConfig) -> _Bases:
    import scipy.fft
    import scipy.sparse

    sr, n_fft = cfg.sample_rate, cfg.n_fft
    freqs = fft_frequencies(sr, n_fft)
    both = np.concatenate([mel_filters(sr, n_fft, cfg.n_desc_mels), mel_filters(sr, n_fft, cfg.n_mels, htk=True)])
    f_khz = freqs / 1000.0
    dct = scipy.fft.dct(np.eye(cfg.n_desc_mels), type=2, norm="ortho", axis=0)[: cfg.n_mfcc]
    bands = np.array(contrast_bands(sr, n_fft, cfg.n_contrast_bands), dtype=np.int64)
    return _Bases(
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


# -- the STFT ----------------------------------------------------------------------------------


def _padded(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, int]:
    """``y`` reflect-padded by ``n_fft // 2`` on each side (a centred STFT) and its frame count.

    A clip no longer than half a frame cannot be reflected: it is zero-extended first.
    """
    x = np.ascontiguousarray(y, dtype=np.float32)
    half = cfg.n_fft // 2
    if x.shape[0] <= half:
        x = np.pad(x, (0, half + 1 - x.shape[0]))
    return np.pad(x, half, mode="reflect"), 1 + x.shape[0] // cfg.hop_length


def stft(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Complex STFT, shape ``(1 + n_fft // 2, 1 + n // hop)``: centred, reflect-padded, Hann.

    The transform every spectral feature reads (the same framing as torchaudio's
    ``MelSpectrogram`` and ``torch.stft(center=True, pad_mode="reflect")``).
    """
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    padded, _ = _padded(y, cfg)
    frames = sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]
    return scipy.fft.rfft(frames.T * _bases(cfg).window, axis=0)


def power_to_db(power: np.ndarray, *, top_db: float | None) -> np.ndarray:
    """``10 log10(power)`` with a floor of 1e-10 and, if ``top_db``, ``top_db`` below the peak.

    Same convention as torchaudio's ``AmplitudeToDB(stype="power")`` and librosa's
    ``power_to_db(ref=1.0)``.
    """
    db = _db(power)
    if top_db is not None:
        np.maximum(db, db.max() - np.float32(top_db), out=db)
    return db


def _db(power: np.ndarray) -> np.ndarray:
    """``10 log10(max(power, 1e-10))`` as float32 (ln is several times faster than log10)."""
    db = np.log(np.maximum(power, _AMIN, dtype=np.float32))
    db *= np.float32(_DB_PER_LOG)
    return db


# -- a batch of waveforms, laid end to end -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Batch:
    """Several waveforms in one buffer, each in a slot that starts on a hop boundary.

    Every STFT frame of every waveform is then a row of one strided view, so a clip's
    variants are transformed together, in blocks, with a fixed number of numpy calls per block
    rather than per waveform. Frames are numbered compactly: waveform ``i`` owns frames
    ``bounds[i]:bounds[i + 1]``.
    """

    waves: list             # the float32 waveforms, cut to max_seconds
    offsets: np.ndarray     # (B,) first sample of each slot
    n_frames: np.ndarray    # (B,) STFT frames of each waveform
    bounds: np.ndarray      # (B + 1,) frame boundaries
    size: int               # samples in the buffer


def _batch(waves: Sequence[np.ndarray], cfg: FeatureConfig) -> _Batch:
    half, hop = cfg.n_fft // 2, cfg.hop_length
    ys = [np.ascontiguousarray(np.asarray(w)[: cfg.max_samples], dtype=np.float32) for w in waves]
    # a clip no longer than half a frame cannot be reflected: its STFT sees it zero-extended
    extended = [max(y.shape[0], half + 1) for y in ys]
    slots = [-(-(n + 2 * half) // hop) * hop for n in extended]
    offsets = np.concatenate([[0], np.cumsum(slots)[:-1]]).astype(np.int64)
    n_frames = np.array([1 + n // hop for n in extended], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(n_frames)]).astype(np.int64)
    return _Batch(ys, offsets, n_frames, bounds, int(sum(slots)))


def _frame_rows(batch: _Batch, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """The reflect-padded buffer as a strided ``(rows, n_fft)`` view, and each frame's row."""
    from numpy.lib.stride_tricks import sliding_window_view

    half, hop = cfg.n_fft // 2, cfg.hop_length
    buf = np.zeros(batch.size, dtype=np.float32)
    for y, off in zip(batch.waves, batch.offsets):
        n = y.shape[0]
        x = buf[off + half: off + half + max(n, half + 1)]  # zero-extended if too short to reflect
        x[:n] = y
        buf[off: off + half] = x[half:0:-1]  # numpy's and torch's "reflect": the edge sample once
        buf[off + half + x.shape[0]: off + 2 * half + x.shape[0]] = x[-2: -half - 2: -1]
    rows = np.concatenate([off // hop + np.arange(n) for off, n in zip(batch.offsets, batch.n_frames)])
    return sliding_window_view(buf, cfg.n_fft)[::hop], rows


def _frame_sums(buf: np.ndarray, starts: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """``sum(buf[s : s + n_fft])`` for each frame start ``s`` (multiples of hop), float64.

    From sums over hop-sized blocks when a frame is a whole number of hops (no serial pass over
    every sample), else from a cumulative sum.
    """
    n_fft, hop = cfg.n_fft, cfg.hop_length
    if n_fft % hop == 0:
        blocks = buf.reshape(-1, hop).sum(axis=1, dtype=np.uint32 if buf.dtype == np.uint8 else None)
        cum = np.zeros(blocks.shape[0] + 1, dtype=np.float64)
        np.cumsum(blocks, out=cum[1:])
        first = starts // hop
        return cum[first + n_fft // hop] - cum[first]
    cum = np.zeros(buf.shape[0] + 1, dtype=np.float64)
    np.cumsum(buf, dtype=np.float64, out=cum[1:])
    return cum[starts + n_fft] - cum[starts]


def _time_domain(batch: _Batch, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Zero-crossing rate and RMS per STFT frame of every waveform, each ``(total frames,)``.

    librosa's definitions, frames of ``n_fft`` samples centred like the STFT's:
    ``feature.zero_crossing_rate`` (edge padding; |x| <= 1e-10 counts as zero and zero as
    positive; the crossings between the frame's own samples, over n_fft) and ``feature.rms``
    (zero padding): RMS is the signal's, not the windowed STFT's. They come from frame sums of
    per-sample crossings and squares laid out like the STFT's buffer, not from framed copies.
    A waveform zero-extended for the STFT has fewer frames of its own: its last value repeats.
    """
    n_fft, hop, half = cfg.n_fft, cfg.hop_length, cfg.n_fft // 2
    size = batch.size + n_fft + hop  # room for the last frame's edge pair, whole blocks
    size += -size % hop
    crossing = np.zeros(size, dtype=np.uint8)  # [j]: samples j and j+1 differ in sign
    square = np.zeros(size, dtype=np.float32)
    starts, take = [], []
    first = 0
    for y, off, n in zip(batch.waves, batch.offsets, batch.n_frames):
        at = off + half  # the waveform's first sample; the edge padding around it never crosses
        negative = y < np.float32(-1e-10)
        np.not_equal(negative[1:], negative[:-1], out=crossing[at: at + y.shape[0] - 1].view(bool))
        np.square(y, out=square[at: at + y.shape[0]])
        own = 1 + y.shape[0] // hop
        starts.append(off + hop * np.arange(own))
        take.append(first + np.minimum(np.arange(n), own - 1))
        first += own
    starts = np.concatenate(starts)
    # a frame's pairs end one sample before the frame does: drop the pair across its edge
    zcr = (_frame_sums(crossing, starts, cfg) - crossing[starts + n_fft - 1]) / n_fft
    rms = np.sqrt(np.maximum(_frame_sums(square, starts, cfg), 0.0) / n_fft)
    take = np.concatenate(take)
    return zcr[take], rms[take]


# -- per-frame features ------------------------------------------------------------------------


_SCAN = 2048  # samples per step of the non-zero scans: a clip's first one is usually near an end


def _first_nonzero(y: np.ndarray) -> int:
    """Index of the first non-zero sample (``len(y)`` if none)."""
    if y.shape[0] and y[0] != 0:
        return 0
    for start in range(0, y.shape[0], _SCAN):
        nz = y[start:start + _SCAN] != 0
        if nz.any():
            return start + int(np.argmax(nz))
    return y.shape[0]


def _last_nonzero(y: np.ndarray) -> int:
    """Index of the last non-zero sample (-1 if none)."""
    if y.shape[0] and y[-1] != 0:
        return y.shape[0] - 1
    for end in range(y.shape[0], 0, -_SCAN):
        nz = y[max(0, end - _SCAN):end] != 0
        if nz.any():
            return max(0, end - _SCAN) + nz.shape[0] - 1 - int(np.argmax(nz[::-1]))
    return -1


def _shift_span(y: np.ndarray, y0: np.ndarray, k: int, cfg: FeatureConfig) -> tuple[int, int] | None:
    """``(lo, hi)`` if ``y`` is ``y0`` shifted by ``k`` samples, a whole number of hops, zero-filled:
    ``y[i] == y0[i - k]`` for ``i`` in ``[lo, hi)`` and ``y`` is zero elsewhere; else None."""
    n, n0 = y.shape[0], y0.shape[0]
    lo, hi = max(0, k), min(n, n0 + k)
    if k == 0 or k % cfg.hop_length or hi - lo < 2 * cfg.n_fft:  # (an unshifted copy: not worth a scan)
        return None
    step = (hi - lo) // 16  # most waveforms that are no copy differ at once on these 16 samples
    if (not np.array_equal(y[lo:hi:step], y0[lo - k:hi - k:step]) or y[:lo].any() or y[hi:].any()
            or not np.array_equal(y[lo:hi], y0[lo - k:hi - k])):
        return None
    return lo, hi


def _repeated_frames(batch: _Batch, cfg: FeatureConfig) -> np.ndarray | None:
    """For each frame of the batch, an equal frame to compute instead (itself if none), or None.

    A time-shifted copy (:func:`ser.audio.augment.time_shift`, zero-filled, by a whole number of hops)
    repeats the first waveform's frames: frame ``t`` of ``y[i] = y0[i - k]`` reads the samples
    frame ``t - k / hop`` of ``y0`` reads, wherever neither frame reaches past the samples the two
    share (the STFT's padding differs there), and a frame inside the zero fill is all zeros.
    Those frames are computed once. Candidate shifts come from where the waveforms' non-zero
    samples begin (or end); a candidate is used only after :func:`_shift_span` checked the
    samples, so any waveform is safe here, and one that is no such copy costs a short scan.
    """
    hop, half = cfg.hop_length, cfg.n_fft // 2
    waves, bounds = batch.waves, batch.bounds
    y0 = waves[0]
    if y0.shape[0] <= half or len(waves) < 2:
        return None
    first0 = _first_nonzero(y0)
    last0 = None
    source = None
    for j in range(1, len(waves)):
        y = waves[j]
        n = y.shape[0]
        first = _first_nonzero(y)
        if n <= half or first == n:  # too short to reflect, or all zeros
            continue
        k = first - first0
        span = _shift_span(y, y0, k, cfg)
        if span is None:  # y0 may start inside the part a negative shift cut off: try the ends
            last0 = _last_nonzero(y0) if last0 is None else last0
            k = _last_nonzero(y) - last0
            span = _shift_span(y, y0, k, cfg)
            if span is None:
                continue
        lo, hi = span
        if source is None:
            source = np.arange(int(bounds[-1]))
        t = np.arange(int(batch.n_frames[j]))
        centre = t * hop
        inside = (centre - half >= lo) & (centre + half <= hi)
        source[bounds[j] + t[inside]] = bounds[0] + t[inside] - k // hop
        # y is zero outside [lo, hi): frames wholly inside that fill, their reflected padding
        # included, are all zeros, and every one equals the first
        if k > 0:
            zero = centre + half < lo
        else:
            zero = (centre - half >= hi) & (2 * (n - 1) - (centre + half - 1) >= hi)
        if zero.any():
            z = bounds[j] + t[zero]
            source[z] = z[0]
    return source


def _spectral_frames(frames: np.ndarray, rows: np.ndarray, cfg: FeatureConfig, b: _Bases) -> dict[str, np.ndarray]:
    """Everything per frame that reads the STFT, for the frames ``frames[rows]``, block by block.

    Returns ``(..., frames)`` arrays: ``mel_power`` (both mel banks), ``chroma``
    (unnormalised), ``moments`` (sums of m, f m, f^2 m over bins, f in kHz), ``log_mean`` and
    ``mean`` (of the power floored at 1e-10, for flatness), ``rolloff`` (bin), ``peak`` and
    ``valley`` (contrast bands).
    """
    import scipy.fft

    from ser.features.kernels import contrast_peaks_valleys, flatness_terms, rolloff_bins

    total = rows.shape[0]
    n_bins = 1 + cfg.n_fft // 2
    n_bands = cfg.n_contrast_bands + 1
    out = {
        "mel_power": np.empty((b.mels.shape[0], total), dtype=np.float32),
        "chroma": np.empty((b.chroma.shape[0], total), dtype=np.float32),
        "moments": np.empty((3, total), dtype=np.float32),
        "log_mean": np.empty(total, dtype=np.float32),
        "rolloff": np.empty(total, dtype=np.int64),
        "peak": np.empty((n_bands, total), dtype=np.float32),
        "valley": np.empty((n_bands, total), dtype=np.float32),
    }
    out["mean"] = np.empty(total, dtype=np.float32)
    quads = 4 * (n_bins // 4)
    floor = np.float32(np.sqrt(_AMIN))  # |S| >= 1e-5 where |S|^2 >= 1e-10
    n_blocks = -(-total // _BLOCK)
    size = -(-total // n_blocks)  # equal blocks: no short tail
    window = b.window[:, 0]
    quad_buffer = np.empty((quads // 4, size), dtype=np.float32)
    for a in range(0, total, size):
        z = slice(a, min(a + size, total))
        block = frames[rows[z]]  # (frames, n_fft), a copy
        block *= window
        spec = scipy.fft.rfft(block.T, axis=0)  # (bins, frames)
        mag = np.abs(spec)  # one pass; re^2 + im^2 then a square root would be three
        power = np.square(mag)
        out["mel_power"][:, z] = b.mels @ power
        np.matmul(b.chroma, power, out=out["chroma"][:, z])
        rolloff_bins(mag, _ROLL_PERCENT, out["moments"][0, z], out["rolloff"][z])  # and the magnitude's sum
        np.matmul(b.moments, mag, out=out["moments"][1:, z])
        contrast_peaks_valleys(mag, b.band_first, b.band_end, b.band_k, out["peak"][:, z], out["valley"][:, z])
        # flatness: geometric over arithmetic mean of |S|^2 floored at 1e-10 (librosa's amin).
        # The arithmetic one is the floored power's sum (flatness_terms, with the products); the
        # geometric one is 2 mean(log max(|S|, 1e-5)), taken as the log of products of four
        # magnitudes (a quarter of the logs): |S| <= 512 max|y| keeps them inside float32.
        q = quad_buffer[:, :z.stop - z.start]
        flatness_terms(mag, floor, q, out["mean"][z])
        np.add.reduce(np.log(q, out=q), axis=0, out=out["log_mean"][z])
        for rest in range(quads, n_bins):
            out["log_mean"][z] += np.log(np.maximum(mag[rest], floor))
    out["mean"] /= n_bins
    out["log_mean"] *= 2.0 / n_bins
    return out


def _clamp_segments(db: np.ndarray, bounds: np.ndarray, top_db: float | None) -> np.ndarray:
    """``db`` (..., frames) floored at ``top_db`` below each waveform's own peak, in place."""
    if top_db is not None:
        peaks = np.maximum.reduceat(db.reshape(-1, db.shape[-1]).max(axis=0), bounds[:-1])
        np.maximum(db, np.repeat(peaks - np.float32(top_db), np.diff(bounds)), out=db)
    return db


def extract_many(waves: Sequence[np.ndarray], cfg: FeatureConfig) -> dict[str, Any]:
    """Both feature families of several waveforms (a clip's variants) at once.

    ``waves``: mono float ``(n_i,)`` arrays at ``cfg.sample_rate``; samples past
    ``max_seconds`` are ignored. Each row equals :func:`extract` of that waveform alone (to
    float rounding). Returns ``{"descriptors": (B, D), "mel": (B, n_mels, cfg.n_frames),
    "n_frames": (B,) int}``.
    """
    b = _bases(cfg)
    batch = _batch(waves, cfg)
    frames, rows = _frame_rows(batch, cfg)
    source = _repeated_frames(batch, cfg)
    if source is None:
        s = _spectral_frames(frames, rows, cfg, b)
    else:  # compute each distinct frame once, then lay the results out frame by frame
        own = source == np.arange(source.shape[0])  # a frame repeats an earlier one, or itself
        column = (np.cumsum(own) - 1)[source]
        s = {key: value[..., column] for key, value in _spectral_frames(frames, rows[own], cfg, b).items()}
    bounds, n_desc = batch.bounds, cfg.n_desc_mels
    total = int(bounds[-1])

    per_frame = np.empty((len(_frame_feature_names(cfg)), total), dtype=np.float32)
    per_frame[0], per_frame[1] = _time_domain(batch, cfg)
    m0, m1, m2 = (s["moments"][i].astype(np.float64) for i in range(3))
    weight = np.maximum(m0, _AMIN)
    centroid = m1 / weight
    # sum_k p_k (f_k - c)^2 with p = m / weight, expanded: the p sum to m0 / weight (1 unless silent)
    bandwidth = np.sqrt(np.maximum(m2 / weight - centroid ** 2 * (2.0 - m0 / weight), 0.0))
    per_frame[2] = 1000.0 * centroid
    per_frame[3] = 1000.0 * bandwidth
    per_frame[4] = b.freqs[s["rolloff"]]
    per_frame[5] = np.exp(s["log_mean"]) / s["mean"]
    i = 6
    db = _db(s["mel_power"])
    mel_db = _clamp_segments(db[:n_desc], bounds, cfg.top_db)  # (n_desc_mels, frames)
    np.matmul(b.dct, mel_db, out=per_frame[i: i + cfg.n_mfcc])
    i += cfg.n_mfcc
    chroma = s["chroma"]
    np.divide(chroma, np.maximum(np.abs(chroma).max(axis=0), _AMIN), out=per_frame[i: i + cfg.n_chroma])
    i += cfg.n_chroma
    per_frame[i: i + n_desc] = mel_db
    i += n_desc
    np.subtract(_clamp_segments(_db(s["peak"]), bounds, cfg.top_db),
                _clamp_segments(_db(s["valley"]), bounds, cfg.top_db), out=per_frame[i:])
    mel2d = _clamp_segments(db[n_desc:], bounds, cfg.top_db)  # (n_mels, frames)

    n = len(batch.waves)
    descriptors = np.empty((n, _n_descriptors(cfg)), dtype=np.float32)
    mel = np.empty((n, cfg.n_mels, cfg.n_frames), dtype=np.float32)
    n_frames = np.minimum(batch.n_frames, cfg.n_frames)
    width = per_frame.shape[0]
    for k in range(n):
        lo, hi = bounds[k], bounds[k + 1]
        for j, stat in enumerate(cfg.stats):
            frames = per_frame[:, lo:hi]
            descriptors[k, j * width:(j + 1) * width] = frames.mean(axis=1) if stat == "mean" else frames.std(axis=1)
        col = len(cfg.stats) * width
        if "prosody" in cfg.extras:
            from ser.features.prosody import prosody

            p = prosody(batch.waves[k], per_frame[1, lo:hi], sr=cfg.sample_rate, n_fft=cfg.n_fft,
                        hop_length=cfg.hop_length)
            descriptors[k, col:col + p.shape[0]] = p
            col += p.shape[0]
        if "dynamics" in cfg.extras:
            from ser.features.prosody import dynamics

            mfcc_rows = per_frame[6:6 + cfg.n_mfcc, lo:hi]
            mel_rows = per_frame[6 + cfg.n_mfcc + cfg.n_chroma: 6 + cfg.n_mfcc + cfg.n_chroma + n_desc, lo:hi]
            d = dynamics(mfcc_rows, mel_rows)
            descriptors[k, col:col + d.shape[0]] = d
        own = mel2d[:, lo:hi]
        mel[k, :, : n_frames[k]] = own[:, : n_frames[k]]
        mel[k, :, n_frames[k]:] = own.min()  # pad with the waveform's own floor, not 0 dB
    return {"descriptors": descriptors, "mel": mel, "n_frames": n_frames}


@lru_cache(maxsize=8)
def _n_descriptors(cfg: FeatureConfig) -> int:
    return len(descriptor_names(cfg))  # ~200 f-strings: built once per config, not per clip


def extract(y: np.ndarray, cfg: FeatureConfig) -> dict[str, Any]:
    """Both feature families from one STFT of one waveform.

    ``y``: mono float ``(n,)`` at ``cfg.sample_rate``; samples past ``max_seconds`` are ignored.
    Returns ``{"descriptors": (D,), "mel": (n_mels, cfg.n_frames), "n_frames": int}``.
    """
    out = extract_many([y], cfg)
    return {"descriptors": out["descriptors"][0], "mel": out["mel"][0], "n_frames": int(out["n_frames"][0])}
