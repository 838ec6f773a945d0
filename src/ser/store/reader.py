"""Reading a store: its self-description (:func:`read_attrs`) and its rows (:class:`Store`).

Readers open files read-only, lazily, once per process. While a store is being written they
read a snapshot of the committed parts (``Store(path, require_complete=False)``) or are told
that it is incomplete, and who is writing it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import StoreError
from ser.store.files import HEADER, work_dir, writer_pid
from ser.store.layout import (FAILURE_COLUMNS, FAMILIES, META_COLUMNS, READ_ERRORS, SCHEMA_VERSION, SPLITS,
                              json_attr, read_columns)
from ser.store.parts import list_parts

#: The version of a work folder's content (header, parts): parts written by workers, holding
#: their own mel rows. An unfinished run of an older ser is refused by it, never misread.
WORK_VERSION = 3
_ROW_CHUNK = 1024  # rows per contiguous read when loading a split


class StoreChanged(StoreError):
    """The store was finished or restarted by its writer while being read: open it again."""


def _corrupt(path: Path, exc: BaseException) -> StoreError:
    text = str(exc)
    if "unable to lock file" in text or "lock" in text.lower() and "errno = 11" in text:
        return StoreError(f"{path} is being written by another program (its HDF5 file lock is held); "
                          "try again when it has finished")
    return StoreError(f"{path}: cannot read the store ({text.splitlines()[0] if text else type(exc).__name__}); "
                      "it may be truncated or corrupt: featurize it again (--overwrite)")


def _final_info(path: Path) -> dict[str, Any]:
    """Attributes of a store file; :class:`StoreError` for anything that is not a sound v2 store."""
    import h5py

    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a feature store")
    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("ser_schema_version")
            if version is None:
                raise StoreError(f"{path}: not a ser feature store (no schema version)")
            if int(version) != SCHEMA_VERSION:
                why = (" (written by an older ser, whose in-place writes a killed run could corrupt)"
                       if int(version) < SCHEMA_VERSION else " (written by a newer ser)")
                raise StoreError(f"{path}: store schema version {int(version)}{why}; this ser reads "
                                 f"version {SCHEMA_VERSION}; featurize again with --overwrite")
            info = {
                "schema_version": int(version),
                "package_version": str(f.attrs["package_version"]),
                "feature_config": json.loads(f.attrs["feature_config"]),
                "split_config": json.loads(f.attrs["split_config"]),
                "run_config": json.loads(f.attrs["run_config"]),
                "labels": json.loads(f.attrs["labels"]),
                "complete": bool(f.attrs["complete"]),
                "n_rows": int(f.attrs["n_rows"]),
                "session": str(f.attrs["session"]),
                "plan_digest": str(f.attrs.get("plan_digest", "")) or None,
                "descriptor_names": json.loads(f["descriptors"].attrs["names"]),
                "shapes": {name: tuple(int(v) for v in f[name].shape) for name in FAMILIES},
            }
    except StoreError:
        raise
    except READ_ERRORS as exc:
        raise _corrupt(path, exc) from None
    for name in FAMILIES:
        if info["shapes"][name][0] != info["n_rows"]:
            raise StoreError(f"{path}: {name} has {info['shapes'][name][0]} rows, the store says "
                             f"{info['n_rows']}; it is corrupt: featurize it again (--overwrite)")
    info.update(writer_pid=None, work=None, parts=None)
    return info


def _read_header(work: Path) -> dict[str, Any] | None:
    path = work / HEADER
    if not path.is_file():
        return None
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
        header["session"], header["run_config"]  # noqa: B018 - required keys
    except FileNotFoundError:  # removed since the check: its writer finished or started over
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: the work folder of an unfinished featurize is damaged ({exc}); "
                         "featurize again with --overwrite") from None
    version = (header.get("schema_version"), header.get("work_version"))
    if version != (SCHEMA_VERSION, WORK_VERSION):
        raise StoreError(f"{work}: unfinished featurize work of another ser (schema {version[0]}, work folder "
                         f"{version[1]}; this ser writes {SCHEMA_VERSION}, {WORK_VERSION}); it cannot be resumed: "
                         "featurize again with --overwrite")
    return header


def _partial_info(path: Path, work: Path, header: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of what an unfinished run has committed so far (read-only)."""
    rc = header["run_config"]
    parts = list_parts(work, header["session"], quiet=True)
    n = sum(p.n_rows for p in parts)
    n_mels, frames = header["mel_shape"]
    return {
        "schema_version": SCHEMA_VERSION,
        "package_version": header.get("package_version", "?"),
        "feature_config": rc["feature_config"],
        "split_config": rc["split_config"],
        "run_config": rc,
        "labels": rc["labels"],
        "complete": False,
        "n_rows": n,
        "session": header["session"],
        "plan_digest": header.get("plan_digest"),
        "descriptor_names": header["descriptor_names"],
        "shapes": {"descriptors": (n, len(header["descriptor_names"])), "mel": (n, int(n_mels), int(frames))},
        "writer_pid": writer_pid(work),
        "work": str(work),
        "parts": parts,
    }


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The store's self-description; :class:`StoreError` if it is not a readable store.

    For a store that is still being written (or whose featurize was interrupted) this is a
    snapshot of the committed batches, with ``complete`` False and ``writer_pid`` the pid of
    the running writer (None when interrupted).
    """
    path = Path(path)
    work = work_dir(path)
    if path.exists():
        return _final_info(path)
    if work.is_dir():
        header = _read_header(work)
        if header is not None:
            try:
                return _partial_info(path, work, header)
            except FileNotFoundError:  # the folder went while it was read: finished, or started over
                if path.exists():
                    return _final_info(path)
                raise StoreChanged(f"{path}: its work folder {work} vanished while reading: the run that "
                                   "was writing it finished or restarted; open it again") from None
        if path.exists():  # its writer published the store and cleared its work meanwhile
            return _final_info(path)
        raise StoreError(f"{path}: no store yet: a featurize run started it in {work} but committed "
                         "nothing; run it again")
    raise StoreError(f"{path}: no such store")


def describe_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts: ``"n_mels: 64 -> 128"``."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += describe_differences(a, b, prefix=f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


def _check_meta(path: Path, meta: pd.DataFrame, n: int, n_labels: int) -> None:
    """A loaded meta table must describe the arrays: one row each, valid labels and splits."""
    problems = []
    if len(meta) != n:
        problems.append(f"meta has {len(meta)} rows but the arrays have {n}")
    elif not meta.index.equals(pd.RangeIndex(0, n)):
        problems.append("meta rows are not numbered 0..n-1")
    missing = [c for c in META_COLUMNS if c not in meta]
    if missing:
        problems.append(f"meta lacks column(s) {', '.join(missing)}")
    elif n:
        labels = meta["label"].to_numpy()
        if labels.min() < 0 or labels.max() >= n_labels:
            problems.append(f"labels outside 0..{n_labels - 1}")
        bad = set(meta["split"].astype(str)) - set(SPLITS)
        if bad:
            problems.append(f"unknown split(s) {sorted(bad)}")
    if problems:
        raise StoreError(f"{path}: {'; '.join(problems)}: the store is corrupt; featurize it again (--overwrite)")


class Store:
    """Read access to a store. HDF5 handles open lazily, once per process, read-only.

    With ``require_complete=False`` a store that is still being written (or was interrupted)
    reads as a snapshot of the batches committed when it was opened.
    """

    def __init__(self, path: str | Path, *, require_complete: bool = True) -> None:
        self.path = Path(path)
        info = read_attrs(self.path)
        if require_complete and not info["complete"]:
            pid = info.get("writer_pid")
            doing = (f"featurize (pid {pid}) is still writing it; wait for it to finish" if pid else
                     "featurize was interrupted; rerun the same featurize command to finish it")
            raise StoreError(f"{self.path}: the store is incomplete ({info['n_rows']} rows committed so far "
                             f"in {info['work']}): {doing}")
        self.info = info
        self.labels: list[str] = info["labels"]
        self.feature_config: dict[str, Any] = info["feature_config"]
        self.split_config: dict[str, Any] = info["split_config"]
        self.descriptor_names: list[str] = info["descriptor_names"]
        # (file, first row, rows) of each file holding rows: the store, or the committed parts
        self._sources: list[tuple[Path, int, int]] = []
        if info["complete"]:
            self._sources.append((self.path, 0, info["n_rows"]))
        else:
            start = 0
            for part in info["parts"]:
                self._sources.append((part.path, start, part.n_rows))
                start += part.n_rows
        self._h5: dict[Path, Any] = {}
        self._pid: int | None = None
        self._meta: pd.DataFrame | None = None

    def _dataset(self, source: Path, family: str) -> Any:
        import h5py

        if self._pid != os.getpid():
            self._h5, self._pid = {}, os.getpid()
        if source not in self._h5:
            try:
                self._h5[source] = h5py.File(source, "r")
            except READ_ERRORS as exc:
                if not source.exists():  # h5py reports a vanished file as a stat error, not FileNotFoundError
                    raise self._vanished(source) from None
                raise _corrupt(source, exc) from None
        return self._h5[source][family]

    def _vanished(self, source: Path) -> StoreChanged:
        return StoreChanged(f"{self.path}: {source.name} vanished while reading: the run that was "
                            "writing the store finished or restarted; open it again")

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._h5.values():
                try:
                    f.close()
                except READ_ERRORS:
                    pass
        self._h5, self._pid = {}, None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # never ship an open handle to another process
        state = dict(self.__dict__)
        state["_h5"] = {}
        state["_pid"] = None
        return state

    @property
    def n_rows(self) -> int:
        return int(self.info["n_rows"])

    def meta(self) -> pd.DataFrame:
        """The meta table (one row per array row, index = row number)."""
        if self._meta is None:
            n = self.n_rows
            try:
                if self.info["complete"]:
                    meta = pd.read_hdf(self.path, "meta") if n else pd.DataFrame(columns=list(META_COLUMNS))
                else:
                    frames = [read_columns(src, "meta", META_COLUMNS) for src, _, n_src in self._sources if n_src]
                    meta = (pd.concat(frames, ignore_index=True) if frames
                            else pd.DataFrame(columns=list(META_COLUMNS)))
            except StoreError:
                raise
            except FileNotFoundError:
                raise StoreChanged(f"{self.path}: the store changed while reading (its run finished or "
                                   "restarted); open it again") from None
            except READ_ERRORS as exc:
                raise _corrupt(self.path, exc) from None
            _check_meta(self.path, meta, n, len(self.labels))
            self._meta = meta
        return self._meta

    def failures(self) -> pd.DataFrame:
        """Files that could not be used: ``clip_id``, ``path``, ``reason``."""
        try:
            if self.info["complete"]:
                with pd.HDFStore(self.path, mode="r") as hdf:
                    if "/failures" not in hdf.keys():
                        return pd.DataFrame(columns=list(FAILURE_COLUMNS))
                    return hdf.select("failures")
            frames = [read_columns(p.path, "failures", FAILURE_COLUMNS) for p in self.info["parts"]]
        except FileNotFoundError:
            raise StoreChanged(f"{self.path}: the store changed while reading (its run finished or "
                               "restarted); open it again") from None
        except READ_ERRORS as exc:
            raise _corrupt(self.path, exc) from None
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(FAILURE_COLUMNS))
        return pd.concat(frames, ignore_index=True)

    def rows(self, split: str | None = None) -> np.ndarray:
        """Row numbers of a split (all rows if ``None``), ascending."""
        meta = self.meta()
        if split is None:
            return meta.index.to_numpy()
        return meta.index[meta["split"] == split].to_numpy()

    def read(self, family: str, rows: np.ndarray) -> np.ndarray:
        """Rows of ``descriptors`` ``(k, D)`` or ``mel`` ``(k, n_mels, frames)``, in ``rows`` order.

        Reads contiguous blocks and selects in memory: far faster than HDF5 point selection.
        A damaged block (its checksum fails) raises :class:`StoreError`.
        """
        if family not in FAMILIES:
            raise StoreError(f"unknown feature family {family!r}; one of {FAMILIES}")
        shape = self.info["shapes"][family]
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.shape[0],) + tuple(shape[1:]), dtype=np.float32)
        if rows.shape[0] == 0:
            return out
        bad = rows[(rows < 0) | (rows >= shape[0])]
        if bad.size:  # an out-of-range row would never advance the block loop below
            raise StoreError(f"{self.path}: row(s) {bad[:5].tolist()} out of range for {family} "
                             f"with {shape[0]} rows")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        for source, first, n in self._sources:
            lo_i = int(np.searchsorted(sorted_rows, first, side="left"))
            hi_i = int(np.searchsorted(sorted_rows, first + n, side="left"))
            if lo_i == hi_i:
                continue
            ds = self._dataset(source, family)
            local = sorted_rows[lo_i:hi_i] - first
            try:
                _read_blocks(ds, local, order[lo_i:hi_i], out)
            except READ_ERRORS as exc:
                raise StoreError(f"{self.path}: cannot read {family} rows near {first + int(local[0])} "
                                 f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): the store is "
                                 "corrupt; featurize it again (--overwrite)") from None
        return out

    def verify(self) -> None:
        """Read every row of every family and both tables; :class:`StoreError` on any damage.

        Every block's Fletcher-32 checksum is checked by HDF5 as it is read; memory stays at one block.
        """
        self.meta()
        self.failures()
        for family in FAMILIES:
            step = _ROW_CHUNK if family == "descriptors" else 64
            for lo in range(0, self.n_rows, step):
                self.read(family, np.arange(lo, min(lo + step, self.n_rows)))

    def load_split(self, split: str, family: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """``(X, y, meta)`` of one split: features, integer labels ``(k,)``, meta rows."""
        rows = self.rows(split)
        meta = self.meta().loc[rows]
        return self.read(family, rows), meta["label"].to_numpy(dtype=np.int64), meta

    def fingerprint(self) -> str:
        """A short hash of what the store holds: configs, labels and every row's identity."""
        meta = self.meta()
        h = hashlib.sha256()
        h.update(json_attr(self.info["run_config"]).encode())
        for col in ("clip_id", "split", "augment"):
            h.update("\x1f".join(meta[col].astype(str)).encode("utf-8"))
        return h.hexdigest()[:16]


def _read_blocks(ds: Any, rows: np.ndarray, positions: np.ndarray, out: np.ndarray) -> None:
    """``out[positions] = ds[rows]`` for ascending ``rows``, by contiguous blocks of rows."""
    n = ds.shape[0]
    pos = 0
    while pos < rows.shape[0]:
        lo = int(rows[pos])
        hi = min(lo + _ROW_CHUNK, n, int(rows[-1]) + 1)  # never read past the last row asked for
        end = int(np.searchsorted(rows, hi, side="left"))
        block = ds[lo:hi]
        out[positions[pos:end]] = block[rows[pos:end] - lo]
        pos = end
