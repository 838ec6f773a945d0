"""Metrics of a checkpoint on a split of a store: accuracy, F1, confusion, most-confused pairs."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ser.training.checkpoint import Checkpoint, check_compatible, load_checkpoint
from ser.errors import SerError
from ser.training.data import load_split
from ser.store.writer import Store


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, F1 (micro, macro, weighted), per-class report, confusion counts, confused pairs.

    ``y_true``/``y_pred`` are class indices into ``labels``.
    """
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    idx = list(range(len(labels)))
    cm = confusion_matrix(y_true, y_pred, labels=idx)
    report = classification_report(y_true, y_pred, labels=idx, target_names=list(labels),
                                   output_dict=True, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_micro": float(f1_score(y_true, y_pred, labels=idx, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=idx, average="weighted", zero_division=0)),
        "per_class": {k: v for k, v in report.items() if k in labels},
        "labels": list(labels),
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


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    out_dir: Path | None


def _store_for(ckpt: Checkpoint, store_path: str | Path | None) -> Store:
    path = Path(store_path) if store_path else Path(ckpt.store_path)
    if not path.exists():
        raise SerError(f"store {path} not found; pass --store (the checkpoint was trained on {ckpt.store_path})")
    store = Store(path)
    check_compatible(ckpt, store)
    return store


def evaluate(checkpoint: str | Path, *, store: str | Path | None = None, split: str = "test",
             out_dir: str | Path | None = None, device: str = "auto", batch_size: int = 512,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Evaluation:
    """Evaluate a checkpoint on ``split`` of a store (the checkpoint's own by default).

    Rows whose emotion the checkpoint does not know (e.g. EmoDB's boredom for a six-class model)
    are left out and counted in ``metrics["excluded"]``.
    """
    from ser.training.loop import pick_device

    ckpt = load_checkpoint(checkpoint)
    st = _store_for(ckpt, store)
    dev = pick_device(device)
    transform = None
    if ckpt.train_config.get("speaker_norm"):
        from ser.training.speakers import store_transform

        transform = store_transform(st, ckpt.family)
    data = load_split(st, split, ckpt.family, dev, transform=transform)
    if len(data) == 0:
        raise SerError(f"{st.path} has no rows in split {split!r}")
    model = ckpt.model.to(dev)
    model.eval()
    logits = []
    with torch.no_grad():
        for x, _ in data.batches(batch_size, shuffle=False):
            logits.append(model(x).float().cpu())
    probs = torch.softmax(torch.cat(logits), dim=1).numpy()
    meta = st.meta().loc[data.rows]
    known = meta["emotion"].isin(ckpt.labels).to_numpy()
    excluded = int((~known).sum())
    if excluded:
        log(f"{excluded} row(s) have emotions the model does not know "
            f"({', '.join(sorted(set(meta['emotion'][~known])))}); left out")
    if not known.any():
        raise SerError(f"no row of split {split!r} has an emotion the checkpoint knows ({', '.join(ckpt.labels)})")
    meta, probs = meta[known], probs[known]
    y_true = meta["emotion"].map({e: i for i, e in enumerate(ckpt.labels)}).to_numpy()
    y_pred = probs.argmax(1)
    metrics = compute_metrics(y_true, y_pred, ckpt.labels)
    metrics.update(checkpoint=str(checkpoint), store=str(st.path), split=split, excluded=excluded,
                   model=ckpt.model_name)
    preds = pd.DataFrame({"row": meta.index, "clip_id": meta["clip_id"].to_numpy(),
                          "speaker": meta["speaker"].to_numpy(), "augment": meta["augment"].to_numpy(),
                          "true": meta["emotion"].to_numpy(),
                          "predicted": [ckpt.labels[i] for i in y_pred]})
    for i, lab in enumerate(ckpt.labels):
        preds[f"p_{lab}"] = probs[:, i]
    out = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        preds.to_csv(out / "predictions.csv", index=False)
        from ser.report.plots import plot_confusion

        plot_confusion(np.array(metrics["confusion"]), ckpt.labels, out / "confusion.png",
                       title=f"{ckpt.model_name} on {st.path.name} [{split}]: accuracy {metrics['accuracy']:.3f}, "
                             f"macro-F1 {metrics['f1_macro']:.3f}")
    return Evaluation(metrics=metrics, predictions=preds, out_dir=out)


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short text table of the headline metrics, per-class scores and most-confused pairs."""
    lines = [f"{metrics.get('model', '')} on {metrics.get('store', '')} [{metrics.get('split', '')}], n={metrics['n']}",
             f"  accuracy     {metrics['accuracy']:.4f}",
             f"  F1 micro     {metrics['f1_micro']:.4f}",
             f"  F1 macro     {metrics['f1_macro']:.4f}",
             f"  F1 weighted  {metrics['f1_weighted']:.4f}",
             "", f"  {'class':8s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'support':>8s}"]
    for lab, r in metrics["per_class"].items():
        lines.append(f"  {lab:8s} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1-score']:6.3f} {int(r['support']):8d}")
    if metrics["most_confused"]:
        lines += ["", "  most confused (true -> predicted: count, share of true class):"]
        lines += [f"    {p['true']} -> {p['predicted']}: {p['count']} ({p['rate']:.0%})"
                  for p in metrics["most_confused"][:5]]
    return "\n".join(lines)
