"""Feature maths: the one-STFT fast path against librosa and torchaudio, shapes, padding, cuts."""

from __future__ import annotations

import numpy as np
import pytest

from ser.errors import SerError
from ser.features.config import FeatureConfig, descriptor_names
from ser.features.extractor import extract, power_to_db, stft
from ser.corpus.synth import synth_voice

SR = 16000
CFG = FeatureConfig(n_mels=32, max_seconds=1.5)


def sinusoid_plus_noise(seconds: float, *, seed: int, sr: int = SR) -> np.ndarray:
    """A seeded test signal (torchaudio's get_sinusoid + get_whitenoise): 220 Hz + 1.3 kHz + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    y = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1300 * t)
    return (y + 0.05 * rng.standard_normal(t.shape[0])).astype(np.float32)


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    """One second of synthetic angry "speech" (seeded)."""
    return synth_voice("ANG", duration_s=1.0, sr=SR, rng=np.random.default_rng(1234))


def _one(desc: np.ndarray, cfg: FeatureConfig, name: str) -> float:
    return float(desc[descriptor_names(cfg).index(name)])


@pytest.mark.parametrize("signal", ["voice", "tones"])
def test_mfcc_means_match_librosa(signal: str, voice: np.ndarray) -> None:
    import librosa

    y = voice if signal == "voice" else sinusoid_plus_noise(1.2, seed=3)
    out = extract(y, CFG)
    fast = np.array([_one(out["descriptors"], CFG, f"mfcc{i:02d}_mean") for i in range(CFG.n_mfcc)])
    # librosa with the store's STFT convention (reflect padding; librosa's default is zeros)
    ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=CFG.n_mfcc, n_fft=CFG.n_fft, hop_length=CFG.hop_length,
                               n_mels=CFG.n_desc_mels, pad_mode="reflect").mean(axis=1)
    np.testing.assert_allclose(fast, ref, rtol=1e-3, atol=1e-3)


def test_mel_db_matches_torchaudio_on_the_unpadded_frames(voice: np.ndarray) -> None:
    import torch
    import torchaudio

    out = extract(voice, CFG)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SR, n_fft=CFG.n_fft, hop_length=CFG.hop_length,
                                               n_mels=CFG.n_mels, power=2.0)
    ref = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80.0)(mel(torch.from_numpy(voice))).numpy()
    n = out["n_frames"]
    assert ref.shape == (CFG.n_mels, n)
    np.testing.assert_allclose(out["mel"][:, :n], ref, rtol=0, atol=1e-3)


def test_other_descriptors_match_librosa(voice: np.ndarray) -> None:
    import librosa

    desc = extract(voice, CFG)["descriptors"]
    kw = dict(n_fft=CFG.n_fft, hop_length=CFG.hop_length)
    mag = np.abs(librosa.stft(voice, pad_mode="reflect", **kw))
    expected = {
        "zcr_mean": librosa.feature.zero_crossing_rate(voice, frame_length=CFG.n_fft, hop_length=CFG.hop_length),
        "rms_mean": librosa.feature.rms(y=voice, frame_length=CFG.n_fft, hop_length=CFG.hop_length),
        "centroid_mean": librosa.feature.spectral_centroid(S=mag, sr=SR),
        "bandwidth_mean": librosa.feature.spectral_bandwidth(S=mag, sr=SR),
        "rolloff_mean": librosa.feature.spectral_rolloff(S=mag, sr=SR),
        "flatness_mean": librosa.feature.spectral_flatness(S=mag),
    }
    for name, frames in expected.items():
        assert _one(desc, CFG, name) == pytest.approx(float(frames.mean()), rel=1e-4), name
    chroma = librosa.feature.chroma_stft(S=mag ** 2, sr=SR, tuning=0.0, n_chroma=CFG.n_chroma, **kw)
    np.testing.assert_allclose([_one(desc, CFG, f"chroma{i:02d}_mean") for i in range(CFG.n_chroma)],
                               chroma.mean(axis=1), rtol=1e-4, atol=1e-5)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=mag ** 2, sr=SR, n_mels=CFG.n_desc_mels),
                                 top_db=CFG.top_db)
    np.testing.assert_allclose([_one(desc, CFG, f"mel{i:03d}_mean") for i in range(CFG.n_desc_mels)],
                               mel_db.mean(axis=1), rtol=0, atol=1e-3)
    contrast = librosa.feature.spectral_contrast(S=mag, sr=SR, n_bands=CFG.n_contrast_bands, **kw)
    np.testing.assert_allclose([_one(desc, CFG, f"contrast{i}_mean") for i in range(CFG.n_contrast_bands + 1)],
                               contrast.mean(axis=1), rtol=1e-3, atol=1e-3)


def test_descriptors_are_finite_and_named(voice: np.ndarray) -> None:
    out = extract(voice, CFG)
    names = descriptor_names(CFG)
    assert out["descriptors"].shape == (len(names),)
    assert out["descriptors"].dtype == np.float32
    assert len(set(names)) == len(names)
    assert np.all(np.isfinite(out["descriptors"])) and np.all(np.isfinite(out["mel"]))


def test_std_statistics_double_the_vector_and_are_frame_stds(voice: np.ndarray) -> None:
    cfg = FeatureConfig(n_mels=32, max_seconds=1.5, stats=("mean", "std"))
    desc = extract(voice, cfg)["descriptors"]
    names = descriptor_names(cfg)
    assert desc.shape == (2 * len(descriptor_names(CFG)),)
    assert names[: len(names) // 2] == descriptor_names(CFG)
    np.testing.assert_array_equal(desc[: len(names) // 2], extract(voice, CFG)["descriptors"])
    import librosa

    rms = librosa.feature.rms(y=voice, frame_length=cfg.n_fft, hop_length=cfg.hop_length)
    assert desc[names.index("rms_std")] == pytest.approx(float(rms.std()), rel=1e-4)
    assert desc[names.index("rms_std")] > 0


def test_mel_shape_and_padding_to_the_fixed_frame_count() -> None:
    y = sinusoid_plus_noise(0.5, seed=5)
    out = extract(y, CFG)
    assert CFG.n_frames == 1 + int(1.5 * SR) // CFG.hop_length == 94
    assert out["mel"].shape == (CFG.n_mels, CFG.n_frames)
    assert out["mel"].dtype == np.float32
    n = out["n_frames"]
    assert n == 1 + y.shape[0] // CFG.hop_length == 32   # the true length, not the padded one
    floor = out["mel"][:, :n].min()
    assert np.all(out["mel"][:, n:] == floor)              # padded with the clip's own floor
    assert out["mel"][:, :n].max() - floor <= CFG.top_db + 1e-3


def test_a_long_clip_is_cut_at_max_seconds() -> None:
    y = sinusoid_plus_noise(3.0, seed=6)
    out = extract(y, CFG)
    assert out["n_frames"] == CFG.n_frames
    assert out["mel"].shape == (CFG.n_mels, CFG.n_frames)
    cut = extract(y[: CFG.max_samples], CFG)
    np.testing.assert_array_equal(out["mel"], cut["mel"])
    np.testing.assert_array_equal(out["descriptors"], cut["descriptors"])
    # and the second half does matter when it is kept
    longer = FeatureConfig(n_mels=32, max_seconds=3.0)
    assert extract(y, longer)["n_frames"] == longer.n_frames > CFG.n_frames


def test_extract_is_pure(voice: np.ndarray) -> None:
    y = voice.copy()
    a = extract(y, CFG)
    np.testing.assert_array_equal(y, voice)
    b = extract(y, CFG)
    np.testing.assert_array_equal(a["mel"], b["mel"])
    np.testing.assert_array_equal(a["descriptors"], b["descriptors"])


def test_a_clip_shorter_than_half_a_frame_still_gives_finite_features() -> None:
    y = sinusoid_plus_noise(300 / SR, seed=7)  # 300 samples < n_fft // 2
    out = extract(y, CFG)
    assert out["mel"].shape == (CFG.n_mels, CFG.n_frames)
    assert 1 <= out["n_frames"] <= 3
    assert np.all(np.isfinite(out["descriptors"])) and np.all(np.isfinite(out["mel"]))


def test_stft_is_torchaudios_centred_hann_transform() -> None:
    import torch

    y = sinusoid_plus_noise(0.25, seed=8)
    spec = stft(y, CFG)
    assert spec.shape == (1 + CFG.n_fft // 2, 1 + y.shape[0] // CFG.hop_length)
    import torchaudio

    ref = torchaudio.transforms.Spectrogram(n_fft=CFG.n_fft, hop_length=CFG.hop_length, power=2.0)(
        torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(np.abs(spec) ** 2, ref, rtol=1e-4, atol=1e-6)


def test_power_to_db_follows_torchaudio_and_librosa() -> None:
    import librosa
    import torch
    import torchaudio.functional as AF

    power = np.random.default_rng(9).exponential(size=(16, 40)).astype(np.float32) ** 6
    ours = power_to_db(power, top_db=80.0)
    np.testing.assert_allclose(ours, librosa.power_to_db(power, ref=1.0, top_db=80.0), atol=1e-4)
    ta = AF.amplitude_to_DB(torch.from_numpy(power), multiplier=10.0, amin=1e-10, db_multiplier=0.0, top_db=80.0)
    np.testing.assert_allclose(ours, ta.numpy(), atol=1e-4)
    assert ours.min() == pytest.approx(ours.max() - 80.0)
    assert power_to_db(np.zeros((2, 2)), top_db=None).min() == pytest.approx(-100.0)


def test_feature_config_round_trips_and_validates() -> None:
    cfg = FeatureConfig(n_mels=40, max_seconds=2.5, stats=["mean", "std"])
    assert cfg.stats == ("mean", "std")
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    import json

    assert FeatureConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.n_frames == 1 + cfg.max_samples // cfg.hop_length and cfg.max_samples == 40000
    with pytest.raises(SerError, match="unknown feature config"):
        FeatureConfig.from_dict({**cfg.to_dict(), "window": "hann"})
    for bad in (dict(max_seconds=0), dict(stats=("median",)), dict(stats=()), dict(n_mfcc=200),
                dict(hop_length=0), dict(n_mels=0)):
        with pytest.raises(SerError):
            FeatureConfig(**bad)
