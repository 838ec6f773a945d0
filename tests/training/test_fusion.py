"""Late fusion: a fused checkpoint's round trip, and fused cross-validation over the same folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from array_store import make_array_store
from ser.cli import main
from ser.errors import CheckpointError, SerError
from ser.evaluation.evaluator import evaluate
from ser.experiments.crossval import crossval
from ser.experiments.fusion import fuse_crossvals
from ser.training.checkpoint import load_checkpoint
from ser.training.fusion import Fusion, load_model, save_fusion
from ser.training.loop import TrainConfig, train

QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A store, then a descriptor model (svm, per-speaker) and a mel model (cnn2d) trained on it."""
    root = tmp_path_factory.mktemp("fusion")
    store = make_array_store(root / "a.h5", per_class=30, seed=4, separation=1.0)
    train(store, TrainConfig(model="svm", speaker_norm=True), root / "svm", device="cpu", **QUIET)
    train(store, TrainConfig(model="cnn2d", epochs=3, batch_size=16, patience=0, seed=1,
                             hparams={"filters": "4,8", "kernels": "3x3,3x3", "pooling": "stats"}),
          root / "cnn", device="cpu", **QUIET)
    return store, root / "svm" / "best.pt", root / "cnn" / "best.pt"


def test_a_fused_checkpoint_round_trips_and_averages_its_members(members, tmp_path: Path) -> None:
    store, svm, cnn = members
    fused = save_fusion(tmp_path / "fused.pt", [svm, cnn], [3, 1])
    assert fused.weights == [0.75, 0.25]
    loaded = load_model(tmp_path / "fused.pt")
    assert isinstance(loaded, Fusion) and [m.model_name for m in loaded.members] == ["svm", "cnn2d"]
    assert loaded.weights == [0.75, 0.25] and loaded.members[0].train_config["speaker_norm"] is True
    ev = evaluate(tmp_path / "fused.pt", split="test", device="cpu", **QUIET)
    parts = [evaluate(c, split="test", device="cpu", **QUIET).predictions for c in (svm, cnn)]
    cols = [c for c in ev.predictions.columns if c.startswith("p_")]
    expected = 0.75 * parts[0][cols].to_numpy() + 0.25 * parts[1][cols].to_numpy()
    np.testing.assert_allclose(ev.predictions[cols].to_numpy(), expected, rtol=1e-6)
    assert ev.metrics["model"] == "fusion(svm, cnn2d)"
    assert ev.metrics["accuracy"] == float((ev.predictions["true"] == ev.predictions["predicted"]).mean())


def test_a_damaged_or_mismatched_fusion_is_refused(members, tmp_path: Path) -> None:
    store, svm, cnn = members
    save_fusion(tmp_path / "fused.pt", [svm, cnn])
    with pytest.raises(CheckpointError, match="is a fusion of 2 checkpoints"):
        load_checkpoint(tmp_path / "fused.pt")
    raw = torch.load(tmp_path / "fused.pt", weights_only=True)
    raw["weights"] = [0.9, 0.1]  # edited without its digest
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        load_model(tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="a fusion already"):
        save_fusion(tmp_path / "twice.pt", [tmp_path / "fused.pt", svm])
    with pytest.raises(CheckpointError, match="one weight per checkpoint"):
        save_fusion(tmp_path / "w.pt", [svm, cnn], [1.0])
    other = make_array_store(tmp_path / "b.h5", per_class=10, n_mels=8)
    train(other, TrainConfig(model="logreg"), tmp_path / "lr", device="cpu", **QUIET)
    with pytest.raises(CheckpointError, match="different feature configs"):
        save_fusion(tmp_path / "x.pt", [svm, tmp_path / "lr" / "best.pt"])


def test_cli_fuse_writes_a_checkpoint_that_evaluate_takes(members, tmp_path: Path) -> None:
    store, svm, cnn = members
    r = CliRunner().invoke(main, ["fuse", str(svm), str(cnn), "--out", str(tmp_path / "f.pt")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "f.pt"), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["model"] == "fusion(svm, cnn2d)"
    r = CliRunner().invoke(main, ["fuse", str(svm), str(tmp_path), "--out", str(tmp_path / "g.pt")])
    assert r.exit_code != 0 and "not both" in r.output


def test_fused_crossval_averages_held_out_probabilities_over_the_same_folds(tmp_path: Path) -> None:
    store = make_array_store(tmp_path / "a.h5", per_class=20, seed=3, separation=0.6)
    a = crossval(store, TrainConfig(model="logreg"), tmp_path / "a", folds=3, **QUIET)
    b = crossval(store, TrainConfig(model="svm"), tmp_path / "b", folds=3, **QUIET)
    m = fuse_crossvals([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    pa, pb = (r.predictions.set_index("clip_id").sort_index() for r in (a, b))
    cols = [f"p_{lab}" for lab in m["labels"]]
    probs = (pa[cols].to_numpy() + pb[cols].to_numpy()) / 2
    fused = pd.read_csv(tmp_path / "ab" / "predictions.csv").set_index("clip_id").sort_index()
    np.testing.assert_allclose(fused[cols].to_numpy(), probs, rtol=1e-6)
    truth = pa["emotion"].to_numpy()
    predicted = np.array(m["labels"])[probs.argmax(1)]
    assert m["accuracy"] == pytest.approx(float((predicted == truth).mean()))
    assert m["n"] == len(pa) and len(m["folds"]) == 3
    # all the weight on one run gives that run's own pooled figures
    only_a = fuse_crossvals([tmp_path / "a", tmp_path / "b"], tmp_path / "a_only", weights=[1, 0])
    assert only_a["uar"] == pytest.approx(a.metrics["uar"]) and only_a["accuracy"] == pytest.approx(a.metrics["accuracy"])
    crossval(store, TrainConfig(model="logreg", seed=7), tmp_path / "c", folds=3, **QUIET)
    with pytest.raises(SerError, match="different clips or folds"):
        fuse_crossvals([tmp_path / "a", tmp_path / "c"], tmp_path / "ac")
    r = CliRunner().invoke(main, ["fuse", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    assert "pooled over all held-out clips" in r.output and (tmp_path / "cli" / "metrics.json").exists()


def test_a_fused_preset_trains_and_cross_validates_its_members(tmp_path: Path, monkeypatch) -> None:
    from ser.experiments import presets
    from ser.experiments.fusion import crossval_fused, train_fused

    tiny = {"model": "cnn2d", "epochs": 2, "batch_size": 16, "patience": 0, "variants": "one",
            "hparams": {"filters": [4, 8], "kernels": [[3, 3]] * 2, "pooling": "stats"}}
    monkeypatch.setitem(presets.PRESETS, "t-lr", presets.Preset("logreg", {"model": "logreg", "speaker_norm": True}))
    monkeypatch.setitem(presets.PRESETS, "t-cnn", presets.Preset("cnn", tiny))
    members = (presets.Member("t-lr", hparams={"C": 0.5}),  # its own preset's C updated
               presets.Member("t-cnn"), presets.Member("t-cnn", 1))  # an ensemble of two draws
    monkeypatch.setitem(presets.PRESETS, "t-fused", presets.Preset("fused", {}, members=members,
                                                                   weights=(2.0, 1.0, 1.0)))
    store = make_array_store(tmp_path / "a.h5", per_class=20, seed=3, copies=1)
    fused = train_fused(store, "t-fused", tmp_path / "run", device="cpu", seed=5, **QUIET)
    assert [m.model_name for m in fused.members] == ["logreg", "cnn2d", "cnn2d"]
    assert fused.weights == pytest.approx([0.5, 0.25, 0.25])
    assert [m.train_config["seed"] for m in fused.members] == [5, 5, 6]
    assert fused.members[0].train_config["hparams"]["C"] == 0.5
    first, second = (next(m.model.parameters()) for m in fused.members[1:])
    assert not torch.equal(first, second)  # the second draw is another model, not a copy
    assert isinstance(load_model(tmp_path / "run" / "best.pt"), Fusion)
    assert evaluate(tmp_path / "run" / "best.pt", split="test", device="cpu", **QUIET).metrics["n"] > 0
    m = crossval_fused(store, "t-fused", tmp_path / "cv", folds=2, device="cpu", **QUIET)
    runs = [json.loads((tmp_path / "cv" / name / "metrics.json").read_text()) for name in ("t-lr", "t-cnn", "t-cnn-2")]
    assert [r["train_config"]["seed"] for r in runs] == [42, 42, 43]
    assert runs[0]["train_config"]["hparams"]["C"] == 0.5
    assert [[f["speakers"] for f in r["folds"]] for r in runs[1:]] == [[f["speakers"] for f in runs[0]["folds"]]] * 2
    assert m["n"] == runs[0]["n"] and m["weights"] == pytest.approx([0.5, 0.25, 0.25])
    with pytest.raises(SerError, match="no single config"):
        presets.preset_config("t-fused")


def test_cli_fused_presets_refuse_options_their_members_set(tmp_path: Path) -> None:
    store = make_array_store(tmp_path / "a.h5", per_class=5)
    for command in ("train", "crossval"):
        r = CliRunner().invoke(main, [command, "--store", str(store), "--preset", "compare-tdnn", "--lr", "0.1",
                                      "--out", str(tmp_path / "x")])
        assert r.exit_code != 0 and "leave out --lr" in r.output, r.output
    r = CliRunner().invoke(main, ["train", "--store", str(store), "--preset", "compare-tdnn", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--extras prosody,dynamics,compare" in r.output, r.output
