"""The featurize job: scan, split, then tasks of a few dozen clips, each decoded, augmented,
extracted and written to a part of its own by a worker (:mod:`ser.featurize.worker`); the
parent commits the parts in plan order and merges them into the store (:mod:`ser.store`).

Results come back in plan order, so the store's row order depends only on the corpus and the
arguments, never on scheduling, and an interrupted run resumes by skipping the clips already
committed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ser.corpus.labels import label_list
from ser.corpus.splits import SplitConfig, assign_splits
from ser.errors import SerError, StoreError
from ser.features.config import FeatureConfig, descriptor_names
from ser.featurize.worker import Task, TaskConfig, limit_threads, run_task, tune_malloc, worker_task
from ser.store.layout import CLIP_COLUMNS, FAILURE_COLUMNS
from ser.store.parts import PartData, PartSpec, Receipt

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
    backend: str = "loky"             # joblib backend: loky, multiprocessing, threading, dask, ray
    scheduler: str | None = None      # dask scheduler / ray cluster address (None: start a local one)
    # clips per task at most (fewer where the corpus is small: see make_tasks); a part costs the
    # parent a rename and, at the end, a copy of its chunks, which vanish beside a few dozen clips' work
    task_clips: int = 32
    min_clips_per_worker: int = 100   # a local pool gets no more workers than clips / this (see pool_size)
    overwrite: bool = False
    allow_absolute: bool = False
    speaker_regex: str | None = None  # folders layout: regex on the file stem, group 1 / "speaker"
    demographics: Path | None = None  # CREMA-D: VideoDemographics.csv when not beside the audio


@dataclass
class FeaturizeSummary:
    store: Path
    n_clips: int
    n_rows: int
    n_failures: int
    n_done_before: int
    seconds: float
    counts: pd.DataFrame
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["clip_id", "path", "reason"]))


@dataclass
class Plan:
    """The scanned corpus with its split drawn."""

    clips: pd.DataFrame     # ser.corpus.scan.CLIP_COLUMNS + split + label
    skipped: pd.DataFrame   # files found but not usable (path, reason)
    dataset: str
    base: Path              # folder that relative clip paths are relative to
    labels: list[str]


def plan(cfg: FeaturizeConfig) -> Plan:
    """Scan the corpus and draw the split, before any audio is decoded."""
    from ser.corpus.scan import scan

    result = scan(cfg.data, dataset=cfg.dataset, manifest=cfg.manifest, emotions=cfg.emotions,
                  allow_absolute=cfg.allow_absolute, speaker_regex=cfg.speaker_regex,
                  demographics=cfg.demographics)
    # the layout detected (one walk of the folder, not two) or read; a named one as it was given
    dataset = result.dataset if cfg.dataset == "auto" or cfg.manifest is not None else cfg.dataset
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
        # what decides speakers and demographics; absent when unset, so older stores still resume
        **({"speaker_regex": cfg.speaker_regex} if cfg.speaker_regex else {}),
        **({"demographics": str(Path(cfg.demographics).resolve())} if cfg.demographics else {}),
    }


def plan_digest(clips: pd.DataFrame) -> str:
    """A short hash of the clip list and its split: a store resumes only for the same plan."""
    import hashlib

    h = hashlib.sha256()
    for col in ("clip_id", "path", "split"):
        h.update("\x1f".join(clips[col].astype(str)).encode("utf-8") + b"\x1e")
    return h.hexdigest()[:16]


def _is_an_input(out: Path, base: Path, paths: Iterable[str]) -> bool:
    """Whether ``out`` is one of the files ``paths`` (relative to ``base``, or absolute): the
    same file, whatever the names (symlinks, hard links). What does not exist yet is none of
    them, so a fresh store's check costs one ``stat``; resolving every input path instead took
    ~0.3 s on CREMA-D's 7,442 files."""
    try:
        target = os.stat(out)
    except OSError:
        return False
    for path in paths:
        try:
            found = os.stat(base / path)
        except OSError:  # vanished since the scan: not what out is
            continue
        if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def pool_size(cfg: FeaturizeConfig, n_clips: int) -> int:
    """How many worker processes a local run of ``n_clips`` starts: ``cfg.workers``, but no more
    than the clips can pay for: starting a worker (spawning it, importing the feature path) costs
    about as much as featurizing ``cfg.min_clips_per_worker`` clips (docs/benchmarks.md). 1 means
    the parent does the work. A cluster's workers are there already and are all used."""
    from ser.featurize.backends import LOCAL_BACKENDS

    if cfg.backend not in LOCAL_BACKENDS:
        return cfg.workers
    return max(1, min(cfg.workers, n_clips // max(1, cfg.min_clips_per_worker)))


def make_tasks(todo: pd.DataFrame, base: Path, first_seq: int, workers: int, task_clips: int) -> list[Task]:
    """``todo``'s clips in plan order, in tasks of ``task_clips`` clips (fewer where that would
    leave a worker without four tasks to balance the end with), numbered from ``first_seq``."""
    size = max(1, min(task_clips, math.ceil(len(todo) / (4 * workers)))) if workers > 1 else task_clips
    clips = todo.loc[:, list(CLIP_COLUMNS)].copy()
    clips["source"] = [str(base / path) for path in todo["path"]]  # an absolute path stays itself under "/"
    return [Task(first_seq + k, clips.iloc[lo:lo + size]) for k, lo in enumerate(range(0, len(clips), size))]


def shares_work_folder(cfg: FeaturizeConfig) -> bool:
    """Whether the workers can write parts into the work folder: local processes and a cluster
    started here can; a remote cluster's workers (``--scheduler``) return their rows instead.
    A worker that finds no work folder returns its rows all the same (see ``run_task``)."""
    return cfg.scheduler is None


def receipts(tasks: list[Task], spec: PartSpec, task_cfg: TaskConfig, cfg: FeaturizeConfig,
             workers: int) -> Iterator[Receipt]:
    """The tasks' receipts in plan order, computed by ``workers`` processes (the parent itself
    for one). Receipts are small, so the workers never wait for the parent to take them; rows
    returned by a remote cluster's workers are not, so there the tasks go in windows of two a
    worker, and memory stays bounded; so do they where the pool hands a window back only whole
    (joblib's multiprocessing), so that parts are committed as the run goes."""
    from ser.featurize.backends import LOCAL_BACKENDS, compute_backend

    if workers <= 1 and cfg.backend in LOCAL_BACKENDS:
        restore = limit_threads()
        tune_malloc()
        try:
            for task in tasks:
                yield run_task(task, spec, task_cfg)
        finally:
            restore()
        return
    from joblib import Parallel, delayed

    # a task is handed out whenever one ends (joblib dispatches on completion), a few ahead
    window, ahead = (len(tasks), "4*n_jobs") if spec.work is not None else (2 * workers, "all")
    with compute_backend(cfg.backend, workers=workers, scheduler=cfg.scheduler):
        try:  # batch_size=1: a task is already a batch of clips
            pool = Parallel(return_as="generator", pre_dispatch=ahead, batch_size=1)
        except ValueError:
            # a pool that cannot stream (multiprocessing) hands a window back whole, once its last
            # task ends: small windows, so that the parts are committed as the run goes and a
            # crash loses the window in flight, not the run
            window, pool = 2 * workers, Parallel(pre_dispatch="all", batch_size=1)
        with pool:
            for lo in range(0, len(tasks), max(1, window)):
                yield from pool(delayed(worker_task)(t, spec, task_cfg) for t in tasks[lo:lo + window])


def _record_skipped(writer: Any, skipped: pd.DataFrame, done: set[str]) -> None:
    """Files the scan could not use are failures too: recorded once, as a part, across resumes."""
    new = skipped[~skipped["path"].astype(str).isin(done)]
    if len(new):
        failures = new.assign(clip_id=new["path"].astype(str)).loc[:, list(FAILURE_COLUMNS)]
        writer.write(PartData.only_failures(failures, writer.part_spec()))


def _progress(total: int, done: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="clip", desc="featurize", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)


def _run(writer: Any, p: Plan, cfg: FeaturizeConfig, todo: pd.DataFrame, bar: Any) -> None:
    """Compute ``todo``'s tasks and commit their parts in plan order."""
    workers = pool_size(cfg, len(todo))
    tasks = make_tasks(todo, p.base, writer.next_seq, workers, cfg.task_clips)
    task_cfg = TaskConfig(features=cfg.features, augment=tuple(cfg.augment), seed=cfg.split.seed)
    results = receipts(tasks, writer.part_spec(shared=shares_work_folder(cfg)), task_cfg, cfg, workers)
    try:
        for receipt in results:
            writer.commit(receipt)
            if bar is not None:
                bar.update(receipt.n_clips)
    except OSError as exc:  # a worker could not write its part: a full disk, a vanished folder
        raise StoreError(f"cannot write a part in {writer.work} ({exc}); the {writer.n_rows} rows committed "
                         "before it are safe: fix the cause and run the same command again") from None
    except BrokenExecutor as exc:  # a worker process died: killed, or out of memory
        raise SerError(f"a featurize worker died ({type(exc).__name__}: {str(exc).splitlines()[0]}); the "
                       f"{writer.n_rows} rows committed in {writer.work} are safe: run the same command again "
                       "to resume (with fewer --workers if memory ran out)") from None
    finally:
        results.close()  # restores the thread limits and stops the workers now, not at GC


def _check_out(out: Path, p: Plan) -> None:
    from ser.audio.decode import refuse_audio_overwrite

    if _is_an_input(out, p.base, pd.concat([p.clips["path"], p.skipped["path"]])):
        raise SerError(f"--out {out} is one of the input audio files; choose another path")
    refuse_audio_overwrite(out)


def featurize(cfg: FeaturizeConfig, *, progress: bool = True,
              log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> FeaturizeSummary:
    """Run (or resume) a featurize job and return what it did.

    Workers write a part per task; the parent commits them in plan order and merges them at the
    end (see :mod:`ser.store`). A Ctrl-C or SIGKILL loses at most the tasks in flight; running
    the same call again resumes where it stopped and gives the store a clean run gives, row
    for row.
    """
    from ser.store import Store, StoreWriter, work_dir

    t0 = time.perf_counter()
    out = Path(cfg.out)
    p = plan(cfg)
    _check_out(out, p)
    with StoreWriter(out, run_config=run_config(cfg, p.dataset, p.labels), descriptor_names=descriptor_names(cfg.features),
                     overwrite=cfg.overwrite, plan_digest=plan_digest(p.clips)) as writer:
        done = writer.done_clip_ids()
        _record_skipped(writer, p.skipped, done)
        todo = p.clips[~p.clips["clip_id"].isin(done)]
        if writer.resumed:
            log(f"resuming {out}: {len(p.clips) - len(todo)} of {len(p.clips)} clips already done")
        bar = _progress(len(p.clips), len(p.clips) - len(todo), progress)
        try:
            _run(writer, p, cfg, todo, bar)
        except KeyboardInterrupt:
            log(f"\ninterrupted: {writer.n_rows} rows are safely committed in {work_dir(out)}; "
                "run the same command again to resume (or pass --overwrite to start over)")
            raise
        finally:
            if bar is not None:
                bar.close()
        merged_meta = writer.finish()
    store = Store(out)
    # the summary counts the rows just merged; a resume with nothing to add reads them from the store
    meta = merged_meta if merged_meta is not None else store.meta()
    failures = store.failures()
    counts = meta.groupby(["split", "augment"]).size().unstack(fill_value=0) if len(meta) else pd.DataFrame()
    return FeaturizeSummary(store=out, n_clips=len(p.clips), n_rows=len(meta), n_failures=len(failures),
                            n_done_before=len(p.clips) - len(todo), seconds=time.perf_counter() - t0, counts=counts,
                            failures=failures)
