"""Scores of predictions: accuracy, UAR, F1 (micro, macro, weighted), the per-class report, the
confusion matrix and its most-confused pairs; functions of labels alone, no model, no store."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted average recall: the mean over the classes present in ``y_true`` of the share of
    each class's clips predicted as that class (what SER papers report first; chance is one over
    the number of classes, whatever their sizes). sklearn's ``balanced_accuracy_score``."""
    from sklearn.metrics import recall_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape[0] == 0:
        return float("nan")
    return float(recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, UAR, F1 (micro, macro, weighted), per-class report, confusion counts, confused pairs.

    ``y_true``/``y_pred`` are class indices into ``labels``. UAR and macro-F1 average over the
    classes present in ``y_true`` (``labels_scored``): a model that knows a class the data lacks
    (boredom, scored on CREMA-D) is not charged a zero for it; predictions of such a class still
    count as errors.
    """
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    idx = list(range(len(labels)))
    present = sorted(set(np.asarray(y_true).tolist()))  # macro scores over the classes present
    cm = confusion_matrix(y_true, y_pred, labels=idx)
    report = classification_report(y_true, y_pred, labels=idx, target_names=list(labels),
                                   output_dict=True, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "uar": uar(y_true, y_pred),
        "f1_micro": float(f1_score(y_true, y_pred, labels=idx, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=idx, average="weighted", zero_division=0)),
        "per_class": {k: v for k, v in report.items() if k in labels},
        "labels": list(labels),
        "labels_scored": [labels[i] for i in present],
        "confusion": cm.tolist(),
        "most_confused": most_confused(cm, labels),
    }


def most_confused(cm: np.ndarray, labels: Sequence[str], top: int = 10) -> list[dict[str, Any]]:
    """Off-diagonal cells ranked by count: true class, predicted class, count, share of the true class."""
    cm = np.asarray(cm)
    pairs = []
    for i in range(cm.shape[0]):
        total = cm[i].sum()
        for j in range(cm.shape[1]):
            if i != j and cm[i, j] > 0:
                pairs.append({"true": labels[i], "predicted": labels[j], "count": int(cm[i, j]),
                              "rate": float(cm[i, j] / total) if total else 0.0})
    pairs.sort(key=lambda p: (-p["count"], -p["rate"], p["true"], p["predicted"]))
    return pairs[:top]


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short text table of the headline metrics, per-class scores and most-confused pairs."""
    lines = [f"{metrics.get('model', '')} on {metrics.get('store', '')} [{metrics.get('split', '')}], n={metrics['n']}",
             f"  accuracy     {metrics['accuracy']:.4f}",
             f"  UAR          {metrics['uar']:.4f}",
             f"  F1 micro     {metrics['f1_micro']:.4f}",
             f"  F1 macro     {metrics['f1_macro']:.4f}",
             f"  F1 weighted  {metrics['f1_weighted']:.4f}"]
    scored = metrics.get("labels_scored", metrics["labels"])
    if list(scored) != list(metrics["labels"]):
        absent = [lab for lab in metrics["labels"] if lab not in scored]
        lines.append(f"  UAR and macro-F1 over the {len(scored)} classes present ({', '.join(scored)}); "
                     f"the model also knows {', '.join(absent)}")
    for key, what in (("mapped", "mapped"), ("excluded_labels", "left out")):
        if metrics.get(key):
            lines.append(f"  {what}: " + ", ".join(f"{k} ({v})" for k, v in metrics[key].items()))
    lines += ["", f"  {'class':8s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'support':>8s}"]
    for lab, r in metrics["per_class"].items():
        lines.append(f"  {lab:8s} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1-score']:6.3f} {int(r['support']):8d}")
    if metrics["most_confused"]:
        lines += ["", "  most confused (true -> predicted: count, share of true class):"]
        lines += [f"    {p['true']} -> {p['predicted']}: {p['count']} ({p['rate']:.0%})"
                  for p in metrics["most_confused"][:5]]
    return "\n".join(lines)
