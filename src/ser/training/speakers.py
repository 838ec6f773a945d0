"""Per-speaker standardisation: each speaker's features centred and scaled by that speaker's
own statistics, the common remedy for speaker variability in speaker-independent SER.

The statistics of a speaker come from that speaker's original clips only (never augmented
copies, never labels), so using them for a test speaker is unsupervised adaptation: it needs
several clips of the speaker, not their emotions. Checkpoints trained this way say so, and
evaluate and predict apply the same transform.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ser.errors import SerError

#: Fewer original clips than this and a speaker's statistics are too noisy to use.
MIN_CLIPS = 5


def speaker_statistics(x: np.ndarray, speakers: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and std per speaker over the rows given (pass original rows only).

    ``x``: ``(rows, D)`` descriptors or ``(rows, n_mels, frames)`` mel-dB; statistics are per
    descriptor (``(D,)``) or per mel band (``(n_mels, 1)``, pooled over frames).
    """
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    speakers = np.asarray(speakers).astype(str)
    for spk in np.unique(speakers):
        rows = x[speakers == spk].astype(np.float64)
        if rows.shape[0] < MIN_CLIPS:
            raise SerError(f"speaker {spk!r} has {rows.shape[0]} original clip(s); per-speaker "
                           f"normalisation needs at least {MIN_CLIPS}")
        if rows.ndim == 2:
            mean, std = rows.mean(0), rows.std(0)
        else:
            mean, std = rows.mean(axis=(0, 2))[:, None], rows.std(axis=(0, 2))[:, None]
        stats[spk] = (mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))
    return stats


def standardize(x: np.ndarray, speakers: np.ndarray,
                stats: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``(x - mean[speaker]) / std[speaker]`` row by row; a new float32 array."""
    speakers = np.asarray(speakers).astype(str)
    missing = sorted(set(speakers) - set(stats))
    if missing:
        raise SerError(f"no per-speaker statistics for speaker(s) {', '.join(missing[:5])}")
    out = np.empty_like(x, dtype=np.float32)
    for spk in np.unique(speakers):
        sel = speakers == spk
        mean, std = stats[spk]
        out[sel] = (x[sel] - mean) / std
    return out


def store_statistics(meta: pd.DataFrame, read) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-speaker statistics of a store's originals; ``read(rows)`` returns their features."""
    orig = meta.index[(meta["augment"] == "none").to_numpy()].to_numpy()
    return speaker_statistics(read(orig), meta.loc[orig, "speaker"].to_numpy())


def store_transform(store, family: str):
    """A loader transform ``(x, rows) -> x`` standardising each row by its speaker's statistics,
    computed from every speaker's original rows in ``store`` (all splits: a test speaker's own
    clips, never their labels)."""
    meta = store.meta()
    stats = store_statistics(meta, lambda rows: store.read(family, rows))
    speaker_of = meta["speaker"].astype(str)

    def transform(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return standardize(x, speaker_of.loc[rows].to_numpy(), stats)

    return transform
