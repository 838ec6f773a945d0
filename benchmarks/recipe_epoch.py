"""One epoch of a CNN preset on a real store, on this machine: the CPU budget of the CREMA-D recipe.

Trains ``--preset`` (default ``cnn``: one random variant of each clip per epoch) on every
training row of ``--store`` (``featurize --split speaker --test-size 0`` over the 57 actors:
the rows the README's recipe trains on) for ``--epochs`` epochs and prints each epoch's seconds
from history.csv (training and the validation pass), the rows an epoch takes, and the whole
recipe's projected training time at the preset's own epoch count. Threads: torch's default
(all cores). Timed runs on shared machines belong under ``flock /tmp/ser-bench.lock``:

    flock /tmp/ser-bench.lock python benchmarks/recipe_epoch.py --store dev.h5 [--preset cnn] [--epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--preset", default="cnn")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    import pandas as pd
    import torch

    from ser.experiments.presets import preset_config
    from ser.store import Store
    from ser.training.loop import train

    cfg = preset_config(args.preset)
    full_epochs = cfg.epochs
    cfg = preset_config(args.preset, epochs=args.epochs, patience=0)
    meta = Store(args.store).meta()
    train_meta = meta[meta["split"] == "train"]
    rows = train_meta["clip_id"].nunique() if cfg.variants == "one" else (
        int((train_meta["augment"] == "none").sum()) if cfg.variants == "original" else len(train_meta))
    print(f"{args.preset}: {cfg.model} {cfg.hparams}; {len(train_meta)} train rows, {rows} a epoch "
          f"(variants {cfg.variants}); torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(args.store, cfg, Path(tmp) / "run", device="cpu", log=lambda m: None)
        wall = time.perf_counter() - t0
        hist = pd.read_csv(Path(tmp) / "run" / "history.csv")
    secs = hist["seconds"].tolist()
    print("epoch seconds: " + ", ".join(f"{s:.1f}" for s in secs) + f" (whole call {wall:.1f} s, loading included)")
    per_epoch = statistics.median(secs[1:] or secs)
    print(f"median epoch {per_epoch:.1f} s; the preset's {full_epochs} epochs: {per_epoch * full_epochs / 60:.1f} min")


if __name__ == "__main__":
    main()
