"""What a featurize worker does: set itself up once, then for each task decode, augment and
extract its clips and write them to a part of its own (:func:`run_task`).

A task is a few dozen clips, in plan order; its part is written by the worker itself,
fsynced, and only a small receipt goes back to the parent, which commits parts in plan order
and merges them at the end (:mod:`ser.store.writer`). The parent never handles a mel row.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ser.audio.augment import variants
from ser.audio.decode import load_audio
from ser.errors import AudioError
from ser.features.config import FeatureConfig
from ser.features.extractor import extract_variants
from ser.store.layout import CLIP_COLUMNS, FAILURE_COLUMNS
from ser.store.parts import PartData, PartSpec, Receipt, write_part


@dataclass(frozen=True)
class Task:
    """A run of clips in plan order: ``clips`` has the clip table's meta columns
    (:data:`~ser.store.layout.CLIP_COLUMNS`) and ``source``, each file's path to open; ``seq`` is
    its part's number."""

    seq: int
    clips: pd.DataFrame


@dataclass(frozen=True)
class TaskConfig:
    """What every task of a run shares."""

    features: FeatureConfig
    augment: tuple[str, ...]
    seed: int


@dataclass
class ClipResult:
    """One clip's rows, or why it failed."""

    descriptors: np.ndarray | None = None   # (variants, D)
    mel: np.ndarray | None = None           # (variants, n_mels, frames)
    augments: list[str] = field(default_factory=list)
    n_frames: list[int] = field(default_factory=list)
    duration_s: float = float("nan")
    error: str | None = None


def limit_threads() -> Callable[[], None]:
    """One thread for BLAS and OpenMP (and torch, if something imported it): no oversubscription.

    Returns a function that restores the previous limits.
    """
    from threadpoolctl import threadpool_limits

    # load the feature path's libraries first: threadpoolctl limits only the thread pools already
    # loaded, and scipy brings an OpenBLAS of its own whose idle threads otherwise spin
    import scipy.fft  # noqa: F401
    import scipy.sparse  # noqa: F401

    torch = sys.modules.get("torch")  # the feature path never imports it: torch costs seconds to load
    before = torch.get_num_threads() if torch is not None else None
    limiter = threadpool_limits(limits=1)
    if torch is not None:
        torch.set_num_threads(1)

    def restore() -> None:
        limiter.restore_original_limits()
        if torch is not None:
            torch.set_num_threads(before)

    return restore


def tune_malloc() -> None:
    """Let glibc reuse freed memory instead of mapping fresh pages for every large array.

    Each clip allocates a few MB of short-lived arrays of varying sizes; by default every one
    above the mmap threshold is a new mapping whose pages fault in on first touch, which in a
    VM costs as much as the maths (the phase vocoder ran twice as fast with this). Process-
    wide and idempotent; freed memory up to ``M_TRIM_THRESHOLD`` stays with the process. A
    no-op where there is no glibc ``mallopt``.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)
    mallopt(m_top_pad, 16 << 20)


_SET_UP_PID: int | None = None


def _set_up_worker() -> None:
    """Once per worker process: one thread, malloc tuned for reuse. A worker serves many tasks,
    and threadpoolctl's scan of the loaded libraries costs ~3 ms, so it runs on the first only.
    (With one worker the parent runs the tasks itself, and limits its threads for the run alone.)"""
    global _SET_UP_PID
    if _SET_UP_PID != os.getpid():
        limit_threads()
        tune_malloc()
        _SET_UP_PID = os.getpid()


def process_clip(path: str, clip_id: str, split: str, cfg: TaskConfig) -> ClipResult:
    """Decode one clip, augment it if it is a training clip, extract both feature families."""
    result = ClipResult()
    features = cfg.features
    try:
        y, result.duration_s = load_audio(path, sr=features.sample_rate, max_seconds=features.max_seconds,
                                          min_samples=features.n_fft // 4)
        names = cfg.augment if split == "train" else ()
        waves = variants(y, sr=features.sample_rate, clip_id=clip_id, augment=names, seed=cfg.seed)
        out = extract_variants(waves, features)
        finite = np.isfinite(out["descriptors"]).all(axis=1) & np.isfinite(out["mel"]).all(axis=(1, 2))
        if not finite.all():
            bad = waves[int(np.argmin(finite))].name
            raise AudioError(f"{path}: features are not finite for variant {bad!r}")
        result.descriptors = out["descriptors"]
        result.mel = out["mel"]
        result.augments = [v.name for v in waves]
        result.n_frames = [int(n) for n in out["n_frames"]]
    except AudioError as exc:
        result.error = str(exc)
    except Exception as exc:  # one bad file must not end the task: record it, with its type
        result.error = f"{path}: feature extraction failed ({type(exc).__name__}: {exc})"
    return result


def part_data(clips: pd.DataFrame, results: Sequence[ClipResult], spec: PartSpec) -> PartData:
    """A task's rows as a part holds them: each clip's meta repeated per variant, then the
    variant's own columns; failed clips as failures."""
    ok = [i for i, r in enumerate(results) if r.error is None]
    bad = [i for i, r in enumerate(results) if r.error is not None]
    counts = np.array([len(results[i].augments) for i in ok], dtype=np.int64)
    meta = clips.iloc[np.repeat(np.array(ok, dtype=np.int64), counts)][list(CLIP_COLUMNS)].reset_index(drop=True)
    meta["augment"] = [a for i in ok for a in results[i].augments]
    meta["duration_s"] = np.repeat(np.array([results[i].duration_s for i in ok], dtype=np.float64), counts)
    meta["n_frames"] = np.array([n for i in ok for n in results[i].n_frames], dtype=np.int64)
    failures = pd.DataFrame({"clip_id": clips["clip_id"].iloc[bad].tolist(), "path": clips["path"].iloc[bad].tolist(),
                             "reason": [results[i].error for i in bad]}, columns=list(FAILURE_COLUMNS))
    if not ok:
        return PartData.only_failures(failures, spec)
    return PartData(np.concatenate([results[i].descriptors for i in ok]),
                    np.concatenate([results[i].mel for i in ok]), meta, failures)


def worker_task(task: Task, spec: PartSpec, cfg: TaskConfig) -> Receipt:
    """A pool worker's entry point: :func:`run_task`, the process set up on its first task."""
    _set_up_worker()
    return run_task(task, spec, cfg)


def run_task(task: Task, spec: PartSpec, cfg: TaskConfig) -> Receipt:
    """Featurize ``task``'s clips and write its part where the work folder is visible from here
    (the parent then only renames it); else return the rows themselves, and the parent writes
    the same part (a remote cluster's worker)."""
    clips = task.clips
    results = [process_clip(src, clip_id, split, cfg)
               for src, clip_id, split in zip(clips["source"], clips["clip_id"], clips["split"])]
    data = part_data(clips, results, spec)
    receipt = dict(seq=task.seq, n_rows=data.n_rows, n_failures=len(data.failures), n_clips=len(clips))
    if spec.work is not None and Path(spec.work).is_dir():
        path = spec.tmp_path(task.seq)
        return Receipt(**receipt, path=path, tables=write_part(path, spec, task.seq, data))
    return Receipt(**receipt, data=data)
