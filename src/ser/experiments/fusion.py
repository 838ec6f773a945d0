"""Late fusion measured the honest way: the cross-validated runs of several models over the same
speaker folds, their held-out probabilities averaged clip by clip (``ser fuse RUN_A RUN_B``).

The weights are given, never fitted on the held-out folds (equal by default), so the fused
figure is as speaker-independent as its members'. The same weights then make the shipped
model: ``ser fuse A/best.pt B/best.pt --out fused.pt`` (:mod:`ser.training.fusion`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ser.errors import SerError
from ser.evaluation.metrics import compute_metrics


def _run(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    metrics, preds = path / "metrics.json", path / "predictions.csv"
    if not metrics.exists() or not preds.exists():
        raise SerError(f"{path} is not a crossval folder (no metrics.json and predictions.csv)")
    table = pd.read_csv(preds, dtype={"clip_id": str, "speaker": str})
    if not any(c.startswith("p_") for c in table.columns):
        raise SerError(f"{preds} has no probability columns (p_<label>): rerun its crossval with this version")
    return json.loads(metrics.read_text()), table.set_index("clip_id").sort_index()


def fuse_crossvals(run_dirs: Sequence[str | Path], out_dir: str | Path,
                   weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Pooled and per-fold metrics of the weighted mean of the runs' held-out probabilities.

    The runs must hold the same clips in the same folds with the same labels (``ser crossval``
    with the same ``--folds`` and ``--seed`` on the same store). Writes metrics.json, folds.csv
    and predictions.csv to ``out_dir``; returns the metrics.
    """
    if len(run_dirs) < 2:
        raise SerError("fusing needs at least two crossval folders")
    runs = [_run(Path(d)) for d in run_dirs]
    w = np.ones(len(runs)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(runs) or (w < 0).any() or w.sum() <= 0:
        raise SerError(f"give one non-negative weight per run ({len(runs)}), not all zero")
    w = w / w.sum()
    labels = runs[0][0]["labels"]
    base = runs[0][1]
    for d, (m, t) in zip(run_dirs[1:], runs[1:]):
        if m["labels"] != labels:
            raise SerError(f"{d} scores labels {m['labels']}, {run_dirs[0]} scores {labels}")
        if not t.index.equals(base.index) or not (t["fold"] == base["fold"]).all():
            raise SerError(f"{d} and {run_dirs[0]} hold different clips or folds: cross-validate both on "
                           "the same store with the same --folds and --seed")
    cols = [f"p_{lab}" for lab in labels]
    probs = sum(wk * t[cols].to_numpy() for wk, (_, t) in zip(w, runs))
    return _write(Path(out_dir), base, probs, labels, [str(d) for d in run_dirs], w.tolist())


def _write(out: Path, base: pd.DataFrame, probs: np.ndarray, labels: list[str], runs: list[str],
           weights: list[float]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    idx = {e: i for i, e in enumerate(labels)}
    y = base["emotion"].map(idx).to_numpy()
    pred = probs.argmax(1)
    folds = []
    for k in sorted(base["fold"].unique()):
        sel = (base["fold"] == k).to_numpy()
        m = compute_metrics(y[sel], pred[sel], labels)
        folds.append({"fold": int(k), "n": m["n"], "accuracy": round(m["accuracy"], 4), "uar": round(m["uar"], 4),
                      "f1_macro": round(m["f1_macro"], 4)})
    table = pd.DataFrame(folds)
    pooled = compute_metrics(y, pred, labels)
    pooled.update(model="fusion", runs=runs, weights=weights, folds=folds,
                  split=f"{len(folds)}-fold leave-speakers-out",
                  fold_uar_mean=float(table["uar"].mean()), fold_uar_std=float(table["uar"].std(ddof=0)),
                  fold_accuracy_mean=float(table["accuracy"].mean()),
                  fold_accuracy_std=float(table["accuracy"].std(ddof=0)),
                  fold_f1_macro_mean=float(table["f1_macro"].mean()),
                  fold_f1_macro_std=float(table["f1_macro"].std(ddof=0)))
    preds = base[["speaker", "emotion", "fold"]].copy()
    preds["predicted"] = [labels[i] for i in pred]
    for i, lab in enumerate(labels):
        preds[f"p_{lab}"] = probs[:, i]
    preds.reset_index().to_csv(out / "predictions.csv", index=False)
    table.to_csv(out / "folds.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(pooled, indent=2))
    return pooled


def train_fused(store_path: str | Path, preset_name: str, out_dir: str | Path, *, device: str = "auto",
                seed: int | None = None, memory_budget_bytes: int | None = None,
                log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
    """Train each member of a fused preset into ``out_dir/<member>``, then fuse them into
    ``out_dir/best.pt``; returns the :class:`ser.training.fusion.Fusion`."""
    from ser.experiments.presets import get_preset, member_config
    from ser.training.fusion import save_fusion
    from ser.training.loop import train

    preset, out = get_preset(preset_name), Path(out_dir)
    for member in preset.members:
        cfg = member_config(member, seed)
        log(f"[{preset_name}] training {member.name} (seed {cfg.seed})")
        train(store_path, cfg, out / member.name, device=device, memory_budget_bytes=memory_budget_bytes, log=log)
    return save_fusion(out / "best.pt", [out / m.name / "best.pt" for m in preset.members], preset.weights)


def crossval_fused(store_path: str | Path, preset_name: str, out_dir: str | Path, *, folds: int | None,
                   device: str = "auto", seed: int | None = None,
                   log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                   after_fold: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Cross-validate each member of a fused preset over the same folds (drawn with ``seed``,
    whatever the members' offsets) into ``out_dir/<member>``, then score their fusion; returns
    the fused metrics (written to ``out_dir``)."""
    from ser.experiments.crossval import crossval
    from ser.experiments.presets import get_preset, member_config, preset_config

    preset, out = get_preset(preset_name), Path(out_dir)
    fold_seed = preset_config(preset.members[0].preset).seed if seed is None else seed
    for member in preset.members:
        cfg = member_config(member, seed)
        log(f"[{preset_name}] cross-validating {member.name} (seed {cfg.seed})")
        crossval(store_path, cfg, out / member.name, folds=folds, device=device, fold_seed=fold_seed, log=log,
                 after_fold=after_fold)
    return fuse_crossvals([out / m.name for m in preset.members], out, preset.weights)
