"""How `--preset compare-tdnn`'s fusion settings were chosen: an inner validation split.

Fold 1 of ``ser crossval --folds 5`` (seed 42) holds out 12 actors; of the other 45, nine
(drawn with seed 0) are validation actors and 36 train ``compare`` and ``tdnn`` as their presets
say. Fold 1's test actors are never read. On the validation actors' original clips the script
prints the UAR of each model and of their late fusion ``w * p_svm + (1 - w) * p_tdnn``, with the
SVM's probabilities taken two ways: the softmax of its votes (``SVC.decision_function``, the
``scores="votes"`` default) and the softmax of its summed pairwise confidences over a
temperature T (``scores="confidence"``). The preset takes T=2, w=0.6 (0.735; T=4 with w=0.8
ties at 0.735, on the ridge along which a flatter SVM needs more weight: the smaller temperature
was taken). The 45 actors include the other four folds' test actors, as any inner split of fold
1 does.

    flock /tmp/ser-bench.lock python benchmarks/fusion_validation.py --store cremad.h5 --out runs/fusion-val
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

WEIGHTS = np.round(np.arange(0.2, 0.81, 0.05), 2)
TEMPERATURES = (0.5, 1.0, 2.0, 3.0, 4.0)


def _train(store, sub, name: str, val: list[str], out: Path):
    """Train preset ``name`` on ``sub``'s rows but the ``val`` actors'; return (model, validation data)."""
    from ser.experiments.crossval import _Folds, _fold
    from ser.experiments.presets import preset_config
    from ser.training.checkpoint import load_checkpoint
    from ser.training.data import load_rows
    from ser.training.device import pick_device
    from ser.training.models import get_spec
    from ser.training.speakers import store_transform

    cfg, dev = preset_config(name), pick_device("cpu")
    family = get_spec(cfg.model).family
    transform = store_transform(store, family) if cfg.speaker_norm else None
    if not (out / name / "fold1" / "last.pt").exists():
        folds = _Folds(store, sub, cfg, family, dev, transform, True, out / name)
        _fold(folds, 1, val, 1, log=lambda m: print(m, file=sys.stderr), after_fold=None)
    held = sub["speaker"].astype(str).isin(val).to_numpy() & (sub["augment"] == "none").to_numpy()
    data = load_rows(store, sub.index[held].to_numpy(), family, dev, transform=transform)
    return load_checkpoint(out / name / "fold1" / "last.pt").model.eval(), data


def _outputs(model, data) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        pairs = [(model(x), y) for x, y in data.batches(512, shuffle=False)]
    return torch.cat([p for p, _ in pairs]).numpy(), torch.cat([y for _, y in pairs]).numpy()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main() -> None:
    from sklearn.metrics import recall_score

    from ser.experiments.crossval import speaker_folds
    from ser.store import Store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="featurized with compare-tdnn's features")
    ap.add_argument("--out", type=Path, default=Path("runs/fusion-val"))
    args = ap.parse_args()
    store = Store(args.store)
    meta = store.meta()
    speakers = meta["speaker"].astype(str)
    fold1 = speaker_folds(speakers, 5, 42)[0]
    inner = sorted(set(speakers) - set(fold1))
    val = sorted(np.random.default_rng(0).choice(inner, 9, replace=False).tolist())
    print(f"validation actors: {' '.join(val)} (fold 1's {len(inner)} training actors, {len(fold1)} held out)")
    sub = meta[~speakers.isin(fold1)]
    svm, svm_data = _train(store, sub, "compare", val, args.out)
    tdnn, tdnn_data = _train(store, sub, "tdnn", val, args.out)
    logits, y = _outputs(tdnn, tdnn_data)
    p_tdnn = _softmax(logits)
    votes, _ = _outputs(svm, svm_data)
    svm.body.scores, svm.body.temperature = "confidence", 1.0
    conf, y_svm = _outputs(svm, svm_data)
    assert np.array_equal(y, y_svm), "the two models' validation rows differ"

    def uar(p: np.ndarray) -> float:
        return recall_score(y, p.argmax(1), average="macro")

    print(f"UAR alone: svm {uar(votes):.4f} (votes), {uar(conf):.4f} (confidence); tdnn {uar(p_tdnn):.4f}")
    print("fused UAR by the svm's weight w:  " + "  ".join(f"{w:.2f}" for w in WEIGHTS))
    rows = [("votes", _softmax(votes))] + [(f"confidence, T={t:g}", _softmax(conf / t)) for t in TEMPERATURES]
    for name, p_svm in rows:
        print(f"{name:>20}: " + "  ".join(f"{uar(w * p_svm + (1 - w) * p_tdnn):.3f}" for w in WEIGHTS))


if __name__ == "__main__":
    main()
