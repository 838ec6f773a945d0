"""Parts: what one featurize task writes, and how a writer finds the committed ones.

A worker writes its task's rows to ``feats.h5.partial/tmp-<run>-<seq>.h5`` (:func:`write_part`:
the arrays with HDF5's Fletcher-32 filter, the meta and failure rows as columns, fsynced) and
hands back a small :class:`Receipt`. Only the writing process commits a part, by renaming it to
``part-<seq>.h5`` in plan order (:meth:`ser.store.writer.StoreWriter.commit`), so the committed
parts are always ``part-000000.h5`` up to some ``N`` with no gap, and a crash leaves at most
uncommitted ``tmp-*`` files, which the next run removes. A worker that cannot see the work
folder (a remote cluster's) returns the rows themselves (:class:`PartData`) instead, and the
writing process writes the same file with the same function.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ser.errors import StoreError
from ser.store.files import fsync_path
from ser.store.layout import (FAILURE_COLUMNS, LIBVER, META_COLUMNS, META_STRING_COLUMNS, READ_ERRORS,
                              REASON_BYTES, as_plain, clip_bytes, create_arrays, write_columns)

_PART_RE = re.compile(r"^part-(\d{6})\.h5$")


@dataclass(frozen=True)
class PartSpec:
    """What a worker needs to write a part: where, for which run, and the shapes the store takes.
    Small and picklable; ``work`` is None where the worker cannot see the work folder."""

    work: Path | None
    run: str                  # this writer's token: tmp names never collide with another run's
    session: str              # the store's session, recorded in every part
    descriptor_names: tuple[str, ...]
    mel_shape: tuple[int, int]

    def tmp_path(self, seq: int) -> Path:
        if self.work is None:
            raise StoreError("this part spec has no work folder: return the rows instead")
        return self.work / f"tmp-{self.run}-{seq:06d}.h5"


@dataclass
class PartData:
    """A task's rows: ``descriptors`` ``(k, D)``, ``mel`` ``(k, n_mels, frames)``, ``meta`` (k rows,
    :data:`~ser.store.layout.META_COLUMNS`) and ``failures`` (``clip_id``, ``path``, ``reason``)."""

    descriptors: np.ndarray
    mel: np.ndarray
    meta: pd.DataFrame
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FAILURE_COLUMNS)))

    @classmethod
    def only_failures(cls, failures: pd.DataFrame, spec: PartSpec) -> "PartData":
        """A part of no rows: ``failures`` alone (the scan's unusable files, a task whose clips all failed)."""
        return cls(np.empty((0, len(spec.descriptor_names)), dtype=np.float32),
                   np.empty((0,) + tuple(spec.mel_shape), dtype=np.float32),
                   pd.DataFrame(columns=list(META_COLUMNS)), failures)

    @property
    def n_rows(self) -> int:
        return int(self.descriptors.shape[0])


@dataclass(frozen=True)
class Receipt:
    """What a task hands back: its part's place in plan order and size, and either the file it
    wrote (``path``, with ``tables``: the part's meta and failure rows as written, so the merge
    need not read them back) or, from a worker that cannot see the work folder, its rows (``data``)."""

    seq: int
    n_rows: int
    n_failures: int
    n_clips: int
    path: Path | None = None
    tables: tuple[pd.DataFrame, pd.DataFrame] | None = None
    data: PartData | None = None


@dataclass(frozen=True)
class Part:
    """A committed part."""

    path: Path
    seq: int
    n_rows: int
    n_failures: int


def part_path(work: Path, seq: int) -> Path:
    return work / f"part-{seq:06d}.h5"


def _checked(spec: PartSpec, data: PartData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The part's meta and failure frames as stored; :class:`StoreError` if the rows do not fit."""
    k = data.n_rows
    if not (data.mel.shape[0] == k == len(data.meta)):
        raise StoreError(f"part sizes differ: {k} descriptors, {data.mel.shape[0]} mel, {len(data.meta)} meta")
    if k and (data.descriptors.shape[1:] != (len(spec.descriptor_names),) or data.mel.shape[1:] != spec.mel_shape):
        raise StoreError(f"part shapes {data.descriptors.shape[1:]} / {data.mel.shape[1:]} do not fit the store's "
                         f"({len(spec.descriptor_names)},) / {spec.mel_shape}")
    if k and not (np.isfinite(data.descriptors).all() and np.isfinite(data.mel).all()):
        raise StoreError("refusing to store non-finite features (NaN or Inf)")
    meta = as_plain(data.meta.loc[:, list(META_COLUMNS)], META_STRING_COLUMNS)
    failures = as_plain(data.failures.loc[:, list(FAILURE_COLUMNS)], FAILURE_COLUMNS)
    failures["reason"] = failures["reason"].map(lambda r: clip_bytes(r, REASON_BYTES))
    return meta, failures


def write_part(path: Path, spec: PartSpec, seq: int, data: PartData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write a task's part to ``path`` and fsync it: the file is on disk whole once this returns
    (committing it is the writer's rename). A file left by a failed write is removed. Returns the
    part's meta and failure rows as written (plain strings: as :func:`read_columns` reads them)."""
    import h5py

    meta, failures = _checked(spec, data)
    k, n_fail = data.n_rows, len(failures)
    try:
        with h5py.File(path, "w", libver=LIBVER) as f:
            f.attrs.update(session=spec.session, seq=seq, n_rows=k, n_failures=n_fail, mel_shape=spec.mel_shape)
            if k:
                d, m = create_arrays(f, k, spec.descriptor_names, spec.mel_shape)
                d[:] = np.asarray(data.descriptors, dtype=np.float32)
                m[:] = np.asarray(data.mel, dtype=np.float32)
                write_columns(f.create_group("meta"), meta, META_COLUMNS)
            if n_fail:
                write_columns(f.create_group("failures"), failures, FAILURE_COLUMNS)
        fsync_path(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return meta, failures


def _problem(path: Path, session: str) -> tuple[str | None, int, int]:
    """Why the part at ``path`` cannot be used (None if it can), and its row and failure counts."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if str(f.attrs["session"]) != session:
                return f"{path.name} belongs to another run", 0, 0
            n_rows, n_fail = int(f.attrs["n_rows"]), int(f.attrs["n_failures"])
            for name in ("descriptors", "mel"):
                if n_rows and f[name].shape[0] != n_rows:
                    return f"{path.name} holds {f[name].shape[0]} {name} rows, not {n_rows}", 0, 0
            return None, n_rows, n_fail
    except FileNotFoundError:
        return f"{path.name} vanished (the run was finished or restarted meanwhile)", 0, 0
    except READ_ERRORS as exc:
        return f"{path.name} is damaged ({exc})", 0, 0


def list_parts(work: Path, session: str, *, quiet: bool = False) -> list[Part]:
    """The committed parts of ``session``, in order, up to the first gap or damaged part."""
    found = sorted((int(m.group(1)), p) for p in work.iterdir() if (m := _PART_RE.match(p.name)))
    parts: list[Part] = []
    for expected, (seq, path) in enumerate(found):
        problem, n_rows, n_fail = (f"part {expected} is missing", 0, 0) if seq != expected else _problem(path, session)
        if problem is not None:
            if not quiet:
                warnings.warn(f"{work}: {problem}; that part and the ones after it are not used "
                              "(their clips will be featurized again)", RuntimeWarning, stacklevel=3)
            break
        parts.append(Part(path, seq, n_rows, n_fail))
    return parts


def stray_parts(work: Path, parts: Sequence[Part]) -> list[Path]:
    """Files of ``work`` that are no committed part of ``parts``: parts after a gap or a damaged
    one, and the ``tmp-*`` files of tasks never committed."""
    kept = {p.path.name for p in parts}
    return [p for p in work.iterdir()
            if (_PART_RE.match(p.name) and p.name not in kept) or (p.name.startswith("tmp-") and p.suffix == ".h5")
            or p.name.endswith(".tmp")]
