"""The compiled per-frame loops equal what numpy computes the slow way, to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from ser.frame_kernels import contrast_peaks_valleys, rolloff_bins


@pytest.mark.parametrize("n_frames", [1, 7, 256])
def test_contrast_is_the_mean_of_a_sorted_bands_ends(n_frames: int) -> None:
    rng = np.random.default_rng(n_frames)
    mag = np.abs(rng.standard_normal((300, n_frames))).astype(np.float32)
    mag[40:60] = 0.0  # ties: a band of zeros
    bands = [(0, 12, 1), (12, 25, 1), (25, 102, 2), (102, 204, 4), (204, 300, 7)]  # k up to 7 (a larger n_fft)
    first, end, k = (np.array(col, dtype=np.int64) for col in zip(*bands))
    peak = np.empty((len(bands), n_frames), np.float32)
    valley = np.empty_like(peak)
    contrast_peaks_valleys(mag, first, end, k, peak, valley)
    for b, (lo, hi, q) in enumerate(bands):
        s = np.sort(mag[lo:hi], axis=0)
        np.testing.assert_array_equal(valley[b], np.add.reduce(s[:q], axis=0) / np.float32(q))
        np.testing.assert_array_equal(peak[b], np.add.reduce(s[-q:], axis=0) / np.float32(q))


def test_contrast_writes_into_strided_block_views() -> None:
    mag = np.abs(np.random.default_rng(1).standard_normal((50, 10))).astype(np.float32)
    first, end, k = np.array([0, 20]), np.array([20, 50]), np.array([1, 2])
    peak, valley = np.zeros((2, 30), np.float32), np.zeros((2, 30), np.float32)
    contrast_peaks_valleys(mag, first, end, k, peak[:, 10:20], valley[:, 10:20])  # a block's columns
    assert not peak[:, :10].any() and not peak[:, 20:].any()
    np.testing.assert_array_equal(peak[0, 10:20], mag[:20].max(axis=0))
    np.testing.assert_array_equal(valley[1, 10:20], np.add.reduce(np.sort(mag[20:], axis=0)[:2], axis=0) / np.float32(2))


def test_rolloff_is_librosas_first_bin_reaching_the_share_of_a_float32_running_sum() -> None:
    rng = np.random.default_rng(2)
    mag = np.abs(rng.standard_normal((513, 64))).astype(np.float32)
    mag[:, 0] = 0.0  # a silent frame: bin 0, as librosa gives
    mag[:, 1] = 0.0
    mag[100, 1] = 1.0  # all energy in one bin
    total, out = np.empty(64, np.float32), np.empty(64, np.int64)
    rolloff_bins(mag, 0.85, total, out)
    cum = np.cumsum(mag, axis=0)
    np.testing.assert_array_equal(total, cum[-1])
    expected = np.minimum(np.count_nonzero(cum < np.float32(0.85) * cum[-1], axis=0), 512)
    np.testing.assert_array_equal(out, expected)
    assert out[0] == 0 and out[1] == 100
