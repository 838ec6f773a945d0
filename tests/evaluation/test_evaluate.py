"""Evaluation of checkpoints on stores (metrics, predictions) and prediction on new audio."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ser.cli import main
from ser.errors import SerError
from ser.evaluation.evaluator import evaluate
from ser.evaluation.metrics import compute_metrics, most_confused
from ser.featurize.job import featurize
from ser.store import Store
from ser.training.checkpoint import load_checkpoint
from ser.training.loop import TrainConfig, train

QUIET = dict(log=lambda m: None)


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


def test_uar_is_the_mean_recall_of_the_classes_present() -> None:
    from sklearn.metrics import balanced_accuracy_score, recall_score

    from ser.evaluation.metrics import uar

    rng = np.random.default_rng(5)
    y_true = np.repeat(np.arange(4), [120, 40, 25, 15])  # unbalanced: accuracy and UAR differ
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, 200))
    m = compute_metrics(y_true, y_pred, ["ANG", "HAP", "NEU", "SAD"])
    assert m["uar"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["uar"] == pytest.approx(np.mean([(y_pred[y_true == c] == c).mean() for c in range(4)]))
    assert m["uar"] != pytest.approx(m["accuracy"])
    always_ang = np.zeros(200, dtype=int)  # the majority class every time: accuracy 0.6, UAR chance
    assert uar(y_true, always_ang) == pytest.approx(0.25)
    # a class the model predicts but the data lacks does not count: the mean is over true classes
    assert uar(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])) == pytest.approx(0.75)


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
    # confusion.png is drawn above evaluation (ser.report.runs): tests/report/test_runs.py and the CLI test


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


def test_predict_with_a_fusion_feeds_each_member_its_own_family(cremad_corpus: Path, small_store: Path,
                                                                 tmp_path: Path) -> None:
    from ser.evaluation.predict import predict_files
    from ser.training.fusion import save_fusion

    train(small_store, TrainConfig(model="logreg"), tmp_path / "lr", device="cpu", **QUIET)
    train(small_store, TrainConfig(model="cnn2d", epochs=1, batch_size=16, patience=0,
                                   hparams={"filters": "4,8", "kernels": "3x3,3x3"}), tmp_path / "cnn",
          device="cpu", **QUIET)
    meta = Store(small_store).meta()
    files = [cremad_corpus / p for p in meta.loc[(meta["augment"] == "none") & (meta["split"] == "test"), "path"][:3]]
    members = [tmp_path / "lr" / "best.pt", tmp_path / "cnn" / "best.pt"]
    save_fusion(tmp_path / "fused.pt", members, [0.6, 0.4])
    fused = predict_files(tmp_path / "fused.pt", files + [tmp_path / "missing.wav"])
    alone = [predict_files(m, files) for m in members]
    assert "error" in fused[-1] and len(fused) == 4
    for i, r in enumerate(fused[:3]):
        for lab, p in r["probabilities"].items():
            assert p == pytest.approx(0.6 * alone[0][i]["probabilities"][lab] + 0.4 * alone[1][i]["probabilities"][lab],
                                      rel=1e-5)
        assert r["emotion"] == max(r["probabilities"], key=r["probabilities"].get)


def test_label_map_folds_and_drops_another_corpus_labels_and_scores_the_classes_present(tmp_path: Path) -> None:
    """A model of ANG/HAP/SAD on a store of ANG/CAL/SUR: CAL folded into HAP, SUR dropped; UAR and
    macro-F1 over ANG and HAP (the model's SAD is absent from the data), and metrics.json says so."""
    from sklearn.metrics import f1_score, recall_score

    from array_store import make_array_store
    from ser.evaluation.evaluator import parse_label_map

    a = make_array_store(tmp_path / "a.h5", per_class=20, seed=2)
    b = make_array_store(tmp_path / "b.h5", per_class=20, seed=2, emotions=("ANG", "CAL", "SUR"))
    train(a, TrainConfig(model="logreg"), tmp_path / "run", device="cpu", **QUIET)
    assert parse_label_map("cal=neu, SUR=drop") == {"CAL": "NEU", "SUR": None}
    with pytest.raises(SerError, match="not FROM=TO"):
        parse_label_map("CAL")
    logs: list[str] = []
    ev = evaluate(tmp_path / "run" / "best.pt", store=b, split="test", label_map={"CAL": "HAP", "SUR": None},
                  out_dir=tmp_path / "ev", device="cpu", log=logs.append)
    meta = Store(b).meta().query("split == 'test'")
    m = ev.metrics
    assert m["labels_scored"] == ["ANG", "HAP"] and m["excluded_labels"] == {"SUR": int((meta["emotion"] == "SUR").sum())}
    assert m["mapped"] == {"CAL=HAP": int((meta["emotion"] == "CAL").sum())}
    assert set(ev.predictions["true"]) == {"ANG", "HAP"} and m["n"] == int(meta["emotion"].isin(["ANG", "CAL"]).sum())
    t, p = ev.predictions["true"], ev.predictions["predicted"]
    assert m["uar"] == pytest.approx(recall_score(t, p, labels=["ANG", "HAP"], average="macro", zero_division=0))
    assert m["f1_macro"] == pytest.approx(f1_score(t, p, labels=["ANG", "HAP"], average="macro", zero_division=0))
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["label_map"] == {"CAL": "HAP", "SUR": None} and saved["labels_scored"] == ["ANG", "HAP"]
    assert any("SUR" in line and "left out" in line for line in logs)
    from ser.evaluation.metrics import format_metrics

    text = format_metrics(m)
    assert "over the 2 classes present (ANG, HAP); the model also knows SAD" in text and "CAL=HAP" in text
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--store", str(b),
                                  "--label-map", "CAL=HAP,SUR=drop", "--out", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["uar"] == pytest.approx(m["uar"])
