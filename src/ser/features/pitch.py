"""Pitch: librosa's YIN (``librosa.yin``, 0.11) restated for chosen frames of several waveforms.

The maths is librosa's, step for step and in the same dtypes, so every frame's f0 is the one
``librosa.yin`` gives, to the bit (tests/features/test_prosody.py pins it). What differs is which
frames are computed and how they are laid out:

- only the frames a caller asks for (:mod:`ser.features.prosody` asks for the voiced ones: the
  f0 of the others is never read);
- a time-shifted copy's frames that read the same samples as the original's (the shift is a
  whole number of hops) are the original's: they are computed once;
- the steps after the autocorrelation run as one compiled pass per frame
  (:func:`ser.features.kernels.yin_f0`);
- every waveform's frames go into one contiguous ``(frames, n_pad)`` buffer, zero-padded to the
  FFT size already, and are transformed along the last axis. ``librosa.autocorrelate`` pads
  and transforms along a strided axis instead, which costs about four times as long for the
  same result (pocketfft transforms each frame alone either way).

YIN's frames are centred and zero-padded (``center=True, pad_mode="constant"``): frame ``t`` of
a waveform reads its samples ``[t * hop - frame // 2, t * hop - frame // 2 + frame)``, zero
outside the waveform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

TROUGH_THRESHOLD = 0.1  # librosa.yin's default


@dataclass(frozen=True)
class Yin:
    """YIN's settings: frame and hop in samples, the f0 range in Hz."""

    sr: int
    frame: int
    hop: int
    fmin: float
    fmax: float

    @property
    def min_period(self) -> int:
        return int(np.floor(self.sr / self.fmax))

    @property
    def max_period(self) -> int:
        return min(int(np.ceil(self.sr / self.fmin)), self.frame - 1)

    @property
    def n_pad(self) -> int:
        """FFT size of the autocorrelation (librosa's: full-length, a fast size)."""
        import scipy.fft

        return scipy.fft.next_fast_len(2 * self.frame - 1, real=True)

    def n_frames(self, n: int) -> int:
        """Frames of a waveform of ``n`` samples (centred, ``frame // 2`` zeros each side)."""
        return 1 + (n + 2 * (self.frame // 2) - self.frame) // self.hop


def f0_of_frames(frames: np.ndarray, yin: Yin) -> np.ndarray:
    """f0 in Hz (float64) of each row of ``frames``: ``(N, n_pad)`` float32, a frame's samples
    in ``[:, :yin.frame]`` and zeros after them (the FFT's padding).

    librosa's autocorrelation (the power spectrum's inverse transform), then its cumulative
    mean normalised difference, absolute threshold and parabolic interpolation in one compiled
    pass per frame (:func:`ser.features.kernels.yin_f0`), with frames on the first axis.
    """
    import scipy.fft

    from ser.features.kernels import power_in_place
    from ser.features.kernels import yin_f0 as f0_kernel

    spec = scipy.fft.rfft(frames, axis=-1)
    power_in_place(spec)  # as complex: irfft would convert a real power spectrum (a copy)
    acf = scipy.fft.irfft(spec, n=yin.n_pad, axis=-1, overwrite_x=True)
    out = np.empty(frames.shape[0], dtype=np.float64)
    f0_kernel(acf, frames, yin.min_period, yin.max_period, float(yin.sr), TROUGH_THRESHOLD, out)
    return out


def _windows(y: np.ndarray, yin: Yin) -> np.ndarray:
    """Every YIN frame of ``y`` as a strided view ``(n_frames, frame)``."""
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(np.asarray(y, dtype=np.float32), yin.frame // 2)
    return sliding_window_view(padded, yin.frame)[:: yin.hop]


def yin_f0(y: np.ndarray, yin: Yin, frames: np.ndarray | None = None) -> np.ndarray:
    """f0 in Hz of ``y`` (mono, float32) at frame indices ``frames`` (default: all of them),
    float64: ``librosa.yin(y, fmin=, fmax=, sr=, frame_length=, hop_length=)[frames]``."""
    return f0_at([y], [np.arange(yin.n_frames(y.shape[0])) if frames is None else frames], [None], yin)[0]


def shared_frames(t: np.ndarray, k: int, m: int, n: int, yin: Yin) -> np.ndarray:
    """Which frames ``t`` of a copy (``m`` samples) of the original (``n`` samples) moved ``k``
    samples later, zero-filled, read the samples that the original's frame ``t - k // hop`` reads.

    Both read zero-extended samples, so they agree wherever the copy is not cut short: the
    original's samples ``[k, k + n)`` (copy coordinates) that fall outside ``[0, m)`` are zeros
    in the copy. A frame touching them, or with no counterpart, is not shared.
    """
    if k % yin.hop:
        return np.zeros(t.shape, dtype=bool)
    start = t * yin.hop - yin.frame // 2
    end = start + yin.frame
    source = t - k // yin.hop
    ok = (source >= 0) & (source < yin.n_frames(n))
    # the cut parts: [k, min(0, k + n)) before the copy's start, [max(m, k), k + n) after its end
    ok &= (end <= k) | (start >= min(0, k + n))
    ok &= (end <= max(m, k)) | (start >= k + n)
    return ok


def f0_at(waves: Sequence[np.ndarray], frames: Sequence[np.ndarray], shifts: Sequence[int | None],
          yin: Yin) -> list[np.ndarray]:
    """f0 (Hz, float64) of each waveform at its frame indices ``frames[i]``, all in one batch.

    ``shifts[i]``: how many samples ``waves[i]`` is ``waves[0]`` moved by (zero-filled), or
    None; a shifted copy's frames that read the original's samples (see
    :func:`shared_frames`) are taken from the original's frames, computed once.
    """
    frames = [np.asarray(t, dtype=np.int64) for t in frames]
    shared = [np.zeros(t.shape, dtype=bool) for t in frames]
    for i in range(1, len(waves)):
        if shifts[i] is not None:
            shared[i] = shared_frames(frames[i], shifts[i], waves[i].shape[0], waves[0].shape[0], yin)
    # the original's frames: its own and those its shifted copies share with it, once each
    base = np.unique(np.concatenate([frames[0]] + [frames[i][shared[i]] - shifts[i] // yin.hop
                                                   for i in range(1, len(waves)) if shared[i].any()]))
    plan = [base] + [frames[i][~shared[i]] for i in range(1, len(waves))]
    buf = np.zeros((sum(t.shape[0] for t in plan), yin.n_pad), dtype=np.float32)
    starts = np.cumsum([0] + [t.shape[0] for t in plan])
    for i, t in enumerate(plan):
        buf[starts[i]: starts[i + 1], : yin.frame] = _windows(waves[i], yin)[t]
    f0 = f0_of_frames(buf, yin)
    out = [f0[np.searchsorted(base, frames[0])]]
    for i in range(1, len(waves)):
        result = np.empty(frames[i].shape[0], dtype=np.float64)
        result[~shared[i]] = f0[starts[i]: starts[i + 1]]
        if shared[i].any():
            result[shared[i]] = f0[np.searchsorted(base, frames[i][shared[i]] - shifts[i] // yin.hop)]
        out.append(result)
    return out
