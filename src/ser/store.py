"""The feature store: one HDF5 file, the only module that knows its layout.

Layout (schema version :data:`SCHEMA_VERSION`):

- ``/descriptors``: ``(rows, D)`` float32, h5py; ``attrs["names"]`` is the JSON list of names.
- ``/mel``: ``(rows, n_mels, frames)`` float32 mel power in dB, h5py, one chunk per row.
- ``/meta``: a pandas table (PyTables ``format="table"``), one row per array row, its index
  the row number: ``pd.read_hdf(path, "meta")`` works.
- ``/failures``: a pandas table of files that could not be used (``path``, ``clip_id``, ``reason``).
- root attributes: ``ser_schema_version``, ``feature_config``, ``split_config``, ``run_config``,
  ``labels`` (JSON), ``package_version``, ``complete``.

Writing is done by one process (:class:`StoreWriter`) in batches. Each batch writes the
arrays first and the meta rows last, so the meta table is the commit record: rows past it
are an interrupted batch, and reopening the store for writing cuts them away.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import __version__
from .errors import StoreError

SCHEMA_VERSION = 1

META_STRING_COLUMNS = ("clip_id", "path", "dataset", "speaker", "emotion", "split", "augment",
                       "sentence", "intensity", "sex")
META_COLUMNS = ("clip_id", "path", "dataset", "speaker", "emotion", "label", "split", "augment",
                "duration_s", "n_frames", "sentence", "intensity", "sex", "age")
FAILURE_COLUMNS = ("clip_id", "path", "reason")
FAMILIES = ("descriptors", "mel")

_ROW_CHUNK = 1024  # rows per contiguous read when loading a split


def _json_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _itemsizes(table: pd.DataFrame, columns: Iterable[str], floor: int = 8) -> dict[str, int]:
    """PyTables string widths (UTF-8 bytes) wide enough for every value a run will write."""
    sizes = {}
    for col in columns:
        values = _plain_strings(table[col]) if col in table else pd.Series([""])
        longest = max((len(v.encode("utf-8")) for v in values), default=0)
        sizes[col] = max(floor, longest)
    return sizes


def _plain_strings(values: pd.Series) -> pd.Series:
    """Values as plain ``str`` objects, missing ones as ``""``.

    pandas 3's ``astype(str)`` keeps NaN as NaN, and a concatenated clip table (clips plus
    skipped files) has NaN where a frame lacked a column.
    """
    return values.map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v),
                      na_action=None).astype(object)


def _as_plain(frame: pd.DataFrame, string_columns: Iterable[str]) -> pd.DataFrame:
    """Plain object strings (PyTables does not take pandas' newer string dtypes)."""
    frame = frame.copy()
    for col in string_columns:
        if col in frame:
            frame[col] = _plain_strings(frame[col])
    return frame


class StoreWriter:
    """Creates or resumes a store and appends batches to it; use as a context manager.

    ``run_config`` is everything that decides the store's content (feature config, split
    config, scan options, augmentations, labels); a resumed store must have the same, else
    :class:`StoreError` names what differs.
    """

    def __init__(self, path: str | Path, *, run_config: dict[str, Any], descriptor_names: Sequence[str],
                 clip_table: pd.DataFrame, overwrite: bool = False) -> None:
        import h5py

        self.path = Path(path)
        self.run_config = run_config
        feature = run_config["feature_config"]
        n_mels, frames = int(feature["n_mels"]), 1 + int(round(feature["max_seconds"] * feature["sample_rate"])) // int(feature["hop_length"])
        self.resumed = False
        if self.path.exists() and not overwrite:
            self._check_resumable()
            self.resumed = True
        else:
            if self.path.exists():
                self.path.unlink()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(self.path, "w") as f:
                f.attrs["ser_schema_version"] = SCHEMA_VERSION
                f.attrs["package_version"] = __version__
                f.attrs["feature_config"] = _json_attr(feature)
                f.attrs["split_config"] = _json_attr(run_config["split_config"])
                f.attrs["labels"] = _json_attr(run_config["labels"])
                f.attrs["run_config"] = _json_attr(run_config)
                f.attrs["complete"] = 0  # int, not bool: PyTables warns on HDF5 enum bools
                d = f.create_dataset("descriptors", shape=(0, len(descriptor_names)),
                                     maxshape=(None, len(descriptor_names)), dtype="float32",
                                     chunks=(256, len(descriptor_names)))
                d.attrs["names"] = _json_attr(list(descriptor_names))
                f.create_dataset("mel", shape=(0, n_mels, frames), maxshape=(None, n_mels, frames),
                                 dtype="float32", chunks=(1, n_mels, frames))
                f.attrs["meta_itemsize"] = _json_attr(_itemsizes(clip_table, META_STRING_COLUMNS))
                f.attrs["failure_itemsize"] = _json_attr(
                    _itemsizes(clip_table, ("clip_id", "path")) | {"reason": 240})
        with h5py.File(self.path, "r") as f:
            self._meta_itemsize = json.loads(f.attrs["meta_itemsize"])
            self._failure_itemsize = json.loads(f.attrs["failure_itemsize"])
        self.n_rows = self._truncate_to_committed()

    # -- resume ------------------------------------------------------------------------------
    def _check_resumable(self) -> None:
        info = read_attrs(self.path)
        old = info["run_config"]
        diffs = describe_differences(old, self.run_config)
        if diffs:
            raise StoreError(
                f"{self.path} was made with other arguments ({'; '.join(diffs)}); "
                "rerun with the same arguments to resume it, or pass --overwrite to start over"
            )

    def _truncate_to_committed(self) -> int:
        """Cut array rows past the meta table (an interrupted batch); return the row count."""
        import h5py

        n = _table_nrows(self.path, "meta")
        with h5py.File(self.path, "a") as f:
            for name in FAMILIES:
                if f[name].shape[0] != n:
                    f[name].resize(n, axis=0)
        return n

    def done_clip_ids(self) -> set[str]:
        """Clip ids already written (as rows or as failures): a resumed run skips them."""
        done: set[str] = set()
        for key in ("meta", "failures"):
            if _table_nrows(self.path, key):
                done.update(pd.read_hdf(self.path, key, columns=["clip_id"])["clip_id"].astype(str))
        return done

    # -- writing -----------------------------------------------------------------------------
    def append(self, descriptors: np.ndarray, mel: np.ndarray, meta: pd.DataFrame) -> None:
        """Append ``k`` rows: ``descriptors (k, D)``, ``mel (k, n_mels, frames)``, ``meta`` (k rows)."""
        import h5py

        k = descriptors.shape[0]
        if not (mel.shape[0] == k == len(meta)):
            raise StoreError(f"batch sizes differ: {k} descriptors, {mel.shape[0]} mel, {len(meta)} meta")
        if k == 0:
            return
        start = self.n_rows
        with h5py.File(self.path, "a") as f:
            for name, arr in (("descriptors", descriptors), ("mel", mel)):
                ds = f[name]
                ds.resize(start + k, axis=0)
                ds[start:start + k] = arr
        frame = _as_plain(meta.loc[:, list(META_COLUMNS)], META_STRING_COLUMNS)
        frame.index = pd.RangeIndex(start, start + k)
        # meta last: it is the commit record of this batch
        with pd.HDFStore(self.path, mode="a") as hdf:
            hdf.append("meta", frame, format="table", data_columns=["split", "emotion", "speaker", "augment"],
                       min_itemsize=self._meta_itemsize, index=False)
        self.n_rows = start + k

    def add_failures(self, failures: pd.DataFrame) -> None:
        """Record files that could not be used (columns ``clip_id``, ``path``, ``reason``)."""
        if len(failures) == 0:
            return
        frame = _as_plain(failures.loc[:, list(FAILURE_COLUMNS)], FAILURE_COLUMNS)
        frame["reason"] = frame["reason"].map(lambda r: _clip_bytes(r, self._failure_itemsize["reason"]))
        with pd.HDFStore(self.path, mode="a") as hdf:
            start = hdf.get_storer("failures").nrows if "/failures" in hdf.keys() else 0
            frame.index = pd.RangeIndex(start, start + len(frame))
            hdf.append("failures", frame, format="table", min_itemsize=self._failure_itemsize, index=False)

    def finish(self) -> None:
        """Mark the store complete (every planned clip is written or recorded as failed)."""
        import h5py

        with h5py.File(self.path, "a") as f:
            f.attrs["complete"] = 1

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _clip_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[: limit - 3].decode("utf-8", "ignore") + "..."


def _table_nrows(path: Path, key: str) -> int:
    with pd.HDFStore(path, mode="r") as hdf:
        return hdf.get_storer(key).nrows if f"/{key}" in hdf.keys() else 0


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


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The store's self-description; :class:`StoreError` if it is not a readable store."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("ser_schema_version")
            if version is None:
                raise StoreError(f"{path}: not a ser feature store (no schema version)")
            if int(version) != SCHEMA_VERSION:
                raise StoreError(f"{path}: store schema version {int(version)}, this ser reads "
                                 f"version {SCHEMA_VERSION}; featurize again with --overwrite")
            return {
                "schema_version": int(version),
                "package_version": str(f.attrs["package_version"]),
                "feature_config": json.loads(f.attrs["feature_config"]),
                "split_config": json.loads(f.attrs["split_config"]),
                "run_config": json.loads(f.attrs["run_config"]),
                "labels": json.loads(f.attrs["labels"]),
                "complete": bool(f.attrs["complete"]),
                "descriptor_names": json.loads(f["descriptors"].attrs["names"]),
                "shapes": {name: tuple(f[name].shape) for name in FAMILIES},
            }
    except StoreError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"{path}: cannot read the store ({exc}); it may be truncated or corrupt") from None


class Store:
    """Read access to a store. The HDF5 handle opens lazily, once per process."""

    def __init__(self, path: str | Path, *, require_complete: bool = True) -> None:
        self.path = Path(path)
        info = read_attrs(self.path)
        if require_complete and not info["complete"]:
            raise StoreError(f"{self.path}: the store is incomplete (featurize was interrupted or is "
                             "still running); rerun the same featurize command to finish it")
        self.info = info
        self.labels: list[str] = info["labels"]
        self.feature_config: dict[str, Any] = info["feature_config"]
        self.split_config: dict[str, Any] = info["split_config"]
        self.descriptor_names: list[str] = info["descriptor_names"]
        self._h5 = None
        self._pid = None
        self._meta: pd.DataFrame | None = None

    def _file(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # never ship an open handle to another process
        state = dict(self.__dict__)
        state["_h5"] = None
        state["_pid"] = None
        return state

    @property
    def n_rows(self) -> int:
        return len(self.meta())

    def meta(self) -> pd.DataFrame:
        """The meta table (one row per array row, index = row number)."""
        if self._meta is None:
            n = self.info["shapes"]["descriptors"][0]
            if _table_nrows(self.path, "meta") == 0:
                self._meta = pd.DataFrame(columns=list(META_COLUMNS))
            else:
                self._meta = pd.read_hdf(self.path, "meta")
            if len(self._meta) > n:
                raise StoreError(f"{self.path}: meta has {len(self._meta)} rows but arrays have {n}")
        return self._meta

    def failures(self) -> pd.DataFrame:
        if _table_nrows(self.path, "failures") == 0:
            return pd.DataFrame(columns=list(FAILURE_COLUMNS))
        return pd.read_hdf(self.path, "failures")

    def rows(self, split: str | None = None) -> np.ndarray:
        """Row numbers of a split (all rows if ``None``), ascending."""
        meta = self.meta()
        if split is None:
            return meta.index.to_numpy()
        return meta.index[meta["split"] == split].to_numpy()

    def read(self, family: str, rows: np.ndarray) -> np.ndarray:
        """Rows of ``descriptors`` ``(k, D)`` or ``mel`` ``(k, n_mels, frames)``, in ``rows`` order.

        Reads contiguous blocks and selects in memory: far faster than HDF5 point selection.
        """
        if family not in FAMILIES:
            raise StoreError(f"unknown feature family {family!r}; one of {FAMILIES}")
        ds = self._file()[family]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.shape[0],) + ds.shape[1:], dtype=np.float32)
        if rows.shape[0] == 0:
            return out
        bad = rows[(rows < 0) | (rows >= ds.shape[0])]
        if bad.size:  # an out-of-range row would never advance the block loop below
            raise StoreError(f"{self.path}: row(s) {bad[:5].tolist()} out of range for {family} "
                             f"with {ds.shape[0]} rows")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        pos = 0
        while pos < sorted_rows.shape[0]:
            lo = sorted_rows[pos]
            hi = min(lo + _ROW_CHUNK, ds.shape[0])
            end = int(np.searchsorted(sorted_rows, hi, side="left"))
            block = ds[lo:hi]
            out[order[pos:end]] = block[sorted_rows[pos:end] - lo]
            pos = end
        return out

    def load_split(self, split: str, family: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """``(X, y, meta)`` of one split: features, integer labels ``(k,)``, meta rows."""
        rows = self.rows(split)
        meta = self.meta().loc[rows]
        return self.read(family, rows), meta["label"].to_numpy(dtype=np.int64), meta

    def fingerprint(self) -> str:
        """A short hash of what the store holds: configs, labels and every row's identity."""
        meta = self.meta()
        h = hashlib.sha256()
        h.update(_json_attr(self.info["run_config"]).encode())
        for col in ("clip_id", "split", "augment"):
            h.update("\x1f".join(meta[col].astype(str)).encode("utf-8"))
        return h.hexdigest()[:16]
