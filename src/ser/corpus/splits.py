"""Clip-level and speaker-level train/val/test splits, drawn before any augmentation.

The study's protocol, done honestly: 70% train / 30% test stratified by emotion with seed 42,
then 5% of train to validation, stratified, same seed. ``method="speaker"`` draws the same
proportions over speakers, so no speaker is in two splits.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import SerError

SPLITS = ("train", "val", "test")
METHODS = ("random", "speaker")


@dataclass(frozen=True)
class SplitConfig:
    """How clips are split; saved in the store."""

    method: str = "random"
    test_size: float = 0.3
    val_size: float = 0.05
    seed: int = 42

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SerError(f"split method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 <= self.test_size <= 1.0:
            raise SerError(f"test size must be in [0, 1], got {self.test_size}")
        if not 0.0 <= self.val_size < 1.0:
            raise SerError(f"validation size must be in [0, 1), got {self.val_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _stratified(labels: np.ndarray, size: float, seed: int) -> np.ndarray:
    """Boolean mask of the ``size`` fraction held out, stratified by ``labels`` when possible."""
    n = labels.shape[0]
    if size <= 0.0 or n == 0:
        return np.zeros(n, dtype=bool)
    if size >= 1.0:
        return np.ones(n, dtype=bool)
    from sklearn.model_selection import train_test_split  # only here: importing sklearn takes ~1.5 s

    idx = np.arange(n)
    try:
        _, held = train_test_split(idx, test_size=size, random_state=seed, stratify=labels)
    except ValueError as exc:  # a class too small to stratify (tiny corpora only)
        warnings.warn(f"split not stratified: {exc}", stacklevel=3)
        try:
            _, held = train_test_split(idx, test_size=size, random_state=seed)
        except ValueError:  # so few clips that holding any out would leave none: keep them all
            return np.zeros(n, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return mask


def _random_split(clips: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    emotions = clips["emotion"].to_numpy()
    split = np.full(len(clips), "train", dtype=object)
    test = _stratified(emotions, cfg.test_size, cfg.seed)
    split[test] = "test"
    train_idx = np.flatnonzero(~test)
    val = _stratified(emotions[train_idx], cfg.val_size, cfg.seed)
    split[train_idx[val]] = "val"
    return split


def _count(n: int, size: float, *, at_least_one: bool) -> int:
    k = int(round(size * n))
    if at_least_one and size > 0.0 and n > 1:
        k = max(k, 1)
    return min(k, n)


def _unknown_speakers(clips: pd.DataFrame, unknown: pd.Series) -> SerError:
    """The refusal of a speaker split over clips without a speaker, naming the fix."""
    column = "path" if "path" in clips.columns else "clip_id"
    example = f" (e.g. {clips.loc[unknown, column].iloc[0]})" if column in clips.columns else ""
    return SerError(
        f"--split speaker needs a speaker for every clip; {int(unknown.sum())} of {len(clips)} "
        f"clip(s) have none{example}. For emotion-named folders (--dataset folders), give "
        "--speaker-regex: a regex on the file name whose first group, or group (?P<speaker>...), "
        "is the speaker (e.g. --speaker-regex '^([A-Za-z]+\\d+)_'); or list speakers in a "
        "manifest's speaker column, or use --split random"
    )


def _speaker_split(clips: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    speakers = clips["speaker"].astype(str)
    if (speakers == "").any():
        raise _unknown_speakers(clips, speakers == "")
    unique = np.array(sorted(speakers.unique()))
    order = np.random.default_rng(cfg.seed).permutation(unique.shape[0])
    shuffled = unique[order]
    n_test = _count(len(shuffled), cfg.test_size, at_least_one=cfg.test_size < 1.0)
    if cfg.test_size < 1.0:
        n_test = min(n_test, len(shuffled) - 1)  # keep at least one training speaker
    test_spk = set(shuffled[:n_test])
    rest = shuffled[n_test:]
    n_val = _count(len(rest), cfg.val_size, at_least_one=True)
    if n_val >= len(rest):
        n_val = max(0, len(rest) - 1)
    val_spk = set(rest[:n_val])
    split = np.full(len(clips), "train", dtype=object)
    split[speakers.isin(test_spk).to_numpy()] = "test"
    split[speakers.isin(val_spk).to_numpy()] = "val"
    return split


def assign_splits(clips: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """The split (``train``/``val``/``test``) of every clip, aligned with ``clips``' index.

    Depends only on the clip table's order and content and on ``cfg``: the same corpus and
    seed always give the same split.
    """
    if len(clips) == 0:
        raise SerError("cannot split an empty clip table")
    values = _random_split(clips, cfg) if cfg.method == "random" else _speaker_split(clips, cfg)
    return pd.Series(values, index=clips.index, name="split", dtype=object)
