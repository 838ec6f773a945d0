"""The classic anchor on ser's own folds: openSMILE ComParE-2016 functionals + RBF SVM.

Each original clip of a store (``featurize --split speaker --test-size 0``, read from its
``meta``) gets the 6,373 ComParE-2016 functionals from the ``opensmile`` package, computed on
the audio file as the corpus ships it. The folds are ``ser crossval``'s own
(:func:`ser.experiments.crossval.speaker_folds` over the store's speakers, the same seed), so
the figures sit on the same row as every model's ``ser crossval --folds 5``. Two settings:

- per-speaker standardisation (each speaker by their own clips, no labels; as ``--speaker-norm``
  does for ser's descriptors), RBF SVM C=10: the anchor the CREMA-D issue names;
- global standardisation fitted on each fold's training clips, RBF SVM C=10.

Needs ``pip install opensmile`` (not a dependency of ser). The functionals are cached in
``--cache`` (an .npz), so a rerun only refits.

    flock /tmp/ser-bench.lock python benchmarks/compare_anchor.py --store dev.h5 \\
        --data ../shared/data/cremad/AudioWAV [--folds 5] [--cache compare.npz] [--out compare-cv]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _functionals(paths: list[str]) -> np.ndarray:
    import opensmile
    import soundfile as sf

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016,
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = []
    for p in paths:
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        rows.append(smile.process_signal(x.mean(axis=1), sr).to_numpy()[0])
    return np.asarray(rows, dtype=np.float32)


def extract(paths: list[str], workers: int) -> tuple[np.ndarray, float]:
    """ComParE functionals of ``paths`` in order, over ``workers`` processes, and the seconds taken."""
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    parts = np.array_split(np.arange(len(paths)), max(1, workers * 8))
    out = Parallel(n_jobs=workers)(delayed(_functionals)([paths[i] for i in part]) for part in parts if len(part))
    return np.concatenate(out), time.perf_counter() - t0


def evaluate_folds(x: np.ndarray, y: np.ndarray, speakers: np.ndarray, groups: list[list[str]], labels: list[str],
                   *, speaker_norm: bool, c: float) -> tuple[dict, np.ndarray]:
    """Pooled metrics over the folds and the out-of-fold decision scores (one-vs-rest)."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from ser.evaluation.metrics import compute_metrics
    from ser.training.speakers import speaker_statistics, standardize

    if speaker_norm:
        x = standardize(x, speakers, speaker_statistics(x, speakers))
    x = np.nan_to_num(x)
    proba = np.zeros((len(y), len(labels)))
    folds = []
    for k, test in enumerate(groups, 1):
        held = np.isin(speakers, test)
        scaler = StandardScaler().fit(x[~held])
        svm = SVC(C=c, gamma="scale", decision_function_shape="ovr")
        svm.fit(scaler.transform(x[~held]), y[~held])
        proba[np.ix_(held, svm.classes_)] = svm.decision_function(scaler.transform(x[held]))
        pred = proba[held].argmax(1)
        m = compute_metrics(y[held], pred, labels)
        folds.append({"fold": k, "n": m["n"], "accuracy": m["accuracy"], "uar": m["uar"], "f1_macro": m["f1_macro"]})
        print(f"  fold {k}: UAR {m['uar']:.4f} accuracy {m['accuracy']:.4f}", flush=True)
    pooled = compute_metrics(y, proba.argmax(1), labels)
    uars = np.array([f["uar"] for f in folds])
    return {"pooled_uar": pooled["uar"], "pooled_accuracy": pooled["accuracy"], "pooled_f1_macro": pooled["f1_macro"],
            "fold_uar_mean": float(uars.mean()), "fold_uar_std": float(uars.std()), "folds": folds,
            "most_confused": pooled["most_confused"][:5]}, proba


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="the audio folder the store was featurized from")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42, help="crossval's --seed (the folds')")
    ap.add_argument("--C", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("compare.npz"))
    ap.add_argument("--out", type=Path, default=Path("compare-cv"))
    ap.add_argument("--settings", default="per-speaker,global", help="which standardisations to run")
    args = ap.parse_args()

    from ser.experiments.crossval import speaker_folds
    from ser.store import Store

    store = Store(args.store)
    meta = store.meta()
    labels = list(store.labels)
    orig = meta[meta["augment"] == "none"].sort_index()
    groups = speaker_folds(meta["speaker"].astype(str), args.folds, args.seed)
    if args.cache.exists() and list(np.load(args.cache, allow_pickle=False)["clip_id"]) == list(orig["clip_id"]):
        x, seconds = np.load(args.cache)["x"], float(np.load(args.cache)["seconds"])
        print(f"functionals from {args.cache} (extracted in {seconds:.0f} s)")
    else:
        x, seconds = extract([str(args.data / p) for p in orig["path"]], args.workers)
        np.savez(args.cache, x=x, clip_id=orig["clip_id"].to_numpy().astype(str), seconds=seconds)
        print(f"extracted {x.shape[1]} ComParE-2016 functionals of {len(x)} clips in {seconds:.0f} s "
              f"with {args.workers} processes")
    y = orig["emotion"].map({e: i for i, e in enumerate(labels)}).to_numpy()
    speakers = orig["speaker"].astype(str).to_numpy()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"store": str(args.store), "clips": len(orig), "folds": args.folds, "seed": args.seed,
               "extract_seconds": seconds, "settings": {}}
    for name, norm in (("per-speaker", True), ("global", False)):
        if name not in args.settings.split(","):
            continue
        print(f"ComParE-2016 + RBF SVM (C={args.C}), {name} standardisation:")
        t0 = time.perf_counter()
        res, proba = evaluate_folds(x, y, speakers, groups, labels, speaker_norm=norm, c=args.C)
        res["fit_seconds"] = time.perf_counter() - t0
        results["settings"][name] = res
        print(f"  pooled UAR {res['pooled_uar']:.4f}, accuracy {res['pooled_accuracy']:.4f}, macro-F1 "
              f"{res['pooled_f1_macro']:.4f}; fold UAR {res['fold_uar_mean']:.4f} ± {res['fold_uar_std']:.4f} "
              f"({res['fit_seconds']:.0f} s)")
        cols = {f"score_{e}": proba[:, i] for i, e in enumerate(labels)}
        import pandas as pd

        pd.DataFrame({"clip_id": orig["clip_id"].to_numpy(), "emotion": orig["emotion"].to_numpy(), **cols}).to_csv(
            args.out / f"scores-{name}.csv", index=False)
        (args.out / "metrics.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out / 'metrics.json'}")


if __name__ == "__main__":
    main()
