"""The training loop and its checkpoints (resume, early stopping), on stores built in fixtures."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from array_store import LABELS, make_array_store
from ser.cli import main
from ser.errors import CheckpointError, SerError
from ser.evaluation.evaluator import evaluate
from ser.store import Store
from ser.training.checkpoint import check_compatible, load_checkpoint
from ser.training.loop import TrainConfig, train

QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def array_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_array_store(tmp_path_factory.mktemp("arr") / "arr.h5", per_class=30, seed=0)


@pytest.mark.parametrize("model, hparams", [
    ("cnn1d", {}),
    ("cnn2d", {"filters": "8,16", "kernels": "3x3,3x3"}),
])
def test_training_beats_chance_on_separable_classes(array_store: Path, tmp_path: Path, model: str,
                                                    hparams: dict) -> None:
    cfg = TrainConfig(model=model, epochs=8, batch_size=16, lr=1e-3, patience=0, seed=1, hparams=hparams)
    res = train(array_store, cfg, tmp_path, device="cpu", **QUIET)
    ev = evaluate(tmp_path / "best.pt", split="test", device="cpu", **QUIET)
    assert ev.metrics["n"] == int((Store(array_store).meta()["split"] == "test").sum())
    assert ev.metrics["accuracy"] > 0.8, ev.metrics  # chance is 1/3
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    for name in ("best.pt", "last.pt", "history.csv"):  # curves.png is the CLI's: test_cli_train_evaluate_predict
        assert (tmp_path / name).stat().st_size > 0
    hist = pd.read_csv(tmp_path / "history.csv")
    assert list(hist["epoch"]) == list(range(1, 9))


@pytest.mark.parametrize("select, columns", [("uar", ("val_uar", "val_accuracy")),
                                            ("macro-f1", ("val_macro_f1", "val_accuracy")),
                                            ("accuracy", ("val_accuracy", "val_uar"))])
def test_the_best_epoch_is_the_one_the_selected_score_ranks_first(array_store: Path, tmp_path: Path, select: str,
                                                                  columns: tuple[str, str]) -> None:
    cfg = TrainConfig(model="cnn1d", epochs=5, batch_size=16, lr=3e-3, patience=0, seed=2, select=select)
    res = train(array_store, cfg, tmp_path, device="cpu", **QUIET)
    hist = pd.read_csv(tmp_path / "history.csv")
    first, second = columns
    ranked = sorted(hist.itertuples(), key=lambda r: (-getattr(r, first), -getattr(r, second), r.epoch))
    assert res.best_epoch == ranked[0].epoch
    best = hist.set_index("epoch").loc[res.best_epoch]
    assert (res.best_val_uar, res.best_val_accuracy, res.best_val_macro_f1) == \
        (best["val_uar"], best["val_accuracy"], best["val_macro_f1"])
    assert load_checkpoint(tmp_path / "best.pt").epoch == res.best_epoch


def test_an_unknown_selection_score_is_refused() -> None:
    with pytest.raises(SerError, match="select must be one of uar, macro-f1, accuracy"):
        TrainConfig(select="f1")


def test_checkpoint_round_trip_predicts_identically(array_store: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(model="cnn1d", epochs=2, batch_size=16, patience=0)
    train(array_store, cfg, tmp_path, device="cpu", **QUIET)
    a = load_checkpoint(tmp_path / "last.pt")
    b = load_checkpoint(tmp_path / "last.pt")
    x = torch.from_numpy(Store(array_store).read("descriptors", np.arange(10)))
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))
    assert a.labels == LABELS and a.model_name == "cnn1d" and a.epoch == 2
    assert a.feature_config == Store(array_store).feature_config
    assert a.store_fingerprint == Store(array_store).fingerprint()
    assert len(a.history) == 2
    # the scaler is the train rows' statistics, and it is inside the model
    st = Store(array_store)
    train_x = st.read("descriptors", st.rows("train"))
    np.testing.assert_allclose(a.model.input_mean.numpy(), train_x.mean(0), rtol=1e-4, atol=1e-4)


def test_a_store_with_other_features_is_refused(array_store: Path, tmp_path: Path) -> None:
    train(array_store, TrainConfig(model="cnn2d", epochs=1, batch_size=16, patience=0,
                                   hparams={"filters": "4", "kernels": "3x3"}), tmp_path / "run", device="cpu", **QUIET)
    other = make_array_store(tmp_path / "other.h5", n_mels=24)
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    with pytest.raises(CheckpointError, match=r"n_mels: 16 -> 24"):
        check_compatible(ckpt, Store(other))
    with pytest.raises(CheckpointError, match="n_mels"):
        evaluate(tmp_path / "run" / "best.pt", store=other, device="cpu", **QUIET)


def test_a_pickle_payload_is_refused(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "bad.pt"
    torch.save({"checkpoint_version": 1, "payload": Boom()}, bad)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(bad)
    assert not (tmp_path / "pwned").exists()


def test_cli_train_evaluate_predict(array_store: Path, cremad_corpus: Path, small_store: Path,
                                    tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--store", str(small_store), "--model", "cnn1d", "--epochs", "1",
                             "--batch-size", "16", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "checkpoint:" in r.output
    for name in ("best.pt", "last.pt", "history.csv", "curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    r = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt")])
    assert r.exit_code == 0, r.output
    assert "F1 macro" in r.output and (tmp_path / "run" / "eval-test" / "metrics.json").exists()
    assert (tmp_path / "run" / "eval-test" / "confusion.png").stat().st_size > 0
    wav = sorted(cremad_corpus.glob("*.wav"))[0]
    r = runner.invoke(main, ["predict", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--json", str(wav)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])  # the progress bar goes to stderr
    assert out["emotion"] in out["probabilities"] and sum(out["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    r = runner.invoke(main, ["train", "--store", str(tmp_path / "missing.h5"), "--epochs", "1"])
    assert r.exit_code != 0 and "no such store" in r.output
    r = runner.invoke(main, ["train", "--store", str(small_store), "--model", "cnn1d", "--filters", "8"])
    assert r.exit_code != 0 and "cnn2d only" in r.output


# -- resuming ------------------------------------------------------------------------------------


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _same_weights(a: Path, b: Path) -> None:
    sa = torch.load(a, weights_only=True)["state_dict"]
    sb = torch.load(b, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resume_continues_to_the_uninterrupted_result(array_store: Path, tmp_path: Path) -> None:
    """k epochs, then --resume to N, equals N epochs in one go: history rows and weights."""
    cfg = TrainConfig(model="cnn1d", epochs=3, batch_size=32, patience=0, seed=4, hparams={"dropout": 0.2})
    whole = train(array_store, cfg, tmp_path / "whole", device="cpu", **QUIET)
    train(array_store, replace(cfg, epochs=2), tmp_path / "split", device="cpu", **QUIET)
    logs: list[str] = []
    resumed = train(array_store, cfg, tmp_path / "split", device="cpu", resume=True, log=logs.append)
    assert any("resuming" in m and "after epoch 2" in m for m in logs)
    assert _without_seconds(resumed.history) == _without_seconds(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    for name in ("best.pt", "last.pt"):
        _same_weights(tmp_path / "whole" / name, tmp_path / "split" / name)
    # last.pt carries the resume state as tensors and plain data: weights_only still loads it
    state = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["resume"]
    assert state["epoch"] == 3 and state["optimizer"]["state"] and state["rng_torch"].dtype == torch.uint8
    assert load_checkpoint(tmp_path / "split" / "last.pt").epoch == 3


def test_resume_after_an_interrupted_run_with_every_source_of_randomness(array_store: Path, tmp_path: Path) -> None:
    """Dropout (global RNG), shuffling, SpecAugment and mixup (the generator), early stopping:
    a run stopped after epoch 3 (Ctrl-C) and resumed equals the uninterrupted one."""
    cfg = TrainConfig(model="cnn2d", epochs=8, batch_size=16, patience=3, seed=9, spec_augment=True, mixup=0.3,
                      hparams={"filters": "4,8", "kernels": "3x3,3x3", "dropout": 0.3})
    whole = train(array_store, cfg, tmp_path / "whole", device="cpu", **QUIET)

    def ctrl_c_after_epoch_3(message: str) -> None:
        if message.lstrip().startswith("epoch   3/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(array_store, cfg, tmp_path / "cut", device="cpu", log=ctrl_c_after_epoch_3)
    resumed = train(array_store, cfg, tmp_path / "cut", device="cpu", resume=True, **QUIET)
    assert _without_seconds(resumed.history) == _without_seconds(whole.history)
    assert resumed.epochs_run == whole.epochs_run
    for name in ("best.pt", "last.pt"):
        _same_weights(tmp_path / "whole" / name, tmp_path / "cut" / name)
    hist = [pd.read_csv(tmp_path / d / "history.csv").drop(columns="seconds") for d in ("whole", "cut")]
    pd.testing.assert_frame_equal(*hist)
    again = train(array_store, cfg, tmp_path / "cut", device="cpu", resume=True, **QUIET)  # finished: no-op
    assert _without_seconds(again.history) == _without_seconds(whole.history)


def test_resume_refuses_other_arguments_or_another_store(array_store: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(model="cnn2d", epochs=1, batch_size=16, patience=0, hparams={"filters": "4", "kernels": "3x3"})
    train(array_store, cfg, tmp_path / "run", device="cpu", **QUIET)
    with pytest.raises(CheckpointError, match=r"lr: 0.001 -> 0.01"):
        train(array_store, replace(cfg, lr=0.01, epochs=2), tmp_path / "run", device="cpu", resume=True, **QUIET)
    other = make_array_store(tmp_path / "other.h5", seed=5)
    with pytest.raises(CheckpointError, match="another store"):
        train(other, replace(cfg, epochs=2), tmp_path / "run", device="cpu", resume=True, **QUIET)
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--store", str(array_store), "--resume", "--epochs", "2"])
    assert r.exit_code == 2 and "--resume needs the --out folder" in r.output
    r = runner.invoke(main, ["train", "--store", str(array_store), "--model", "cnn2d", "--filters", "4",
                             "--kernels", "3x3", "--epochs", "2", "--batch-size", "16", "--patience", "0",
                             "--out", str(tmp_path / "run"), "--resume", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "run" / "last.pt").epoch == 2


def test_cli_choices_come_from_the_registries() -> None:
    """--model, --optimizer, --preset, --device, --split and explore's --dataset list what the
    library accepts, read lazily: importing the CLI does not import torch."""
    import subprocess
    import sys

    import click

    from ser.corpus.scan import DATASETS
    from ser.corpus.splits import SPLITS
    from ser.experiments.presets import PRESETS
    from ser.training.device import DEVICES
    from ser.training.loop import OPTIMIZERS
    from ser.training.models import MODELS, POOLINGS

    def choices(command: str, option: str) -> tuple:
        param = next(p for p in main.commands[command].params if p.name == option)
        assert isinstance(param.type, click.Choice)
        return tuple(param.type.choices)

    for command in ("train", "crossval"):
        assert choices(command, "model") == tuple(MODELS)
        assert choices(command, "optimizer") == OPTIMIZERS
        assert choices(command, "preset") == tuple(PRESETS)
        assert choices(command, "device") == DEVICES
        assert choices(command, "pooling") == POOLINGS
    assert choices("evaluate", "split") == SPLITS and choices("evaluate", "device") == DEVICES
    assert choices("explore", "dataset") == DATASETS
    probe = "import sys, ser.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    r = CliRunner().invoke(main, ["train", "--model", "cnn9d"])
    assert r.exit_code == 2 and "cnn9d" in r.output


def test_the_cosine_schedule_falls_from_lr_towards_zero() -> None:
    from ser.training.loop import epoch_lr

    cfg = TrainConfig(lr=0.01, epochs=10, schedule="cosine")
    lrs = [epoch_lr(cfg, e) for e in range(1, 11)]
    assert lrs[0] == 0.01 and all(a > b for a, b in zip(lrs, lrs[1:])) and 0 < lrs[-1] < 0.0003
    assert epoch_lr(replace(cfg, schedule="constant"), 7) == 0.01
    with pytest.raises(SerError, match="schedule must be one of constant, cosine"):
        TrainConfig(schedule="step")


@pytest.fixture
def seen(monkeypatch) -> list[int]:
    """The size of every batch of the shuffled (training) passes, as the loop draws them."""
    import ser.training.data as data_mod

    sizes: list[int] = []
    real = data_mod.SplitData.batches

    def counting(self, batch_size, **kw):
        for x, y in real(self, batch_size, **kw):
            if kw.get("shuffle"):
                sizes.append(x.shape[0])
            yield x, y

    monkeypatch.setattr(data_mod.SplitData, "batches", counting)
    return sizes


def test_the_cnn_preset_trains_on_one_variant_a_clip_with_smoothed_targets(tmp_path: Path, seen: list[int]) -> None:
    """The preset's settings all in one run: every epoch sees each training clip once, not its copies."""
    from ser.experiments.presets import get_preset

    array_store = make_array_store(tmp_path / "copies.h5", per_class=30, seed=0, copies=3)
    preset = get_preset("cnn").train
    hp = {**preset["hparams"], "filters": [8, 16], "kernels": [[3, 3]] * 2, "time_pool": 2}
    cfg = TrainConfig(**{**preset, "hparams": hp, "epochs": 6, "batch_size": 16})
    assert cfg.variants == "one" and cfg.label_smoothing > 0 and cfg.schedule == "cosine"
    res = train(array_store, cfg, tmp_path / "run", device="cpu", **QUIET)
    train_meta = Store(array_store).meta().query("split == 'train'")
    n_train_clips = train_meta["clip_id"].nunique()
    assert len(train_meta) == 4 * n_train_clips
    assert sum(seen) == 6 * n_train_clips
    ev = evaluate(tmp_path / "run" / "best.pt", split="test", device="cpu", **QUIET)
    assert ev.metrics["uar"] > 0.6, ev.metrics  # chance is 1/3
    assert res.epochs_run == 6


@pytest.mark.parametrize("model", ["logreg", "cnn1d"])
def test_variants_original_trains_on_the_original_rows_only(tmp_path: Path, model: str, seen: list[int]) -> None:
    store = make_array_store(tmp_path / "copies.h5", per_class=12, seed=0, copies=2)
    logs: list[str] = []
    train(store, TrainConfig(model=model, variants="original", epochs=1, batch_size=8, patience=0),
          tmp_path / "run", device="cpu", log=logs.append)
    meta = Store(store).meta().query("split == 'train'")
    n_orig = int((meta["augment"] == "none").sum())
    assert len(meta) == 3 * n_orig
    if model == "logreg":  # one fit, on the originals, standardised by the originals' own statistics
        assert any(f"on {n_orig} train rows" in m for m in logs), logs
        orig = meta.index[meta["augment"] == "none"].to_numpy()
        x = Store(store).read("descriptors", orig)
        scaler = load_checkpoint(tmp_path / "run" / "best.pt").model
        np.testing.assert_allclose(scaler.input_mean.numpy(), x.mean(0), rtol=1e-4, atol=1e-4)
    else:  # each epoch's shuffled pass
        assert sum(seen) == n_orig
