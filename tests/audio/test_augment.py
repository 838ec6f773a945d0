"""Waveform augmentations: determinism given the generator, shapes, what each one does."""

from __future__ import annotations

import numpy as np
import pytest

from ser.audio.augment import (AUGMENTATIONS, add_noise, clip_rng, parse_augment, pitch_shift, shifted,
                               time_shift, time_stretch, variants)
from ser.errors import SerError
from ser.corpus.synth import synth_voice

SR = 16000


@pytest.fixture(scope="module")
def y() -> np.ndarray:
    return synth_voice("HAP", duration_s=0.8, sr=SR, rng=np.random.default_rng(21))


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_each_augmentation_is_a_function_of_the_generator(name: str, y: np.ndarray) -> None:
    fn = AUGMENTATIONS[name]
    a = fn(y, sr=SR, rng=np.random.default_rng(5))
    b = fn(y, sr=SR, rng=np.random.default_rng(5))
    c = fn(y, sr=SR, rng=np.random.default_rng(6))
    assert a.dtype == np.float32 and a.ndim == 1
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)  # another draw, another result
    assert np.all(np.isfinite(a))


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_augmentations_leave_their_input_alone(name: str, y: np.ndarray) -> None:
    before = y.copy()
    AUGMENTATIONS[name](y, sr=SR, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(y, before)


def test_noise_is_added_at_the_drawn_snr(y: np.ndarray) -> None:
    for seed in range(5):
        out = add_noise(y, sr=SR, rng=np.random.default_rng(seed), snr_db=(20.0, 20.0))
        noise = out.astype(np.float64) - y
        snr = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise ** 2))
        assert snr == pytest.approx(20.0, abs=0.3)
        assert out.shape == y.shape


def test_noise_comes_from_the_bank_at_a_drawn_offset_and_fresh_past_its_length(y: np.ndarray) -> None:
    from ser.audio.augment import noise_bank

    bank = noise_bank()
    out = add_noise(y, sr=SR, rng=np.random.default_rng(1), snr_db=(20.0, 20.0))
    again = add_noise(y, sr=SR, rng=np.random.default_rng(1), snr_db=(20.0, 20.0))
    other = add_noise(y, sr=SR, rng=np.random.default_rng(2), snr_db=(20.0, 20.0))
    np.testing.assert_array_equal(out, again)  # the generator decides everything
    assert not np.array_equal(out, other)
    draws = np.random.default_rng(1)  # the same draws, in add_noise's order: SNR, offset, sign
    draws.uniform(20.0, 20.0)
    at, sign = int(draws.integers(0, bank.shape[0] - y.shape[0] + 1)), (1.0 if draws.integers(2) else -1.0)
    rms = np.sqrt(np.mean(y.astype(np.float64) ** 2)) / 10.0
    np.testing.assert_allclose(out - y, sign * rms * bank[at:at + y.shape[0]], atol=1e-6)
    long = np.tile(y, bank.shape[0] // y.shape[0] + 1)  # longer than the bank: fresh draws, same SNR
    noisy = add_noise(long, sr=SR, rng=np.random.default_rng(3), snr_db=(20.0, 20.0))
    snr = 10 * np.log10(np.mean(long.astype(np.float64) ** 2) / np.mean((noisy.astype(np.float64) - long) ** 2))
    assert noisy.shape == long.shape and snr == pytest.approx(20.0, abs=0.1)


def test_stretch_changes_the_length_by_the_drawn_rate(y: np.ndarray) -> None:
    slow = time_stretch(y, sr=SR, rng=np.random.default_rng(0), rates=(0.8, 0.8))
    fast = time_stretch(y, sr=SR, rng=np.random.default_rng(0), rates=(1.25, 1.25))
    assert slow.shape[0] == pytest.approx(y.shape[0] / 0.8, rel=0.01)
    assert fast.shape[0] == pytest.approx(y.shape[0] / 1.25, rel=0.01)


def test_pitch_shift_keeps_the_length_and_moves_a_tone() -> None:
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    up = pitch_shift(tone, sr=SR, rng=np.random.default_rng(0), semitones=(2.0, 2.0))
    assert up.shape == tone.shape

    def peak_hz(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x[SR // 4: 3 * SR // 4] * np.hanning(SR // 2)))
        return float(np.argmax(spec) * SR / (SR // 2))

    assert peak_hz(tone) == pytest.approx(440, abs=3)
    assert peak_hz(up) == pytest.approx(440 * 2 ** (2 / 12), abs=4)


def test_shift_zero_fills_instead_of_wrapping(y: np.ndarray) -> None:
    for seed in range(10):
        out = time_shift(y, sr=SR, rng=np.random.default_rng(seed), max_shift_s=0.1)
        assert out.shape == y.shape
        step = int(0.016 * SR)  # whole STFT hops at the default config
        k = step * int(np.random.default_rng(seed).integers(-(int(0.1 * SR) // step), int(0.1 * SR) // step + 1))
        assert k % 256 == 0
        if k >= 0:
            np.testing.assert_array_equal(out[k:], y[: y.shape[0] - k])
            assert not np.any(out[:k])
        else:
            np.testing.assert_array_equal(out[:k], y[-k:])
            assert not np.any(out[k:])


def test_shift_of_a_clip_shorter_than_the_shift_keeps_part_of_it() -> None:
    # regression: a shift longer than the clip used to raise a broadcasting ValueError
    short = synth_voice("SAD", duration_s=0.1, sr=SR, rng=np.random.default_rng(2))
    for seed in range(200):
        out = time_shift(short, sr=SR, rng=np.random.default_rng(seed), max_shift_s=0.3)
        assert out.shape == short.shape
        assert np.any(out)  # never shifted entirely out of the frame


def test_clip_rng_depends_on_seed_clip_and_augmentation_not_on_order() -> None:
    first = [clip_rng(42, c, a).random(3) for c in ("1001_DFA_ANG_XX", "1002_IEO_SAD_XX") for a in ("noise", "pitch")]
    second = [clip_rng(42, c, a).random(3) for c in ("1002_IEO_SAD_XX", "1001_DFA_ANG_XX") for a in ("pitch", "noise")]
    by_key_1 = dict(zip([(c, a) for c in ("1001_DFA_ANG_XX", "1002_IEO_SAD_XX") for a in ("noise", "pitch")], first))
    by_key_2 = dict(zip([(c, a) for c in ("1002_IEO_SAD_XX", "1001_DFA_ANG_XX") for a in ("pitch", "noise")], second))
    for key, draws in by_key_1.items():
        np.testing.assert_array_equal(draws, by_key_2[key])
    assert not np.array_equal(by_key_1[("1001_DFA_ANG_XX", "noise")], by_key_1[("1001_DFA_ANG_XX", "pitch")])
    assert not np.array_equal(by_key_1[("1001_DFA_ANG_XX", "noise")], by_key_1[("1002_IEO_SAD_XX", "noise")])
    assert not np.array_equal(clip_rng(42, "a", "noise").random(3), clip_rng(43, "a", "noise").random(3))


def test_variants_start_with_the_original_and_are_reproducible(y: np.ndarray) -> None:
    out = variants(y, sr=SR, clip_id="1001_DFA_HAP_XX", augment=("noise", "shift"), seed=42)
    assert [v.name for v in out] == ["none", "noise", "shift"]
    np.testing.assert_array_equal(out[0].wave, y)
    again = variants(y, sr=SR, clip_id="1001_DFA_HAP_XX", augment=("shift",), seed=42)
    # a copy does not depend on which other augmentations were asked for
    np.testing.assert_array_equal(again[1].wave, out[2].wave)
    other = variants(y, sr=SR, clip_id="1002_DFA_HAP_XX", augment=("noise",), seed=42)
    assert not np.array_equal(other[1].wave, out[1].wave)
    assert variants(y, sr=SR, clip_id="x", augment=(), seed=1) == [("none", y, 0)]


@pytest.mark.parametrize("clip_id", ["1001_DFA_HAP_XX", "1002_IEO_SAD_XX", "1003_ITH_ANG_XX", "1004_TIE_NEU_XX"])
def test_the_shifted_variant_carries_its_shift_and_equals_time_shift(y: np.ndarray, clip_id: str) -> None:
    out = variants(y, sr=SR, clip_id=clip_id, augment=tuple(AUGMENTATIONS), seed=7)
    shifts = {v.name: v.shift for v in out}
    assert shifts["none"] == 0 and shifts["noise"] is shifts["stretch"] is shifts["pitch"] is None
    k = shifts["shift"]
    assert isinstance(k, int) and k % 256 == 0  # whole STFT hops at 16 kHz
    wave = out[[v.name for v in out].index("shift")].wave
    # the same waveform time_shift gives with the same generator, and y moved by k, zero-filled
    np.testing.assert_array_equal(wave, time_shift(y, sr=SR, rng=clip_rng(7, clip_id, "shift")))
    np.testing.assert_array_equal(wave, shifted(y, k))


def test_a_clip_too_short_for_one_step_is_shifted_by_whole_samples() -> None:
    short = synth_voice("SAD", duration_s=0.02, sr=SR, rng=np.random.default_rng(3))  # 320 samples
    shifts = {variants(short, sr=SR, clip_id=f"c{i}", augment=("shift",), seed=1)[1].shift for i in range(40)}
    assert any(k % 256 for k in shifts) and all(abs(k) <= short.shape[0] // 2 for k in shifts)


def test_parse_augment() -> None:
    assert parse_augment("pitch, noise") == ("noise", "pitch")  # canonical order
    assert parse_augment("none") == parse_augment("") == parse_augment(None) == ()
    assert parse_augment(["Shift", "stretch"]) == ("stretch", "shift")
    with pytest.raises(SerError, match="reverb"):
        parse_augment("noise,reverb")
