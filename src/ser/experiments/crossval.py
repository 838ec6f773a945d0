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

from ser.errors import SerError
from ser.evaluation.evaluator import compute_metrics
from ser.training.data import fit_statistics, load_rows
from ser.training.models import get_spec
from ser.store.writer import Store
from ser.training.loop import TrainConfig, TrainData, fit, pick_device, predict_logits


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


def crossval(store_path: str | Path, cfg: TrainConfig, out_dir: str | Path, *, folds: int | None = None,
             device: str = "auto", augmented: bool = True, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> CrossValResult:
    """Train and test ``cfg`` on leave-speakers-out folds; write folds.csv, metrics.json, confusion.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    store = Store(store_path)
    meta = store.meta()
    family = get_spec(cfg.model).family
    groups = speaker_folds(meta["speaker"].astype(str), folds, cfg.seed)
    transform = None
    if cfg.speaker_norm:  # each speaker by their own originals: no labels, no other speaker
        from ser.training.speakers import store_transform

        transform = store_transform(store, family)
    labels = store.labels
    fold_rows, preds = [], []
    t0 = time.perf_counter()
    for k, test_speakers in enumerate(groups, 1):
        held = meta["speaker"].astype(str).isin(test_speakers).to_numpy()
        keep = ~held if augmented else ~held & (meta["augment"] == "none").to_numpy()
        train_rows = meta.index[keep].to_numpy()
        test_rows = meta.index[held & (meta["augment"] == "none").to_numpy()].to_numpy()
        log(f"fold {k}/{len(groups)}: test speakers {', '.join(test_speakers)} "
            f"({len(test_rows)} clips), {len(train_rows)} train rows")
        train = load_rows(store, train_rows, family, dev, transform=transform)
        mean, std = fit_statistics(train, family)
        data = TrainData(store, family, train, None, tuple(store.info["shapes"][family][1:]), mean, std)
        fit(replace(cfg, patience=0), data, out / f"fold{k}", device=dev, log=log)
        from ser.training.checkpoint import load_checkpoint

        model = load_checkpoint(out / f"fold{k}" / "last.pt").model.to(dev)
        logits, y = predict_logits(model, load_rows(store, test_rows, family, dev, transform=transform))
        pred = logits.argmax(1).numpy()
        m = compute_metrics(y.numpy(), pred, labels)
        fold_rows.append({"fold": k, "speakers": " ".join(test_speakers), "n": m["n"],
                          "accuracy": round(m["accuracy"], 4), "f1_macro": round(m["f1_macro"], 4)})
        part = meta.loc[np.sort(test_rows), ["clip_id", "speaker", "emotion"]].copy()
        part["predicted"] = [labels[i] for i in pred]
        part["fold"] = k
        preds.append(part)
        log(f"fold {k}: accuracy {m['accuracy']:.3f}, macro-F1 {m['f1_macro']:.3f}")
    table = pd.DataFrame(fold_rows)
    allp = pd.concat(preds)
    idx = {e: i for i, e in enumerate(labels)}
    pooled = compute_metrics(allp["emotion"].map(idx).to_numpy(), allp["predicted"].map(idx).to_numpy(), labels)
    pooled.update(model=cfg.model, store=str(store.path), split=f"{len(groups)}-fold leave-speakers-out",
                  trained_on_augmented_rows=augmented,
                  train_config=cfg.to_dict(), folds=fold_rows,
                  fold_accuracy_mean=float(table["accuracy"].mean()), fold_accuracy_std=float(table["accuracy"].std(ddof=0)),
                  fold_f1_macro_mean=float(table["f1_macro"].mean()), fold_f1_macro_std=float(table["f1_macro"].std(ddof=0)),
                  seconds=time.perf_counter() - t0)
    table.to_csv(out / "folds.csv", index=False)
    allp.to_csv(out / "predictions.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(pooled, indent=2))
    from ser.report.plots import plot_confusion

    plot_confusion(np.array(pooled["confusion"]), labels, out / "confusion.png",
                   title=f"{cfg.model}, {len(groups)}-fold leave-speakers-out: accuracy "
                         f"{pooled['fold_accuracy_mean']:.3f} ± {pooled['fold_accuracy_std']:.3f}")
    return CrossValResult(folds=table, metrics=pooled, predictions=allp, out_dir=out)
