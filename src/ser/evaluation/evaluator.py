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

from ser.errors import SerError
from ser.evaluation.metrics import compute_metrics
from ser.training.checkpoint import Checkpoint, check_compatible
from ser.training.data import load_split
from ser.training.device import pick_device
from ser.training.fusion import Fusion, load_model
from ser.store import Store


@dataclass
class Evaluation:
    metrics: dict[str, Any]        # compute_metrics' keys plus checkpoint, store, split, excluded, model
    predictions: pd.DataFrame      # one row per evaluated row: ids, true, predicted, p_<label>
    out_dir: Path | None           # where metrics.json and predictions.csv were written

    @property
    def confusion(self) -> np.ndarray:
        """Counts ``(classes, classes)``: true class by row, predicted by column (``metrics["labels"]`` order)."""
        return np.asarray(self.metrics["confusion"])


def _store_for(ckpt: Checkpoint | Fusion, store_path: str | Path | None) -> Store:
    path = Path(store_path) if store_path else Path(ckpt.store_path)
    if not path.exists():
        raise SerError(f"store {path} not found; pass --store (the checkpoint was trained on {ckpt.store_path})")
    store = Store(path)
    for member in ckpt.members if isinstance(ckpt, Fusion) else [ckpt]:
        check_compatible(member, store)
    return store


def parse_label_map(text: str | None) -> dict[str, str | None]:
    """``"CAL=NEU,SUR=drop"`` -> ``{"CAL": "NEU", "SUR": None}`` (codes upper-cased; drop: None)."""
    out: dict[str, str | None] = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise SerError(f"--label-map entry {item!r} is not FROM=TO or FROM=drop")
        out[src.strip().upper()] = None if dst.strip().lower() == "drop" else dst.strip().upper()
    return out


def evaluate(checkpoint: str | Path, *, store: str | Path | None = None, split: str = "test",
             out_dir: str | Path | None = None, device: str = "auto", batch_size: int = 512,
             label_map: dict[str, str | None] | None = None,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Evaluation:
    """Evaluate a checkpoint (or a fusion) on ``split`` of a store (the checkpoint's own by default).

    ``label_map`` folds a store's labels into the model's (``{"CAL": "NEU"}``) or drops them
    (``{"SUR": None}``) before scoring. Rows whose (mapped) emotion the model does not know (e.g.
    EmoDB's boredom for a six-class model) are left out, counted in ``metrics["excluded"]`` and by
    label in ``metrics["excluded_labels"]``; ``metrics["mapped"]`` counts the folded rows, and
    UAR and macro-F1 are over the classes present (``metrics["labels_scored"]``). With
    ``out_dir``, writes ``metrics.json`` and ``predictions.csv`` there (the confusion figure is
    drawn by :func:`ser.report.runs.draw_confusion`).
    """
    ckpt = load_model(checkpoint)
    st = _store_for(ckpt, store)
    dev = pick_device(device)
    if isinstance(ckpt, Fusion):
        parts = [_probabilities(m, st, split, device=dev, batch_size=batch_size) for m in ckpt.members]
        probs, rows = ckpt.combine([p for p, _ in parts]), parts[0][1]
    else:
        probs, rows = _probabilities(ckpt, st, split, device=dev, batch_size=batch_size)
    meta, mapped, left_out = _mapped_labels(st.meta().loc[rows], ckpt.labels, label_map or {}, log=log)
    known = meta["emotion"].isin(ckpt.labels).to_numpy()
    if not known.any():
        raise SerError(f"no row of split {split!r} has an emotion the checkpoint knows ({', '.join(ckpt.labels)})")
    meta, probs = meta[known], probs[known]
    y_true = meta["emotion"].map({e: i for i, e in enumerate(ckpt.labels)}).to_numpy()
    y_pred = probs.argmax(1)
    metrics = compute_metrics(y_true, y_pred, ckpt.labels)
    metrics.update(checkpoint=str(checkpoint), store=str(st.path), split=split, excluded=int((~known).sum()),
                   excluded_labels=left_out, label_map=label_map or {}, mapped=mapped, model=ckpt.model_name)
    preds = _predictions(meta, probs, ckpt.labels)
    out = write_evaluation(out_dir, metrics, preds) if out_dir is not None else None
    return Evaluation(metrics=metrics, predictions=preds, out_dir=out)


def _mapped_labels(meta: pd.DataFrame, known: Sequence[str], label_map: dict[str, str | None], *,
                   log: Callable[[str], None]) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    """``meta`` with emotions mapped (dropped ones become ""), the mapped and left-out counts by label."""
    meta = meta.copy()
    original = meta["emotion"].astype(str)
    meta["emotion"] = original.map(lambda e: (label_map[e] or "") if e in label_map else e)
    mapped = {f"{k}={v}": int((original == k).sum()) for k, v in label_map.items()
              if v is not None and (original == k).any()}
    out = meta["emotion"][~meta["emotion"].isin(known)]
    left_out = {str(k): int(v) for k, v in original[out.index].value_counts().sort_index().items()}
    if left_out:
        log(f"{sum(left_out.values())} row(s) have emotions the model does not know or --label-map drops "
            f"({', '.join(f'{k} {v}' for k, v in left_out.items())}); left out")
    return meta, mapped, left_out


def _probabilities(ckpt: Checkpoint, st: Store, split: str, *, device: torch.device,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (k, classes), store rows (k,))`` of the checkpoint's model on ``split``."""
    transform = None
    if ckpt.train_config.get("speaker_norm"):
        from ser.training.speakers import store_transform

        transform = store_transform(st, ckpt.family)
    data = load_split(st, split, ckpt.family, device, transform=transform)
    if len(data) == 0:
        raise SerError(f"{st.path} has no rows in split {split!r}")
    model = ckpt.model.to(device)
    model.eval()
    logits = []
    with torch.no_grad():
        for x, _ in data.batches(batch_size, shuffle=False):
            logits.append(model(x).float().cpu())
    return torch.softmax(torch.cat(logits), dim=1).numpy(), data.rows


def _predictions(meta: pd.DataFrame, probs: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """predictions.csv's table: one row per evaluated store row, its prediction and class probabilities."""
    preds = pd.DataFrame({"row": meta.index, "clip_id": meta["clip_id"].to_numpy(),
                          "speaker": meta["speaker"].to_numpy(), "augment": meta["augment"].to_numpy(),
                          "true": meta["emotion"].to_numpy(),
                          "predicted": [labels[i] for i in probs.argmax(1)]})
    for i, lab in enumerate(labels):
        preds[f"p_{lab}"] = probs[:, i]
    return preds


def write_evaluation(out_dir: str | Path, metrics: dict[str, Any], predictions: pd.DataFrame) -> Path:
    """``out_dir/metrics.json`` and ``out_dir/predictions.csv`` (``out_dir`` created); returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    predictions.to_csv(out / "predictions.csv", index=False)
    return out
