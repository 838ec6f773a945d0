"""The study's two tables on CREMA-D with the honest protocol, plus the classic baselines beside them.

The store is featurize's defaults (clip-level 70/30 split stratified by emotion, seed 42, 5 % of
train to validation, clips split before augmenting, the four augmentations on training clips
only). On it:

- cnn1d (the study's network) over optimizer × learning rate: Adam, SGD, RMSprop × 0.01, 0.001;
- cnn2d (the study's blocks, flattened head) over its seven filter/kernel rows;
- svm (RBF, C=10) and logreg (C=0.1) on the same descriptors and split.

Every run keeps its best epoch on validation (``--select``, UAR by default); each table's winner
is picked on validation alone and every row's test accuracy, macro-F1 and UAR sit beside it,
with its most-confused pairs. At the study's 100 epochs this is a GPU job (one prepared run:
carry the store, not the audio); ``--epochs`` and ``--originals`` scale it down for a CPU, and
the table says what ran.

    python benchmarks/study_tables.py --store study.h5 [--data ../shared/data/cremad/AudioWAV]
        [--epochs 100] [--patience 20] [--device auto] [--originals] [--only cnn1d,cnn2d,classic]
        [--rows 1,2,3] [--out study-tables]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROWS_2D = ("128,128,64,64,32;1x3,3x5,3x5,3x3,3x3|128,128,64,64,32;3x5,3x5,3x5,3x3,3x3|"
           "128,128,64,64,32;5x5,5x5,3x5,3x3,1x3|512,256,256,128,64;1x3,3x5,3x5,3x3,3x3|"
           "512,256,256,128,64;3x5,3x5,3x5,3x3,3x3|512,256,256,128,64;5x5,5x5,3x5,3x3,1x3|"
           "512,512,512,256,128;1x3,3x5,3x5,3x3,3x3")


def ser(*args: str) -> None:
    cmd = [sys.executable, "-m", "ser", *args]
    print("$ ser " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def confused(run_dir: Path, top: int = 3) -> str:
    m = json.loads((run_dir / "metrics.json").read_text())
    return "; ".join(f"{c['true']}→{c['predicted']} {c['count']}" for c in m["most_confused"][:top])


def markdown(t: pd.DataFrame) -> str:
    cols = list(t.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(rows + ["| " + " | ".join(str(v) for v in r) + " |" for r in t.itertuples(index=False)])


def table(out: Path, name: str) -> pd.DataFrame:
    """A sweep's results.csv with each run's most-confused test pairs."""
    t = pd.read_csv(out / name / "results.csv", dtype=str)
    t["most_confused (test)"] = [confused(out / name / r / "test") for r in t["run"]]
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None, help="featurize the store from here first if it is missing")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--originals", action="store_true", help="train on original clips only (a CPU budget)")
    ap.add_argument("--only", default="cnn1d,cnn2d,classic")
    ap.add_argument("--rows", default=None, help="the cnn2d rows to run, counted from 1 (e.g. 1,2,3) [default: all 7]")
    ap.add_argument("--out", type=Path, default=Path("study-tables"))
    args = ap.parse_args()
    if not args.store.exists():
        if args.data is None:
            raise SystemExit(f"{args.store} does not exist; pass --data to featurize it")
        ser("featurize", "--data", str(args.data), "--out", str(args.store), "--workers", "16", "--no-progress")
    common = ["--store", str(args.store), "--epochs", str(args.epochs), "--patience", str(args.patience),
              "--device", args.device] + (["--variants", "original"] if args.originals else [])
    only, seconds = args.only.split(","), {}
    if "cnn1d" in only:
        t0 = time.perf_counter()
        ser("train", *common, "--model", "cnn1d", "--out", str(args.out / "cnn1d"),
            "--sweep", "optimizer=adam,sgd,rmsprop", "--sweep", "lr=0.01,0.001")
        seconds["cnn1d"] = time.perf_counter() - t0
    if "cnn2d" in only:
        t0 = time.perf_counter()
        rows = ROWS_2D.split("|")
        picked = "|".join(rows[int(k) - 1] for k in args.rows.split(",")) if args.rows else ROWS_2D
        ser("train", *common, "--model", "cnn2d", "--out", str(args.out / "cnn2d"), "--pooling", "flatten",
            "--batch-norm", "--dropout", "0", "--sweep", f"filters+kernels={picked}")
        seconds["cnn2d"] = time.perf_counter() - t0
    if "classic" in only:
        t0 = time.perf_counter()
        base = ["--store", str(args.store), "--device", args.device]
        ser("train", *base, "--model", "svm", "--C", "10", "--out", str(args.out / "classic" / "svm"))
        ser("train", *base, "--model", "logreg", "--C", "0.1", "--out", str(args.out / "classic" / "logreg"))
        for m in ("svm", "logreg"):
            ser("evaluate", "--checkpoint", str(args.out / "classic" / m / "best.pt"),
                "--out", str(args.out / "classic" / m / "test"))
        seconds["classic"] = time.perf_counter() - t0
    lines = [f"epochs {args.epochs}, patience {args.patience}, device {args.device}, "
             f"{'original clips only' if args.originals else 'original and augmented training rows'}"]
    for name in ("cnn1d", "cnn2d"):
        if name in only:
            lines += [f"\n## {name} ({seconds[name] / 60:.1f} min)\n", markdown(table(args.out, name))]
    if "classic" in only:
        rows = []
        for m in ("svm", "logreg"):
            met = json.loads((args.out / "classic" / m / "test" / "metrics.json").read_text())
            rows.append({"model": m, "test_accuracy": round(met["accuracy"], 4), "test_uar": round(met["uar"], 4),
                         "test_macro_f1": round(met["f1_macro"], 4),
                         "most_confused (test)": confused(args.out / "classic" / m / "test")})
        lines += [f"\n## svm, logreg ({seconds['classic'] / 60:.1f} min)\n", markdown(pd.DataFrame(rows))]
    (args.out / "tables.md").write_text("\n".join(lines) + "\n")
    print((args.out / "tables.md").read_text())


if __name__ == "__main__":
    main()
