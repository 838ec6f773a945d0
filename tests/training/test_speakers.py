"""Per-speaker standardisation, presets, and the optional descriptor groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from array_store import make_array_store
from ser.cli import main
from ser.errors import SerError
from ser.features.config import FeatureConfig, descriptor_names
from ser.features.extractor import extract, extract_many
from ser.training.speakers import speaker_statistics, standardize
from ser.training.loop import TrainConfig, train


def test_each_speaker_is_standardised_by_their_own_rows() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(5, 2, (10, 3)), rng.normal(-1, 0.5, (8, 3))]).astype(np.float32)
    spk = np.array(["a"] * 10 + ["b"] * 8)
    z = standardize(x, spk, speaker_statistics(x, spk))
    for s in ("a", "b"):
        np.testing.assert_allclose(z[spk == s].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(z[spk == s].std(0), 1, atol=1e-4)
    mel = rng.normal(0, 1, (12, 4, 6)).astype(np.float32)
    assert speaker_statistics(mel, np.array(["a"] * 12))["a"][0].shape == (4, 1)
    with pytest.raises(SerError, match="at least 5"):
        speaker_statistics(x[:3], spk[:3])


def test_speaker_norm_trains_evaluates_and_is_remembered(tmp_path: Path) -> None:
    store = make_array_store(tmp_path / "a.h5", per_class=20, seed=5)
    train(store, TrainConfig(model="svm", speaker_norm=True), tmp_path / "run", device="cpu", log=lambda m: None)
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt")])
    assert r.exit_code == 0, r.output
    from ser.training.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "best.pt").train_config["speaker_norm"] is True


def test_preset_best_refuses_a_store_without_its_features_and_says_how(tmp_path: Path) -> None:
    store = make_array_store(tmp_path / "a.h5", per_class=10)
    r = CliRunner().invoke(main, ["train", "--store", str(store), "--preset", "best", "--out", str(tmp_path / "r")])
    assert r.exit_code != 0
    assert "--stats mean,std --extras prosody,dynamics" in r.output
    r = CliRunner().invoke(main, ["train", "--store", str(store), "--preset", "best", "--model", "cnn1d"])
    assert r.exit_code != 0 and "leave out --model" in r.output


def test_extras_add_named_finite_descriptors_and_batch_equals_single() -> None:
    from ser.corpus.synth import synth_voice

    cfg = FeatureConfig(stats=("mean", "std"), extras=("dynamics", "prosody"))
    assert cfg.extras == ("prosody", "dynamics")  # canonical order, whatever was asked
    names = descriptor_names(cfg)
    assert len(names) == len(set(names)) and "logf0_mean" in names and "flux_std" in names
    waves = [synth_voice(e, duration_s=d, sr=16000, rng=np.random.default_rng(i))
             for i, (e, d) in enumerate([("ANG", 1.2), ("SAD", 0.6), ("HAP", 0.04)])]
    many = extract_many(waves, cfg)["descriptors"]
    assert many.shape == (3, len(names)) and np.isfinite(many).all()
    np.testing.assert_allclose(extract(waves[0], cfg)["descriptors"], many[0], rtol=1e-4, atol=1e-4)
    # an angry voice is pitched higher than a sad one in the synthetic corpus: the f0 feature sees it
    i = names.index("logf0_mean")
    assert many[0, i] > many[1, i]
    with pytest.raises(SerError, match="extras"):
        FeatureConfig(extras=("pitchy",))


def test_mel_bands_are_standardised_per_speaker_by_their_own_original_clips_without_labels(tmp_path: Path) -> None:
    """The transform cnn2d trains and evaluates through: each speaker's original clips end with
    every mel band at mean 0 and std 1 over their frames, whatever the labels and the other speakers."""
    from ser.store import Store
    from ser.training.speakers import store_transform

    store = Store(make_array_store(tmp_path / "a.h5", per_class=20, seed=1, copies=1))
    meta = store.meta()
    transform = store_transform(store, "mel")
    rows = meta.index.to_numpy()
    z = transform(store.read("mel", rows), rows)
    for spk in meta["speaker"].unique():
        own = ((meta["speaker"] == spk) & (meta["augment"] == "none")).to_numpy()
        np.testing.assert_allclose(z[own].mean(axis=(0, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(z[own].std(axis=(0, 2)), 1, atol=1e-3)
        copies = ((meta["speaker"] == spk) & (meta["augment"] != "none")).to_numpy()
        assert abs(z[copies].mean()) < 0.5  # the copies go through their speaker's statistics too
    # another speaker's clips or the labels do not move a speaker's statistics
    x = store.read("mel", rows)
    spk = meta["speaker"].to_numpy()
    alone = speaker_statistics(x[(spk == "s0") & (meta["augment"] == "none").to_numpy()],
                               np.array(["s0"] * int(((spk == "s0") & (meta["augment"] == "none")).sum())))
    s0 = np.flatnonzero(spk == "s0")
    np.testing.assert_allclose(z[s0], (x[s0] - alone["s0"][0]) / alone["s0"][1], rtol=1e-5, atol=1e-5)


def test_mel_statistics_leave_out_each_clips_padding_and_standardize_zeroes_it() -> None:
    """A short clip's mel is padded with its dB floor to the store's width: those frames are not
    the speaker's voice, so they stay out of the band statistics and read 0 afterwards."""
    rng = np.random.default_rng(3)
    n_mels, width = 4, 10
    own = np.array([10, 3, 7, 1, 12, 5])        # 12 > width: a clip cut to the width keeps all of it
    mel = np.full((len(own), n_mels, width), -100.0, dtype=np.float32)
    for i, n in enumerate(own):
        mel[i, :, :min(n, width)] = rng.normal(-30 + i, 4, (n_mels, min(n, width)))
    spk = np.array(["a"] * 6)
    frames = np.concatenate([mel[i, :, :min(n, width)] for i, n in enumerate(own)], axis=1)  # (n_mels, total)
    mean, std = speaker_statistics(mel, spk, own)["a"]
    np.testing.assert_allclose(mean[:, 0], frames.mean(1), rtol=1e-5)
    np.testing.assert_allclose(std[:, 0], frames.std(1), rtol=1e-4)
    z = standardize(mel, spk, {"a": (mean, std)}, own)
    for i, n in enumerate(own):
        assert (z[i, :, min(n, width):] == 0).all()
        np.testing.assert_allclose(z[i, :, :min(n, width)], (mel[i, :, :min(n, width)] - mean) / std, rtol=1e-5)
    # without the counts the padding floor enters the statistics, as before
    assert (speaker_statistics(mel, spk)["a"][1] > 2 * std).all()


def test_a_per_speaker_mel_checkpoint_from_before_padding_was_left_out_is_refused(tmp_path: Path) -> None:
    import torch

    from ser.errors import CheckpointError
    from ser.training.checkpoint import content_digest, load_checkpoint

    store = make_array_store(tmp_path / "a.h5", per_class=10, seed=2)
    cfg = TrainConfig(model="cnn2d", epochs=1, batch_size=16, patience=0, speaker_norm=True,
                      hparams={"filters": "4", "kernels": "3x3", "pooling": "stats"})
    train(store, cfg, tmp_path / "run", device="cpu", log=lambda m: None)
    assert load_checkpoint(tmp_path / "run" / "best.pt").raw["speaker_norm_mel_method"] == 2
    raw = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    del raw["speaker_norm_mel_method"], raw["sha256"]
    raw["sha256"] = content_digest(raw)
    torch.save(raw, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="old.pt: trained with per-speaker mel statistics that counted"):
        load_checkpoint(tmp_path / "old.pt")
