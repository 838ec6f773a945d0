"""Figures of what training, evaluation and cross-validation wrote, drawn from their files.

The layers below write numbers only (``history.csv``, ``metrics.json``); these functions read
them back and draw ``curves.png`` and ``confusion.png`` beside them, so a figure can also be
redrawn later from an old run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import SerError
from ser.report.plots import plot_confusion, plot_history


def draw_curves(run_dir: str | Path) -> Path:
    """``run_dir/curves.png``: loss and accuracy per epoch, from ``run_dir/history.csv``."""
    run_dir = Path(run_dir)
    path = run_dir / "history.csv"
    if not path.is_file():
        raise SerError(f"{path}: no training history to draw (was the run trained to the end?)")
    history = pd.read_csv(path).to_dict("records")  # "nan" (no validation rows) reads back as NaN
    return plot_history(history, run_dir / "curves.png")


def confusion_title(metrics: dict[str, Any]) -> str:
    """The figure's title: the model, where it was scored and its headline scores."""
    if "fold_accuracy_mean" in metrics:  # cross-validation: the folds' mean and spread
        return (f"{metrics['model']}, {metrics['split']}: UAR {metrics['fold_uar_mean']:.3f} ± "
                f"{metrics['fold_uar_std']:.3f}, accuracy {metrics['fold_accuracy_mean']:.3f} ± "
                f"{metrics['fold_accuracy_std']:.3f}")
    return (f"{metrics['model']} on {Path(metrics['store']).name} [{metrics['split']}]: "
            f"UAR {metrics['uar']:.3f}, accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['f1_macro']:.3f}")


def draw_confusion(out_dir: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """``out_dir/confusion.png`` (counts and row-normalised) from ``metrics`` or ``out_dir/metrics.json``.

    Works for an evaluation (:func:`ser.evaluation.evaluator.evaluate`) and a cross-validation
    (:func:`ser.experiments.crossval.crossval`) folder alike.
    """
    out_dir = Path(out_dir)
    if metrics is None:
        path = out_dir / "metrics.json"
        if not path.is_file():
            raise SerError(f"{path}: no metrics to draw a confusion matrix from")
        metrics = json.loads(path.read_text())
    return plot_confusion(np.array(metrics["confusion"]), metrics["labels"], out_dir / "confusion.png",
                          title=confusion_title(metrics))


def draw_run(run_dir: str | Path, eval_dir: str | Path | None = None) -> list[Path]:
    """A trained run's figures: ``curves.png`` in ``run_dir``, and ``confusion.png`` in ``eval_dir``
    when given (a sweep run's ``test/``). The signature fits :data:`ser.experiments.sweep.AfterRun`."""
    made = [draw_curves(run_dir)]
    if eval_dir is not None:
        made.append(draw_confusion(eval_dir))
    return made
