"""Sweeps: a grid of training configs from one load of the store (``train --sweep``).

Each grid point trains into its own folder; with a test split each run is also evaluated on
it (reported beside the run, never used to pick). ``results.csv`` / ``results.md`` rank the
runs by the validation score that ``TrainConfig.select`` names (UAR by default), and the
winner's ``best.pt`` is copied to the sweep folder.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ser.errors import SerError
from ser.evaluation.evaluator import evaluate
from ser.training.ddp import launched_by_torchrun
from ser.training.device import pick_device
from ser.training.loop import SELECT_METRICS, TrainConfig, TrainData, fit, open_train_data

#: Called after each run with its folder and its test evaluation's folder (None without a test split).
AfterRun = Callable[[Path, "Path | None"], None]


def parse_sweep(items: Sequence[str]) -> dict[str, list[str]]:
    """``["optimizer=adam,sgd", "filters=128,64|256,128"]`` -> grid axes. Values that contain
    commas themselves (filters, kernels) are separated by ``|``.

    Keys joined by ``+`` form one axis whose values change together (a list of rows, not a
    product): ``filters+kernels=128,64;1x3,3x5|512,256;3x5,3x5`` is two runs, each value giving
    the keys' parts separated by ``;``.
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise SerError(f"--sweep {item!r} is not KEY=V1,V2")
        key, values = item.split("=", 1)
        key = "+".join(k.strip().replace("-", "_") for k in key.split("+"))
        sep = "|" if ("|" in values or "+" in key) else ","
        vals = [v.strip() for v in values.split(sep) if v.strip()]
        if not vals:
            raise SerError(f"--sweep {item!r} has no values")
        n_keys = len(key.split("+"))
        for v in vals:
            if n_keys > 1 and len(v.split(";")) != n_keys:
                raise SerError(f"--sweep {item!r}: value {v!r} needs {n_keys} parts separated by ';' "
                               f"(one per key of {key})")
        grid[key] = vals
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every point of the grid as plain ``{key: value}`` overrides (joined axes split apart)."""
    points = []
    for values in itertools.product(*grid.values()):
        point: dict[str, str] = {}
        for key, value in zip(grid, values):
            point.update(zip(key.split("+"), value.split(";")) if "+" in key else [(key, value)])
        points.append(point)
    return points


def _flag(value: str) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


_TOP_LEVEL_CASTS: dict[str, Callable[[str], Any]] = {
    "optimizer": str, "lr": float, "epochs": int, "batch_size": int, "seed": int, "patience": int,
    "weight_decay": float, "momentum": float, "mixup": float, "spec_augment": _flag, "speaker_norm": _flag,
    "label_smoothing": float, "schedule": str, "variants": str, "select": str,
}


def apply_overrides(base: TrainConfig, overrides: dict[str, str]) -> TrainConfig:
    """A config with top-level fields or model hyper-parameters replaced by (string) values."""
    top = {k: _TOP_LEVEL_CASTS[k](v) for k, v in overrides.items() if k in _TOP_LEVEL_CASTS}
    hp = {k: v for k, v in overrides.items() if k not in _TOP_LEVEL_CASTS}
    if "model" in hp:
        raise SerError("the model cannot be swept; run one sweep per model")
    return dataclasses.replace(base, **top, hparams={**base.hparams, **hp})


def run_name(overrides: dict[str, str]) -> str:
    """A grid point's folder name, e.g. ``optimizer=adam-lr=0.01`` (no path separators)."""
    return "-".join(f"{k}={v}".replace("/", "_").replace("|", "_").replace(",", "_") for k, v in overrides.items())


def run_sweep(store_path: str | Path, base: TrainConfig, grid: dict[str, list[str]], out_dir: str | Path, *,
              device: str = "auto", memory_budget_bytes: int | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr), resume: bool = False,
              after_run: AfterRun | None = None) -> list[dict[str, Any]]:
    """Open the store, load ``base``'s feature family once, then train every grid point (:func:`sweep`)."""
    dev = pick_device(device)
    if launched_by_torchrun():
        raise SerError("--sweep is not supported under torchrun; run the grid in one process")
    data = open_train_data(store_path, base, dev, memory_budget_bytes=memory_budget_bytes, log=log)
    return sweep(base, grid, data, out_dir, device=dev, log=log, resume=resume, after_run=after_run)


def sweep(base: TrainConfig, grid: dict[str, list[str]], data: TrainData, out_dir: str | Path, *,
          device: torch.device, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
          resume: bool = False, after_run: AfterRun | None = None) -> list[dict[str, Any]]:
    """Train every grid point on ``data``; write results.csv/.md and the winner's best.pt.

    Returns one row per run, best first: the overrides, ``run`` (its folder name), best epoch,
    validation scores, seconds and, with a test split, test accuracy and macro-F1.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = grid_points(grid)
    results = []
    for i, overrides in enumerate(points, 1):
        name = run_name(overrides)
        log(f"[{i}/{len(points)}] {name}")
        results.append(_run_point(apply_overrides(base, overrides), overrides, data, out_dir / name,
                                  device=device, log=log, resume=resume, after_run=after_run))
    first, second = (f"val_{k}" for k in SELECT_METRICS[base.select])
    results.sort(key=lambda r: (-r[first], -r[second]))
    write_results(out_dir, results)
    winner = results[0]
    shutil.copyfile(out_dir / winner["run"] / "best.pt", out_dir / "best.pt")
    log(f"best by val {base.select}: {winner['run']} (val UAR {winner['val_uar']}, macro-F1 "
        f"{winner['val_macro_f1']}, accuracy {winner['val_accuracy']})")
    return results


def _run_point(cfg: TrainConfig, overrides: dict[str, str], data: TrainData, run_dir: Path, *,
               device: torch.device, log: Callable[[str], None], resume: bool,
               after_run: AfterRun | None) -> dict[str, Any]:
    """Train one grid point and score it on the test split when the store has one."""
    res = fit(cfg, data, run_dir, device=device, log=log, resume=resume)
    row = {**overrides, "run": run_dir.name, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
           "val_accuracy": round(res.best_val_accuracy, 4), "val_uar": round(res.best_val_uar, 4),
           "val_macro_f1": round(res.best_val_macro_f1, 4), "seconds": round(res.seconds, 1)}
    test_dir = None
    if len(data.store.rows("test")) > 0:  # reported beside each run; the winner is still picked on validation
        ev = evaluate(res.out_dir / "best.pt", store=data.store.path, split="test",
                      out_dir=res.out_dir / "test", device=device.type, log=log)
        row.update(test_accuracy=round(ev.metrics["accuracy"], 4), test_uar=round(ev.metrics["uar"], 4),
                   test_macro_f1=round(ev.metrics["f1_macro"], 4))
        log(f"    test accuracy {ev.metrics['accuracy']:.4f}, UAR {ev.metrics['uar']:.4f}, "
            f"macro-F1 {ev.metrics['f1_macro']:.4f}")
        test_dir = ev.out_dir
    if after_run is not None:
        after_run(res.out_dir, test_dir)
    return row


def write_results(out_dir: Path, results: list[dict[str, Any]]) -> None:
    """``results.csv`` and a Markdown table ``results.md`` of the ranked runs."""
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    cols = list(results[0])
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in results]
    (out_dir / "results.md").write_text("\n".join(md) + "\n")
