"""The compiled per-frame loops equal what numpy computes the slow way, to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from ser.features.kernels import contrast_peaks_valleys, flatness_terms, rolloff_bins


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


@pytest.mark.parametrize("n_bins", [513, 130, 3])  # n_fft 1024; bins left over after the fours; none in fours
def test_flatness_terms_are_the_floored_magnitudes_products_by_four_and_power_sum(n_bins: int) -> None:
    rng = np.random.default_rng(n_bins)
    mag = np.abs(rng.standard_normal((n_bins, 40))).astype(np.float32)
    mag[:, 3] = 0.0  # digital silence: every bin on the floor
    mag[: n_bins // 2, 7] = 1e-7  # half the bins under it
    floor = np.float32(1e-5)
    quads = np.full((n_bins // 4, 50), np.nan, np.float32)
    power = np.full((2, 50), np.nan, np.float32)
    flatness_terms(mag, floor, quads[:, 5:45], power[1, 5:45])  # a block's columns of larger arrays
    floored = np.maximum(mag, floor)
    n = 4 * (n_bins // 4)
    expected = floored[0:n:4] * floored[1:n:4] * floored[2:n:4] * floored[3:n:4]
    np.testing.assert_array_equal(quads[:, 5:45], expected)  # the same products, to the bit
    np.testing.assert_allclose(power[1, 5:45], np.square(floored, dtype=np.float64).sum(axis=0), rtol=1e-6)
    assert power[1, 3 + 5] == pytest.approx(n_bins * 1e-10, rel=1e-5)
    assert np.isnan(power[0]).all() and np.isnan(power[1, :5]).all() and np.isnan(power[1, 45:]).all()
    assert np.isnan(quads[:, :5]).all() and np.isnan(quads[:, 45:]).all()
