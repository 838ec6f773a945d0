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

#: How mel rows are standardised, recorded in every checkpoint: 2 leaves each clip's padding out
#: of its speaker's statistics and zeroes it; checkpoints without it counted the padding (1).
MEL_METHOD = 2


def frame_mask(n_frames: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """``(rows, 1, frames)`` True on each mel row's own frames (the first ``n_frames``, at least
    one, at most the stored width), False on its padding; None for descriptors or no counts."""
    if n_frames is None or len(shape) != 3:
        return None
    own = np.clip(np.asarray(n_frames, dtype=np.int64), 1, shape[2])
    return (np.arange(shape[2])[None, :] < own[:, None])[:, None, :]


def speaker_statistics(x: np.ndarray, speakers: np.ndarray,
                       n_frames: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and std per speaker over the rows given (pass original rows only).

    ``x``: ``(rows, D)`` descriptors or ``(rows, n_mels, frames)`` mel-dB; statistics are per
    descriptor (``(D,)``) or per mel band (``(n_mels, 1)``, pooled over frames). ``n_frames``
    (mel only): each row's own frame count, so that the padding (the clip's dB floor, which would
    inflate every band's std) is left out of the statistics.
    """
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    speakers = np.asarray(speakers).astype(str)
    mask = frame_mask(n_frames, x.shape)
    for spk in np.unique(speakers):
        sel = speakers == spk
        rows = x[sel].astype(np.float64)
        if rows.shape[0] < MIN_CLIPS:
            raise SerError(f"speaker {spk!r} has {rows.shape[0]} original clip(s); per-speaker "
                           f"normalisation needs at least {MIN_CLIPS}")
        if rows.ndim == 2:
            mean, std = rows.mean(0), rows.std(0)
        else:
            own = np.ones((rows.shape[0], 1, rows.shape[2]), bool) if mask is None else mask[sel]
            count = own.sum()
            mean = (rows * own).sum(axis=(0, 2)) / count
            var = (((rows - mean[None, :, None]) ** 2) * own).sum(axis=(0, 2)) / count
            mean, std = mean[:, None], np.sqrt(var)[:, None]
        stats[spk] = (mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))
    return stats


def standardize(x: np.ndarray, speakers: np.ndarray, stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
                n_frames: np.ndarray | None = None) -> np.ndarray:
    """``(x - mean[speaker]) / std[speaker]`` row by row; a new float32 array. With ``n_frames``
    (mel), each row's padding frames become 0, the speaker's mean, so padding reads as silence
    of no particular band rather than as a loud negative floor."""
    speakers = np.asarray(speakers).astype(str)
    missing = sorted(set(speakers) - set(stats))
    if missing:
        raise SerError(f"no per-speaker statistics for speaker(s) {', '.join(missing[:5])}")
    out = np.empty_like(x, dtype=np.float32)
    for spk in np.unique(speakers):
        sel = speakers == spk
        mean, std = stats[spk]
        out[sel] = (x[sel] - mean) / std
    mask = frame_mask(n_frames, x.shape)
    if mask is not None:
        out *= mask
    return out


def _own_frames(meta: pd.DataFrame, rows: np.ndarray, family: str) -> np.ndarray | None:
    """The rows' own frame counts for the mel family (None for descriptors, or an old store)."""
    if family != "mel" or "n_frames" not in meta:
        return None
    return meta.loc[rows, "n_frames"].to_numpy(dtype=np.int64)


def store_statistics(meta: pd.DataFrame, read, family: str = "descriptors") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-speaker statistics of a store's originals; ``read(rows)`` returns their features."""
    orig = meta.index[(meta["augment"] == "none").to_numpy()].to_numpy()
    return speaker_statistics(read(orig), meta.loc[orig, "speaker"].to_numpy(), _own_frames(meta, orig, family))


def store_transform(store, family: str):
    """A loader transform ``(x, rows) -> x`` standardising each row by its speaker's statistics,
    computed from every speaker's original rows in ``store`` (all splits: a test speaker's own
    clips, never their labels); mel padding is left out of the statistics and zeroed."""
    meta = store.meta()
    stats = store_statistics(meta, lambda rows: store.read(family, rows), family)
    speaker_of = meta["speaker"].astype(str)

    def transform(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return standardize(x, speaker_of.loc[rows].to_numpy(), stats, _own_frames(meta, rows, family))

    return transform
