"""Figures drawn from what the lower layers wrote: curves from history.csv, confusions from metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ser.report.runs as runs
from ser.errors import SerError
from ser.evaluation.metrics import compute_metrics
from ser.training.loop import write_history


def _history(with_val: bool) -> list[dict]:
    nan = float("nan")
    return [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.3 * e, "val_loss": 1.1 / e if with_val else nan,
             "val_accuracy": 0.25 * e if with_val else nan, "val_macro_f1": 0.2 * e if with_val else nan,
             "seconds": 0.1} for e in (1, 2, 3)]


@pytest.mark.parametrize("with_val", [True, False])
def test_curves_are_drawn_from_history_csv_as_written(tmp_path: Path, with_val: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """history.csv read back gives the rows training had, NaN where there was no validation."""
    history = _history(with_val)
    write_history(tmp_path, history)
    seen = {}
    real = runs.plot_history
    monkeypatch.setattr(runs, "plot_history", lambda h, path: seen.update(h=h) or real(h, path))
    assert runs.draw_curves(tmp_path) == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").stat().st_size > 0
    got = seen["h"]
    assert len(got) == 3
    for want_row, got_row in zip(history, got):
        for key, want in want_row.items():
            assert (np.isnan(got_row[key]) and np.isnan(want)) or got_row[key] == want, key


def test_a_run_without_history_is_named(tmp_path: Path) -> None:
    with pytest.raises(SerError, match="history.csv"):
        runs.draw_curves(tmp_path)
    with pytest.raises(SerError, match="metrics.json"):
        runs.draw_confusion(tmp_path)


def test_confusion_titles_for_evaluation_and_crossval(tmp_path: Path) -> None:
    m = compute_metrics(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), ["ANG", "HAP", "SAD"])
    m.update(model="cnn1d", store="/data/feats.h5", split="test")
    assert runs.confusion_title(m) == "cnn1d on feats.h5 [test]: UAR 0.833, accuracy 0.750, macro-F1 0.778"
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    assert runs.draw_confusion(tmp_path).stat().st_size > 0  # read from metrics.json
    cv = dict(m, split="3-fold leave-speakers-out", fold_accuracy_mean=0.5, fold_accuracy_std=0.125,
              fold_uar_mean=0.625, fold_uar_std=0.25)
    assert runs.confusion_title(cv) == ("cnn1d, 3-fold leave-speakers-out: UAR 0.625 ± 0.250, "
                                        "accuracy 0.500 ± 0.125")
    (tmp_path / "cv").mkdir()
    assert runs.draw_confusion(tmp_path / "cv", cv) == tmp_path / "cv" / "confusion.png"
    assert (tmp_path / "cv" / "confusion.png").stat().st_size > 0
