"""Leave-speakers-out cross-validation: folds are disjoint and every clip is tested once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from array_store import make_array_store
from ser.cli import main
from ser.experiments.crossval import crossval, speaker_folds
from ser.errors import SerError
from ser.store import Store
from ser.training.loop import TrainConfig


def test_speaker_folds_are_disjoint_and_cover_every_speaker() -> None:
    speakers = [f"s{i}" for i in range(10)] * 3
    for n in (2, 3, 10, None):
        folds = speaker_folds(speakers, n, seed=42)
        flat = [s for f in folds for s in f]
        assert sorted(flat) == sorted(set(speakers)) and len(flat) == len(set(flat))
        assert len(folds) == (10 if n is None else n)
    assert speaker_folds(speakers, 3, seed=1) == speaker_folds(speakers, 3, seed=1)
    with pytest.raises(SerError, match="between 2"):
        speaker_folds(speakers, 11, seed=0)
    with pytest.raises(SerError, match="two speakers"):
        speaker_folds(["a", "a"], None, seed=0)


def test_every_clip_is_tested_once_by_a_model_that_never_saw_its_speaker(tmp_path: Path) -> None:
    store = make_array_store(tmp_path / "a.h5", per_class=20, seed=3)
    res = crossval(store, TrainConfig(model="logreg"), tmp_path / "cv", folds=3, log=lambda m: None)
    meta = Store(store).meta()
    preds = res.predictions
    assert sorted(preds["clip_id"]) == sorted(meta.loc[meta["augment"] == "none", "clip_id"])
    assert preds["clip_id"].is_unique
    for _, fold in res.folds.iterrows():
        held = set(fold["speakers"].split())
        tested = set(preds.loc[preds["fold"] == fold["fold"], "speaker"])
        assert tested == held
    assert res.metrics["accuracy"] > 0.8  # separable classes: the folds learn something
    assert res.metrics["n"] == len(preds)
    assert {"fold_accuracy_mean", "fold_f1_macro_std", "confusion"} <= set(res.metrics)
    assert res.confusion.sum() == len(preds)  # confusion.png is drawn by the CLI: test_cli_crossval


def test_augmented_copies_of_held_out_speakers_are_never_trained_on(tmp_path: Path, small_store: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import ser.experiments.crossval as cv

    seen: list[np.ndarray] = []
    real = cv.load_rows

    def spy(store, rows, family, device, **kw):
        seen.append(np.asarray(rows))
        return real(store, rows, family, device, **kw)

    monkeypatch.setattr(cv, "load_rows", spy)
    res = crossval(small_store, TrainConfig(model="logreg"), tmp_path / "cv", folds=2, log=lambda m: None)
    meta = Store(small_store).meta()
    for k, (_, fold) in enumerate(res.folds.iterrows()):
        train_rows, test_rows = seen[2 * k], seen[2 * k + 1]
        held = set(fold["speakers"].split())
        assert not set(meta.loc[train_rows, "speaker"]) & held
        assert set(meta.loc[test_rows, "augment"]) == {"none"}
        assert len(set(meta.loc[train_rows, "augment"])) > 1  # training rows include augmented copies


def test_cli_crossval(tmp_path: Path) -> None:
    store = make_array_store(tmp_path / "a.h5", per_class=10, seed=4)
    r = CliRunner().invoke(main, ["crossval", "--store", str(store), "--model", "svm", "--folds", "2",
                                  "--out", str(tmp_path / "cv")])
    assert r.exit_code == 0, r.output
    assert "mean ± std over folds" in r.output
    assert len(pd.read_csv(tmp_path / "cv" / "folds.csv")) == 2
    assert (tmp_path / "cv" / "confusion.png").stat().st_size > 0
    for k in (1, 2):
        assert (tmp_path / "cv" / f"fold{k}" / "curves.png").stat().st_size > 0


def test_cli_fold_seed_keeps_the_folds_of_another_model_seed(tmp_path: Path) -> None:
    store = make_array_store(tmp_path / "a.h5", per_class=10, seed=4)

    def speakers(*args: str) -> list[str]:
        out = tmp_path / "-".join(args)
        r = CliRunner().invoke(main, ["crossval", "--store", str(store), "--model", "logreg", "--folds", "3",
                                      "--out", str(out), *args])
        assert r.exit_code == 0, r.output
        return list(pd.read_csv(out / "folds.csv")["speakers"])

    base = speakers("--seed", "42")
    assert speakers("--seed", "7", "--fold-seed", "42") == base
    assert speakers("--seed", "42", "--fold-seed", "7") != base  # the option does draw other folds
