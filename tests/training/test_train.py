"""The training loop, sweeps, checkpoints and evaluation, on stores built in fixtures."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from array_store import LABELS, make_array_store
from ser.training.checkpoint import check_compatible, load_checkpoint
from ser.cli import main
from ser.errors import CheckpointError, SerError
from ser.evaluation.evaluator import compute_metrics, evaluate, most_confused
from ser.featurize.job import featurize
from ser.store.writer import Store
from ser.training.loop import TrainConfig, grid_points, apply_overrides, parse_sweep, train

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
    for name in ("best.pt", "last.pt", "history.csv", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    hist = pd.read_csv(tmp_path / "history.csv")
    assert list(hist["epoch"]) == list(range(1, 9))


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


def test_sweep_table_has_one_row_per_grid_point(array_store: Path, tmp_path: Path) -> None:
    grid = parse_sweep(["optimizer=adam,sgd,rmsprop", "lr=0.01,0.001"])
    assert grid == {"optimizer": ["adam", "sgd", "rmsprop"], "lr": ["0.01", "0.001"]}
    results = train(array_store, TrainConfig(model="cnn1d", epochs=1, batch_size=32, patience=0), tmp_path,
                    device="cpu", sweep_grid=grid, **QUIET)
    table = pd.read_csv(tmp_path / "results.csv", dtype=str)
    assert len(table) == 6 == len(results)
    assert set(zip(table["optimizer"], table["lr"])) == {(o, l) for o in ("adam", "sgd", "rmsprop") for l in ("0.01", "0.001")}
    assert (tmp_path / "results.md").read_text().count("\n") == 2 + 6
    best = load_checkpoint(tmp_path / "best.pt")
    winner = table.iloc[0]
    assert best.train_config["optimizer"] == winner["optimizer"]
    assert best.train_config["lr"] == float(winner["lr"])
    # every run is scored on the test split too, and the figure is evaluate's own
    for _, row in table.iterrows():
        ev = evaluate(tmp_path / row["run"] / "best.pt", split="test", **QUIET)
        assert float(row["test_accuracy"]) == round(ev.metrics["accuracy"], 4)
        assert float(row["test_macro_f1"]) == round(ev.metrics["f1_macro"], 4)


def test_sweep_values_with_commas_use_a_bar() -> None:
    grid = parse_sweep(["filters=128,128,64|512,256,256", "kernels=3x3,3x3,3x3|1x3,3x5,3x5"])
    assert grid["filters"] == ["128,128,64", "512,256,256"]
    cfg = apply_overrides(TrainConfig(model="cnn2d"), {"filters": "8,8", "kernels": "1x3,3x5", "lr": "0.01"})
    assert cfg.hparams["filters"] == [8, 8] and cfg.hparams["kernels"] == [[1, 3], [3, 5]] and cfg.lr == 0.01
    with pytest.raises(SerError, match="KEY=V1,V2"):
        parse_sweep(["optimizer"])


def test_joined_sweep_keys_change_together(array_store: Path, tmp_path: Path) -> None:
    """The study's cnn2d table is a list of (filters, kernels) rows, not their product."""
    grid = parse_sweep(["filters+kernels=4,4;1x3,3x5|8;3x3", "lr=0.01,0.001"])
    assert grid_points(grid) == [
        {"filters": "4,4", "kernels": "1x3,3x5", "lr": "0.01"}, {"filters": "4,4", "kernels": "1x3,3x5", "lr": "0.001"},
        {"filters": "8", "kernels": "3x3", "lr": "0.01"}, {"filters": "8", "kernels": "3x3", "lr": "0.001"}]
    with pytest.raises(SerError, match="2 parts separated by ';'"):
        parse_sweep(["filters+kernels=4,4;1x3,3x5|8"])
    train(array_store, TrainConfig(model="cnn2d", epochs=1, batch_size=32, patience=0), tmp_path, device="cpu",
          sweep_grid=parse_sweep(["filters+kernels=4,4;1x3,3x5|8;3x3"]), **QUIET)
    table = pd.read_csv(tmp_path / "results.csv", dtype=str)
    assert sorted(zip(table["filters"], table["kernels"])) == [("4,4", "1x3,3x5"), ("8", "3x3")]
    for _, row in table.iterrows():
        hp = load_checkpoint(tmp_path / row["run"] / "best.pt").hparams
        assert [list(k) for k in hp["kernels"]] == [[int(n) for n in k.split("x")] for k in row["kernels"].split(",")]


def test_metrics_agree_with_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    labels = ["ANG", "HAP", "NEU", "SAD"]
    m = compute_metrics(y_true, y_pred, labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for avg in ("micro", "macro", "weighted"):
        assert m[f"f1_{avg}"] == pytest.approx(f1_score(y_true, y_pred, average=avg))
    assert m["confusion"] == confusion_matrix(y_true, y_pred).tolist()
    cm = np.array([[5, 3, 0], [1, 4, 0], [0, 7, 2]])
    pairs = most_confused(cm, ["A", "B", "C"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("C", "B", 7), ("A", "B", 3), ("B", "A", 1)]
    assert pairs[0]["rate"] == pytest.approx(7 / 9)


def test_train_and_evaluate_run_with_the_audio_folder_gone(cremad_corpus: Path, small_store_config,
                                                           tmp_path: Path) -> None:
    audio = tmp_path / "AudioWAV"
    shutil.copytree(cremad_corpus, audio)
    cfg = replace(small_store_config, data=audio, out=tmp_path / "feats.h5", emotions=("ANG", "SAD", "NEU"),
                  augment=())
    featurize(cfg, progress=False, **QUIET)
    shutil.rmtree(audio)
    res = train(cfg.out, TrainConfig(model="cnn1d", epochs=2, batch_size=8, patience=0), tmp_path / "run",
                device="cpu", **QUIET)
    assert res.epochs_run == 2
    ev = evaluate(tmp_path / "run" / "best.pt", device="cpu", out_dir=tmp_path / "ev", **QUIET)
    assert ev.metrics["n"] > 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) >= {"accuracy", "f1_micro", "f1_macro", "f1_weighted", "per_class", "confusion", "most_confused"}
    preds = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert len(preds) == ev.metrics["n"] and {"clip_id", "true", "predicted", "p_ANG"} <= set(preds.columns)
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 0


def test_evaluate_on_another_store_with_all_clips_in_test(cremad_corpus: Path, small_store: Path,
                                                          small_store_config, tmp_path: Path) -> None:
    """A corpus featurized with --test-size 1.0 (every clip in test) evaluates a checkpoint
    trained on another store with the same feature config; unknown emotions are left out."""
    train(small_store, TrainConfig(model="cnn1d", epochs=1, batch_size=16, patience=0), tmp_path / "run",
          device="cpu", **QUIET)
    from ser.corpus.splits import SplitConfig

    cfg = replace(small_store_config, out=tmp_path / "all_test.h5", augment=(),
                  split=SplitConfig(test_size=1.0), emotions=("ANG", "HAP"))
    featurize(cfg, progress=False, **QUIET)
    assert set(Store(cfg.out).meta()["split"]) == {"test"}
    ev = evaluate(tmp_path / "run" / "best.pt", store=cfg.out, device="cpu", **QUIET)
    assert ev.metrics["n"] == len(Store(cfg.out).meta())
    assert set(ev.predictions["true"]) == {"ANG", "HAP"}


def test_cli_train_evaluate_predict(array_store: Path, cremad_corpus: Path, small_store: Path,
                                    tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--store", str(small_store), "--model", "cnn1d", "--epochs", "1",
                             "--batch-size", "16", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "checkpoint:" in r.output
    r = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt")])
    assert r.exit_code == 0, r.output
    assert "F1 macro" in r.output and (tmp_path / "run" / "eval-test" / "metrics.json").exists()
    wav = sorted(cremad_corpus.glob("*.wav"))[0]
    r = runner.invoke(main, ["predict", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--json", str(wav)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["emotion"] in out["probabilities"] and sum(out["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    r = runner.invoke(main, ["train", "--store", str(tmp_path / "missing.h5"), "--epochs", "1"])
    assert r.exit_code != 0 and "no such store" in r.output
    r = runner.invoke(main, ["train", "--store", str(small_store), "--model", "cnn1d", "--filters", "8"])
    assert r.exit_code != 0 and "cnn2d only" in r.output


def test_predict_uses_the_same_features_as_featurize(cremad_corpus: Path, small_store: Path, tmp_path: Path) -> None:
    from ser.evaluation.predict import predict_files

    train(small_store, TrainConfig(model="cnn1d", epochs=1, batch_size=16, patience=0), tmp_path, device="cpu", **QUIET)
    st = Store(small_store)
    meta = st.meta()
    row = meta[(meta["augment"] == "none") & (meta["split"] == "test")].iloc[0]
    ckpt = load_checkpoint(tmp_path / "best.pt")
    with torch.no_grad():
        p_store = torch.softmax(ckpt.model(torch.from_numpy(st.read("descriptors", [row.name]))), 1)[0].numpy()
    res = predict_files(tmp_path / "best.pt", [cremad_corpus / row["path"]])[0]
    np.testing.assert_allclose([res["probabilities"][l] for l in ckpt.labels], p_store, rtol=1e-4, atol=1e-5)


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
