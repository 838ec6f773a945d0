"""Stores of synthetic feature arrays written straight through StoreWriter (no audio), for
testing training and evaluation fast. Classes are separable by construction."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ser.features.config import FeatureConfig, descriptor_names
from ser.corpus.splits import SplitConfig
from ser.store import StoreWriter
from ser.store.parts import PartData

LABELS = ["ANG", "HAP", "SAD"]


def make_array_store(path: Path, *, per_class: int = 30, seed: int = 0, n_mels: int = 16,
                     max_seconds: float = 0.5, separation: float = 3.0,
                     splits: tuple[float, float] = (0.6, 0.2), copies: int = 0,
                     emotions: Sequence[str] = tuple(LABELS)) -> Path:
    """A complete store: descriptors and mel whose class means differ by ``separation`` std.

    ``copies`` > 0 gives each training clip that many augmented rows after its original (the
    same clip_id, ``augment`` "copy1".., the features re-drawn around the same class mean).
    ``emotions``: the store's emotion codes (the class means depend on the seed and their number)."""
    codes = list(emotions)
    rng = np.random.default_rng(seed)
    fc = FeatureConfig(n_mels=n_mels, max_seconds=max_seconds)
    names = descriptor_names(fc)
    n = per_class * len(codes)
    labels = np.repeat(np.arange(len(codes)), per_class)
    centres = rng.standard_normal((len(codes), len(names))) * separation
    desc = (centres[labels] + rng.standard_normal((n, len(names)))).astype(np.float32)
    mel_centres = rng.standard_normal((len(codes), n_mels, 1)) * separation
    mel = (mel_centres[labels] + rng.standard_normal((n, n_mels, fc.n_frames))).astype(np.float32) - 40.0
    u = rng.permutation(n) / n
    split = np.where(u < splits[0], "train", np.where(u < splits[0] + splits[1], "val", "test"))
    meta = pd.DataFrame({
        "clip_id": [f"c{i:04d}" for i in range(n)], "path": [f"c{i:04d}.wav" for i in range(n)],
        "dataset": "synthetic", "speaker": [f"s{i % 5}" for i in range(n)],
        "emotion": [codes[k] for k in labels], "label": labels.astype(np.int64), "split": split,
        "augment": "none", "duration_s": max_seconds, "n_frames": fc.n_frames, "sentence": "",
        "intensity": "", "sex": "", "age": np.nan,
    })
    if copies:
        desc, mel, meta = _with_copies(desc, mel, meta, copies, rng)
    run_config = {"feature_config": fc.to_dict(), "split_config": SplitConfig().to_dict(),
                  "dataset": "synthetic", "data": str(path.parent), "manifest": None, "emotions": None,
                  "augment": [], "labels": codes}
    with StoreWriter(path, run_config=run_config, descriptor_names=names, overwrite=True) as w:
        w.write(PartData(desc, mel, meta))
        w.finish()
    return path


def _with_copies(desc: np.ndarray, mel: np.ndarray, meta: pd.DataFrame, copies: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Each train clip's rows followed by ``copies`` noisy copies of it, in clip order."""
    rows, descs, mels, metas = [], [], [], []
    for i in range(len(meta)):
        k = 1 + (copies if meta["split"].iat[i] == "train" else 0)
        descs.append(desc[i] + 0.3 * rng.standard_normal((k,) + desc.shape[1:]) * (np.arange(k) > 0)[:, None])
        mels.append(mel[i] + 0.3 * rng.standard_normal((k,) + mel.shape[1:]) * (np.arange(k) > 0)[:, None, None])
        part = meta.iloc[[i] * k].copy()
        part["augment"] = ["none"] + [f"copy{j}" for j in range(1, k)]
        metas.append(part)
    return (np.concatenate(descs).astype(np.float32), np.concatenate(mels).astype(np.float32),
            pd.concat(metas, ignore_index=True))


def tiny_rows(start: int, k: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``k`` rows of clips ``clip<start>``.. for the store's own tests: descriptors ``(k, 2)``,
    mel ``(k, 4, 3)`` (random, seeded by ``start``) and their meta."""
    rng = np.random.default_rng(start)
    desc = rng.standard_normal((k, 2)).astype(np.float32)
    mel = rng.standard_normal((k, 4, 3)).astype(np.float32)
    meta = pd.DataFrame({
        "clip_id": [f"clip{i}" for i in range(start, start + k)],
        "path": [f"clip{i}.wav" for i in range(start, start + k)],
        "dataset": "cremad", "speaker": "1001", "emotion": "ANG", "label": 0, "split": "train",
        "augment": "none", "duration_s": 0.1, "n_frames": 3, "sentence": "DFA", "intensity": "XX",
        "sex": "Male", "age": 30.0,
    })
    return desc, mel, meta
