"""Speaker-independent cross-validation: leave-speakers-out folds over a whole store.

Every speaker's clips are tested exactly once, by a model trained without any row of that
speaker (no augmented copy either). Training rows are every row of the other speakers
(augmented copies included); test rows are the held-out speakers' originals. Feature a corpus
for this with ``featurize --split speaker --test-size 0 --val-size 0`` so every clip has its
augmented copies; the store's own split column is ignored here.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ser.errors import SerError
from ser.evaluation.metrics import compute_metrics
from ser.store import Store
from ser.training.checkpoint import load_checkpoint
from ser.training.data import fit_statistics, load_rows
from ser.training.device import pick_device
from ser.training.loop import TrainConfig, TrainData, fit, predict_logits
from ser.training.models import get_spec


def speaker_folds(speakers: Sequence[str], n_folds: int | None, seed: int) -> list[list[str]]:
    """Disjoint groups of speakers, one per fold; ``None`` folds: one speaker each (LOSO)."""
    unique = sorted(set(speakers))
    if len(unique) < 2:
        raise SerError(f"cross-validation needs at least two speakers, the store has {len(unique)}")
    n = len(unique) if n_folds is None else n_folds
    if not 2 <= n <= len(unique):
        raise SerError(f"--folds must be between 2 and the number of speakers ({len(unique)}), got {n}")
    order = np.random.default_rng(seed).permutation(len(unique))
    return [sorted(unique[i] for i in part) for part in np.array_split(order, n)]


@dataclass
class CrossValResult:
    folds: pd.DataFrame            # one row per fold: speakers, n, accuracy, macro-F1
    metrics: dict[str, Any]        # pooled metrics over every held-out prediction
    predictions: pd.DataFrame
    out_dir: Path

    @property
    def confusion(self) -> np.ndarray:
        """Pooled counts ``(classes, classes)`` over every held-out clip: true by row, predicted by column."""
        return np.asarray(self.metrics["confusion"])


@dataclass(frozen=True)
class _Folds:
    """What every fold of one cross-validation shares."""

    store: Store
    meta: pd.DataFrame
    cfg: TrainConfig
    family: str
    device: torch.device
    transform: Any  # per-speaker standardisation of the rows read, or None
    augmented: bool
    out: Path


def crossval(store_path: str | Path, cfg: TrainConfig, out_dir: str | Path, *, folds: int | None = None,
             device: str = "auto", augmented: bool = True, fold_seed: int | None = None,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
             after_fold: Callable[[Path], None] | None = None) -> CrossValResult:
    """Train and test ``cfg`` on leave-speakers-out folds; write folds.csv, metrics.json, predictions.csv.

    Fold ``k`` trains into ``out_dir/fold<k>`` (``after_fold`` is called with that folder once
    it is trained). The folds are drawn with ``fold_seed`` (``cfg.seed`` when None), so runs of
    models with other seeds can share them. The pooled confusion is ``result.confusion``; its
    figure is drawn above (:func:`ser.report.runs.draw_confusion`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    store = Store(store_path)
    meta = store.meta()
    family = get_spec(cfg.model).family
    groups = speaker_folds(meta["speaker"].astype(str), folds, cfg.seed if fold_seed is None else fold_seed)
    transform = None
    if cfg.speaker_norm:  # each speaker by their own originals: no labels, no other speaker
        from ser.training.speakers import store_transform

        transform = store_transform(store, family)
    shared = _Folds(store, meta, cfg, family, dev, transform, augmented, out)
    t0 = time.perf_counter()
    results = [_fold(shared, k, speakers, len(groups), log=log, after_fold=after_fold)
               for k, speakers in enumerate(groups, 1)]
    return _pool(shared, [r for r, _ in results], pd.concat([p for _, p in results]), len(groups),
                 seconds=time.perf_counter() - t0)


def _fold(f: _Folds, k: int, test_speakers: list[str], n_folds: int, *, log: Callable[[str], None],
          after_fold: Callable[[Path], None] | None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train fold ``k`` without ``test_speakers``, test on their originals: ``(fold row, predictions)``."""
    meta, labels = f.meta, f.store.labels
    held = meta["speaker"].astype(str).isin(test_speakers).to_numpy()
    original = (meta["augment"] == "none").to_numpy()
    train_rows = meta.index[~held if f.augmented else ~held & original].to_numpy()
    test_rows = meta.index[held & original].to_numpy()
    log(f"fold {k}/{n_folds}: test speakers {', '.join(test_speakers)} "
        f"({len(test_rows)} clips), {len(train_rows)} train rows")
    train = load_rows(f.store, train_rows, f.family, f.device, transform=f.transform)
    mean, std = fit_statistics(train, f.family)
    data = TrainData(f.store, f.family, train, None, tuple(f.store.info["shapes"][f.family][1:]), mean, std)
    fold_dir = f.out / f"fold{k}"
    fit(replace(f.cfg, patience=0), data, fold_dir, device=f.device, log=log)
    if after_fold is not None:
        after_fold(fold_dir)
    model = load_checkpoint(fold_dir / "last.pt").model.to(f.device)
    logits, y = predict_logits(model, load_rows(f.store, test_rows, f.family, f.device, transform=f.transform))
    pred = logits.argmax(1).numpy()
    m = compute_metrics(y.numpy(), pred, labels)
    log(f"fold {k}: accuracy {m['accuracy']:.3f}, UAR {m['uar']:.3f}, macro-F1 {m['f1_macro']:.3f}")
    part = meta.loc[np.sort(test_rows), ["clip_id", "speaker", "emotion"]].copy()
    part["predicted"] = [labels[i] for i in pred]
    part["fold"] = k
    probs = torch.softmax(logits.float(), dim=1).numpy()
    for i, lab in enumerate(labels):  # what `ser fuse` averages across runs over the same folds
        part[f"p_{lab}"] = probs[:, i]
    return ({"fold": k, "speakers": " ".join(test_speakers), "n": m["n"],
             "accuracy": round(m["accuracy"], 4), "uar": round(m["uar"], 4), "f1_macro": round(m["f1_macro"], 4)},
            part)


def _pool(f: _Folds, fold_rows: list[dict[str, Any]], allp: pd.DataFrame, n_folds: int, *,
          seconds: float) -> CrossValResult:
    """Metrics pooled over every held-out prediction, plus the folds' mean and spread; written to ``f.out``."""
    labels = f.store.labels
    table = pd.DataFrame(fold_rows)
    idx = {e: i for i, e in enumerate(labels)}
    pooled = compute_metrics(allp["emotion"].map(idx).to_numpy(), allp["predicted"].map(idx).to_numpy(), labels)
    pooled.update(model=f.cfg.model, store=str(f.store.path), split=f"{n_folds}-fold leave-speakers-out",
                  trained_on_augmented_rows=f.augmented, train_config=f.cfg.to_dict(), folds=fold_rows,
                  fold_accuracy_mean=float(table["accuracy"].mean()),
                  fold_accuracy_std=float(table["accuracy"].std(ddof=0)),
                  fold_uar_mean=float(table["uar"].mean()),
                  fold_uar_std=float(table["uar"].std(ddof=0)),
                  fold_f1_macro_mean=float(table["f1_macro"].mean()),
                  fold_f1_macro_std=float(table["f1_macro"].std(ddof=0)),
                  seconds=seconds)
    table.to_csv(f.out / "folds.csv", index=False)
    allp.to_csv(f.out / "predictions.csv", index=False)
    (f.out / "metrics.json").write_text(json.dumps(pooled, indent=2))
    return CrossValResult(folds=table, metrics=pooled, predictions=allp, out_dir=f.out)
