"""The featurize job: scan, split, then decode → augment → extract in worker processes,
while the parent alone writes the store in batches.

Workers never touch the store; they return arrays. Results come back in plan order, so
the store's row order depends only on the corpus and the arguments, never on scheduling,
and an interrupted run resumes by skipping the clips already committed.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from .audio import load_audio
from .augment import parse_augment, variants
from .errors import AudioError, SerError
from .features import FeatureConfig, descriptor_names, extract
from .labels import label_list
from .splits import SplitConfig, assign_splits


@dataclass(frozen=True)
class FeaturizeConfig:
    """Everything a featurize run needs; what decides the store's content goes in ``run_config``."""

    data: Path
    out: Path
    dataset: str = "auto"
    manifest: Path | None = None
    emotions: tuple[str, ...] | None = None
    augment: tuple[str, ...] = ("noise", "stretch", "shift", "pitch")
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    workers: int = 1
    backend: str = "loky"
    batch_clips: int = 64
    overwrite: bool = False
    allow_absolute: bool = False


@dataclass
class ClipResult:
    """What a worker returns for one clip: its rows, or why it failed."""

    index: int
    descriptors: np.ndarray | None = None   # (variants, D)
    mel: np.ndarray | None = None           # (variants, n_mels, frames)
    augments: list[str] = field(default_factory=list)
    n_frames: list[int] = field(default_factory=list)
    duration_s: float = float("nan")
    error: str | None = None


@dataclass
class FeaturizeSummary:
    store: Path
    n_clips: int
    n_rows: int
    n_failures: int
    n_done_before: int
    seconds: float
    counts: pd.DataFrame


@dataclass
class Plan:
    """The scanned corpus with its split drawn."""

    clips: pd.DataFrame     # corpora.CLIP_COLUMNS + split + label
    skipped: pd.DataFrame   # files found but not usable (path, reason)
    dataset: str
    base: Path              # folder that relative clip paths are relative to
    labels: list[str]


def plan(cfg: FeaturizeConfig) -> Plan:
    """Scan the corpus and draw the split, before any audio is decoded."""
    from .corpora import detect_dataset, scan

    dataset = cfg.dataset
    if dataset == "auto" and cfg.manifest is None:
        dataset = detect_dataset(cfg.data)
    elif cfg.manifest is not None:
        dataset = "manifest"
    result = scan(cfg.data, dataset=dataset, manifest=cfg.manifest, emotions=cfg.emotions,
                  allow_absolute=cfg.allow_absolute)
    clips = result.clips.reset_index(drop=True)
    clips["split"] = assign_splits(clips, cfg.split)
    labels = label_list(clips["emotion"])
    clips["label"] = clips["emotion"].map({e: i for i, e in enumerate(labels)}).astype(np.int64)
    return Plan(clips=clips, skipped=result.skipped, dataset=dataset, base=Path(result.base), labels=labels)


def run_config(cfg: FeaturizeConfig, dataset: str, labels: Sequence[str]) -> dict[str, Any]:
    """The arguments that decide a store's content; a resumed store must match them."""
    return {
        "feature_config": cfg.features.to_dict(),
        "split_config": cfg.split.to_dict(),
        "dataset": dataset,
        "data": str(Path(cfg.data).resolve()),
        "manifest": str(Path(cfg.manifest).resolve()) if cfg.manifest else None,
        # a set, not a sequence: ANG,SAD and SAD,ANG make the same store
        "emotions": label_list(cfg.emotions) if cfg.emotions else None,
        "augment": list(cfg.augment),
        "labels": list(labels),
    }


def _limit_threads() -> Callable[[], None]:
    """One thread per worker for BLAS, OpenMP and torch (no oversubscription); returns a restore."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    limiter = threadpool_limits(limits=1)
    torch.set_num_threads(1)

    def restore() -> None:
        limiter.restore_original_limits()
        torch.set_num_threads(before)

    return restore


def process_clip(index: int, path: str, clip_id: str, split: str, *, features: FeatureConfig,
                 augment: Sequence[str], seed: int) -> ClipResult:
    """Decode one clip, augment it if it is a training clip, extract both feature families."""
    result = ClipResult(index=index)
    try:
        y, result.duration_s = load_audio(path, sr=features.sample_rate, max_seconds=features.max_seconds,
                                          min_samples=features.n_fft // 4)
        names = augment if split == "train" else ()
        descs, mels = [], []
        for name, wave in variants(y, sr=features.sample_rate, clip_id=clip_id, augment=names, seed=seed):
            out = extract(wave, features)
            if not (np.all(np.isfinite(out["descriptors"])) and np.all(np.isfinite(out["mel"]))):
                raise AudioError(f"{path}: features are not finite for variant {name!r}")
            descs.append(out["descriptors"])
            mels.append(out["mel"])
            result.augments.append(name)
            result.n_frames.append(int(out["n_frames"]))
        result.descriptors = np.stack(descs)
        result.mel = np.stack(mels)
    except AudioError as exc:
        result.error = str(exc)
    except Exception as exc:  # one bad file must not end the batch: record it, with its type
        result.error = f"{path}: feature extraction failed ({type(exc).__name__}: {exc})"
    return result


def process_chunk(jobs: list[tuple[int, str, str, str]], *, features: FeatureConfig,
                  augment: Sequence[str], seed: int) -> list[ClipResult]:
    """Worker entry point: a few clips per task, one thread each, to keep overhead small."""
    restore = _limit_threads()
    try:
        return [process_clip(*job, features=features, augment=augment, seed=seed) for job in jobs]
    finally:
        restore()


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _results(jobs: list[tuple[int, str, str, str]], cfg: FeaturizeConfig) -> Iterator[ClipResult]:
    """Results in plan order, computed by ``cfg.workers`` processes (or in-process for one)."""
    kwargs = dict(features=cfg.features, augment=cfg.augment, seed=cfg.split.seed)
    chunk = 4
    if cfg.workers <= 1:
        for part in _chunks(jobs, chunk):
            yield from process_chunk(part, **kwargs)
        return
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend=cfg.backend, n_jobs=cfg.workers):
        try:
            parallel = Parallel(return_as="generator", pre_dispatch="2*n_jobs")
        except ValueError:  # e.g. multiprocessing cannot stream: run one window at a time
            parallel = None
        if parallel is not None:
            for part in parallel(delayed(process_chunk)(p, **kwargs) for p in _chunks(jobs, chunk)):
                yield from part
            return
        window = max(1, cfg.batch_clips // chunk)  # a window is about one write batch
        with Parallel() as pool:
            for parts in _chunks(list(_chunks(jobs, chunk)), window):
                for part in pool(delayed(process_chunk)(p, **kwargs) for p in parts):
                    yield from part


def _rows_meta(clips: pd.DataFrame, results: list[ClipResult]) -> pd.DataFrame:
    records = []
    for r in results:
        clip = clips.loc[r.index]
        for aug, nf in zip(r.augments, r.n_frames):
            rec = {c: clip[c] for c in ("clip_id", "path", "dataset", "speaker", "emotion", "label", "split",
                                         "sentence", "intensity", "sex", "age")}
            rec.update(augment=aug, duration_s=r.duration_s, n_frames=nf)
            records.append(rec)
    return pd.DataFrame.from_records(records)


def featurize(cfg: FeaturizeConfig, *, progress: bool = True,
              log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> FeaturizeSummary:
    """Run (or resume) a featurize job and return what it did."""
    from .store import StoreWriter

    t0 = time.perf_counter()
    out = Path(cfg.out)
    p = plan(cfg)
    clips, skipped, data = p.clips, p.skipped, p.base
    audio_paths = {(data / path).resolve() for path in clips["path"]}
    if out.resolve() in audio_paths:
        raise SerError(f"--out {out} is one of the input audio files; choose another path")
    rc = run_config(cfg, p.dataset, p.labels)
    writer = StoreWriter(out, run_config=rc, descriptor_names=descriptor_names(cfg.features),
                         clip_table=pd.concat([clips, skipped], ignore_index=True), overwrite=cfg.overwrite)
    done = writer.done_clip_ids()
    if not writer.resumed and len(skipped):
        fails = skipped.assign(clip_id=skipped["path"].map(lambda p: str(p)))
        writer.add_failures(fails.loc[:, ["clip_id", "path", "reason"]])
    todo = clips[~clips["clip_id"].isin(done)]
    if writer.resumed:
        log(f"resuming {out}: {len(clips) - len(todo)} of {len(clips)} clips already done")
    jobs = [(int(i), str(data / path), str(c), str(s))  # an absolute path stays itself under "/"
            for i, path, c, s in zip(todo.index, todo["path"], todo["clip_id"], todo["split"])]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(clips), initial=len(clips) - len(todo), unit="clip", desc="featurize",
                   file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    pending: list[ClipResult] = []

    def flush() -> None:
        ok = [r for r in pending if r.error is None]
        bad = [r for r in pending if r.error is not None]
        if ok:
            writer.append(np.concatenate([r.descriptors for r in ok]), np.concatenate([r.mel for r in ok]),
                          _rows_meta(clips, ok))
        if bad:
            writer.add_failures(pd.DataFrame({
                "clip_id": [clips.loc[r.index, "clip_id"] for r in bad],
                "path": [clips.loc[r.index, "path"] for r in bad],
                "reason": [r.error for r in bad],
            }))
        pending.clear()

    try:
        for result in _results(jobs, cfg):
            pending.append(result)
            if bar is not None:
                bar.update(1)
            if len(pending) >= cfg.batch_clips:
                flush()
        flush()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        log(f"\ninterrupted: {writer.n_rows} rows are safely in {out}; "
            "run the same command again to resume")
        raise
    finally:
        if bar is not None:
            bar.close()
    writer.finish()
    from .store import Store

    store = Store(out)
    meta = store.meta()
    n_fail = len(store.failures())
    counts = meta.groupby(["split", "augment"]).size().unstack(fill_value=0) if len(meta) else pd.DataFrame()
    return FeaturizeSummary(store=out, n_clips=len(clips), n_rows=len(meta), n_failures=n_fail,
                            n_done_before=len(clips) - len(todo), seconds=time.perf_counter() - t0, counts=counts)
