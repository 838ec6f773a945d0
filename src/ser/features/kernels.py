"""Compiled loops for the per-frame features numpy can only do in many passes: spectral rolloff,
spectral contrast and the floored sums of spectral flatness (with numba, which librosa already
depends on); and YIN's steps after the autocorrelation (:mod:`ser.features.pitch`), one pass per
frame where librosa makes a dozen over every frame and lag.

Each kernel takes a block of magnitudes laid out ``(bins, frames)``, as :mod:`ser.features.extractor`
has them, and walks the bins once (twice for rolloff), updating one value per frame with loops
over the frames that LLVM vectorises (frames are the SIMD lanes). In numpy, rolloff needed group
sums, a cumulative sum and a bin-by-bin scan, and contrast a transposed copy and a sort of every
band: ~164 and ~300 µs per 256 frames, against ~45 and ~130 here.

Two details keep the loops vectorised: the running values of each band are separate 1-D arrays
(rows of one 2-D array made LLVM give up on them), and minima and maxima are ``np.minimum`` /
``np.maximum`` (a Python ``min`` or a conditional expression stayed scalar). Compiled on first
use and cached beside this file (numba's ``cache=True``), so a worker process loads them.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def rolloff_bins(mag: np.ndarray, percent: float, total: np.ndarray, out: np.ndarray) -> None:
    """Per frame, the first bin where the cumulative magnitude reaches ``percent`` of the sum.

    ``mag``: ``(bins, frames)`` float32. Fills ``total`` (``(frames,)`` float32, the magnitude's
    sum) and ``out`` (``(frames,)`` int64). librosa's definition to the bit: a float32 running
    sum from the lowest bin, the threshold ``percent`` times its last value.
    """
    n_bins, n_frames = mag.shape
    cum = np.zeros(n_frames, np.float32)
    for t in range(n_frames):
        total[t] = 0
    for k in range(n_bins):
        row = mag[k]
        for t in range(n_frames):
            total[t] += row[t]
    threshold = np.empty(n_frames, np.float32)
    for t in range(n_frames):
        threshold[t] = np.float32(percent) * total[t]
        out[t] = 0
    for k in range(n_bins):
        row = mag[k]
        for t in range(n_frames):
            cum[t] += row[t]
            out[t] += cum[t] < threshold[t]
    for t in range(n_frames):
        out[t] = min(out[t], n_bins - 1)


@njit(cache=True, nogil=True)
def _lower(a: np.ndarray, below: np.ndarray, row: np.ndarray) -> None:
    """One level of the running smallest values: ``a`` keeps the smaller of itself and the
    larger of ``row`` and the level below (``below`` holds smaller values than ``a``)."""
    for t in range(a.shape[0]):
        a[t] = np.minimum(a[t], np.maximum(below[t], row[t]))


@njit(cache=True, nogil=True)
def _upper(a: np.ndarray, above: np.ndarray, row: np.ndarray) -> None:
    """The mirror of :func:`_lower` for the running largest values."""
    for t in range(a.shape[0]):
        a[t] = np.maximum(a[t], np.minimum(above[t], row[t]))


@njit(cache=True, nogil=True)
def contrast_peaks_valleys(mag: np.ndarray, first: np.ndarray, end: np.ndarray, k: np.ndarray,
                           peak: np.ndarray, valley: np.ndarray) -> None:
    """Per band ``b`` and frame: the mean of the ``k[b]`` largest (``peak``) and smallest
    (``valley``) magnitudes of bins ``first[b]:end[b]``, exactly as the mean of a sorted band's
    ends (summed from the smallest value up, as numpy sums a sorted slice).

    ``mag``: ``(bins, frames)`` float32; ``peak``, ``valley``: ``(bands, frames)`` float32.
    Each bin passes through the ``k`` running values of a band from the top level down, like
    one step of an insertion sort done for every frame at once.
    """
    n_frames = mag.shape[1]
    levels = max(1, k.max())
    low = [np.empty(n_frames, np.float32) for _ in range(levels)]
    high = [np.empty(n_frames, np.float32) for _ in range(levels)]
    for b in range(first.shape[0]):
        q = k[b]
        for i in range(q):
            low[i][:] = np.inf
            high[i][:] = -np.inf
        for j in range(first[b], end[b]):
            row = mag[j]
            for i in range(q - 1, 0, -1):
                _lower(low[i], low[i - 1], row)
                _upper(high[i], high[i - 1], row)
            a = low[0]
            for t in range(n_frames):
                a[t] = np.minimum(a[t], row[t])
            a = high[0]
            for t in range(n_frames):
                a[t] = np.maximum(a[t], row[t])
        for t in range(n_frames):
            s = low[0][t]
            u = high[q - 1][t]
            for i in range(1, q):
                s += low[i][t]
                u += high[q - 1 - i][t]
            valley[b, t] = s / q
            peak[b, t] = u / q


@njit(cache=True, nogil=True)
def flatness_terms(mag: np.ndarray, floor: float, quads: np.ndarray, power: np.ndarray) -> None:
    """The two sums spectral flatness needs, from magnitudes floored at ``floor``, in one pass.

    ``quads[i]`` (``(bins // 4, frames)`` float32): the product of the floored magnitudes of
    bins ``4i .. 4i+3``, multiplied in that order (the log of a product of four is a quarter of
    the logs); ``power`` (``(frames,)`` float32): the sum of the squared floored magnitudes over
    every bin. In numpy the floor alone was a copy of the block and the power a second pass,
    for the frames of digital silence (a shift's zeros) that nearly every block holds.
    """
    n_bins, n_frames = mag.shape
    f = np.float32(floor)
    for t in range(n_frames):
        power[t] = 0
    for i in range(n_bins // 4):
        r0, r1, r2, r3 = mag[4 * i], mag[4 * i + 1], mag[4 * i + 2], mag[4 * i + 3]
        q = quads[i]
        for t in range(n_frames):
            a = np.maximum(r0[t], f)
            b = np.maximum(r1[t], f)
            c = np.maximum(r2[t], f)
            d = np.maximum(r3[t], f)
            q[t] = a * b * c * d
            power[t] += a * a + b * b + c * c + d * d
    for j in range(4 * (n_bins // 4), n_bins):
        row = mag[j]
        for t in range(n_frames):
            a = np.maximum(row[t], f)
            power[t] += a * a


@njit(cache=True, nogil=True)
def yin_f0(acf: np.ndarray, frames: np.ndarray, lo: int, hi: int, sr: float, threshold: float,
           out: np.ndarray) -> None:
    """YIN's f0 (Hz) of each frame from its autocorrelation: librosa.yin's cumulative mean
    normalised difference, absolute threshold and parabolic refinement, to the bit.

    ``acf``: ``(N, >= hi + 1)`` float32, lags 0..hi; ``frames``: ``(N, >= hi)`` float32, the
    frames' first samples (their energy terms); ``lo``, ``hi``: the shortest and longest period
    in lags; ``out``: ``(N,)`` float64. Each step keeps librosa's dtypes and order: float32
    energies, differences and their running sum, float64 means and ratios, and librosa's
    quirk that the first difference subtracts no energy. The parabola is fitted at the chosen
    lag only (librosa fits one at every lag, then reads one).
    """
    n_lags = hi - lo + 1
    cmnd = np.empty(n_lags, np.float64)
    tiny = np.finfo(np.float64).tiny
    two = np.float32(2)
    for r in range(acf.shape[0]):
        a0 = acf[r, 0]
        energy = frames[r, 0] * frames[r, 0]
        running = np.float32(0)
        for k in range(1, hi + 1):
            if k >= 2:
                energy += frames[r, k - 1] * frames[r, k - 1]
                d = two * (a0 - acf[r, k]) - energy
            else:
                d = two * (a0 - acf[r, k]) - np.float32(0)
            running += d
            if k >= lo:
                cmnd[k - lo] = np.float64(d) / (np.float64(running) / np.float64(k) + tiny)
        period = -1
        for j in range(n_lags):
            if cmnd[j] < threshold:
                if j == 0:
                    trough = cmnd[0] < cmnd[1]
                elif j == n_lags - 1:
                    trough = cmnd[j] < cmnd[j - 1]
                else:
                    trough = (cmnd[j] < cmnd[j - 1]) and (cmnd[j] <= cmnd[j + 1])
                if trough:
                    period = j
                    break
        if period < 0:  # np.argmin: the first minimum (the first NaN, if any)
            period = 0
            for j in range(1, n_lags):
                if np.isnan(cmnd[period]):
                    break
                if cmnd[j] < cmnd[period] or np.isnan(cmnd[j]):
                    period = j
        shift = 0.0
        if 0 < period < n_lags - 1:
            a = cmnd[period + 1] + cmnd[period - 1] - 2 * cmnd[period]
            b = (cmnd[period + 1] - cmnd[period - 1]) / 2
            if not np.abs(b) >= np.abs(a):
                shift = -b / a
        out[r] = sr / ((lo + period) + shift)


@njit(cache=True, nogil=True)
def power_in_place(spec: np.ndarray) -> None:
    """``spec`` (complex64, any shape) replaced by its power ``re^2 + im^2`` (float32, as
    ``librosa.util.abs2`` computes it) with a zero imaginary part, in one pass: the complex
    input an inverse real FFT reads without a conversion copy."""
    flat = spec.reshape(-1)
    for i in range(flat.shape[0]):
        re = flat[i].real
        im = flat[i].imag
        flat[i] = complex(re * re + im * im, 0.0)
