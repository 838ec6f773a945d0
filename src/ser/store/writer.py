"""The feature store: one HDF5 file, the only module that knows its layout.

Layout (schema version :data:`SCHEMA_VERSION`):

- ``/descriptors``: ``(rows, D)`` float32, h5py; ``attrs["names"]`` is the JSON list of names.
- ``/mel``: ``(rows, n_mels, frames)`` float32 mel power in dB, h5py, one chunk per row.
- ``/meta``: a pandas table (PyTables ``format="table"``), one row per array row, its index
  the row number: ``pd.read_hdf(path, "meta")`` works.
- ``/failures``: a pandas table of files that could not be used (``path``, ``clip_id``, ``reason``).
- root attributes: ``ser_schema_version``, ``feature_config``, ``split_config``, ``run_config``,
  ``labels`` (JSON), ``package_version``, ``complete``, ``n_rows``, ``session`` (the id of the
  run that wrote it) and ``plan_digest`` (a hash of the clip list and its split).

Version 2 adds checksums: every array chunk and both tables carry HDF5's Fletcher-32 filter
(the tables are also zlib-compressed, level 1) and the file's own metadata is checksummed
(HDF5 1.10 format), so a flipped byte is a read error, never a silently wrong number. Readers
of version 1 are refused: its in-place writes could be left corrupt by a killed featurize.

Crash safety: the store file is never written in place. A writer (:class:`StoreWriter`) keeps
its work in a folder beside it, ``feats.h5.partial/``:

- ``header.json``: the run's configuration and session id;
- ``part-000000.h5``, ``part-000001.h5``, ...: one per committed batch, its descriptors, meta
  rows and failures together, written as ``*.tmp``, fsynced and renamed, so a batch is on disk
  whole or not at all (the commit is the rename); a fresh run's last batch may skip its part (see
  :meth:`StoreWriter.commit`'s ``last``): it is committed by the final rename with the rest;
- ``grown.h5``: a fresh run's store, its arrays grown batch by batch (:meth:`StoreWriter.commit`).
  Its HDF5 metadata is not trusted after a crash, but each committed batch's mel chunks in it
  are: they are fsynced before the batch's part is renamed, and the part records where each
  chunk lies (offset, size; the chunk carries its Fletcher-32 checksum). So the mel, the bulk
  of a batch, is written once; a part written by a resumed run holds its mel itself;
- ``LOCK``: a POSIX lock held by the writing process (released when it exits, however it
  exits), so a second writer is refused and readers can tell "being written" from "interrupted".

:meth:`StoreWriter.finish` adds the tables to ``grown.h5`` where it holds every row (a fresh
run), or else merges the parts (after the rows of an existing store it resumed; mel chunks copied
as stored) into a temporary file in that folder; then it fsyncs the file, renames it over
``feats.h5`` (atomic), and removes the folder. A SIGKILL at any moment therefore leaves the previous state or the next
one, never half an HDF5 file, and the rerun resumes from the committed parts. Readers open
files read-only; while a store is being written they read a snapshot of the committed parts
(``Store(path, require_complete=False)``) or are told it is incomplete, and who is writing it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ser import __version__
from ser.errors import StoreError
from ser.threads import Background

try:
    import fcntl
except ImportError:  # not POSIX: no writer lock (one writer per store is then the user's care)
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 2

META_STRING_COLUMNS = ("clip_id", "path", "dataset", "speaker", "emotion", "split", "augment",
                       "sentence", "intensity", "sex")
META_COLUMNS = ("clip_id", "path", "dataset", "speaker", "emotion", "label", "split", "augment",
                "duration_s", "n_frames", "sentence", "intensity", "sex", "age")
FAILURE_COLUMNS = ("clip_id", "path", "reason")
FAMILIES = ("descriptors", "mel")
SPLITS = ("train", "val", "test")
#: Suffix of the work folder beside a store that is being written: ``feats.h5.partial``.
WORK_SUFFIX = ".partial"

_ROW_CHUNK = 1024  # rows per contiguous read when loading a split
_COPY_ROWS = 256   # rows per block when merging parts into the store
_REASON_BYTES = 240
_NUMERIC = {"label": np.int64, "n_frames": np.int64, "duration_s": np.float64, "age": np.float64}
_DATA_COLUMNS = ["split", "emotion", "speaker", "augment"]
_TABLE_FILTERS: dict[str, Any] = dict(complevel=1, complib="zlib", fletcher32=True)
_LIBVER = ("v110", "latest")  # superblock v3 and v2 object headers: checksummed metadata
_HEADER = "header.json"
_LOCK = "LOCK"
_PID = "PID"
_MERGED = "merged.h5.tmp"
_GROWN = "grown.h5"   # not *.tmp: a resumed run reads the committed batches' mel chunks from it
_MEL_REFS = "mel_chunks"  # in a part: (rows, 2) int64, each mel row's chunk offset and size in grown.h5
_PART_RE = re.compile(r"^part-(\d{6})\.h5$")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# what h5py, PyTables and pandas raise on damaged files (tables' errors derive from these)
_READ_ERRORS = (OSError, LookupError, ValueError, RuntimeError, TypeError, AttributeError, SystemError,
                ArithmeticError, MemoryError, EOFError)


def work_dir(path: str | Path) -> Path:
    """The folder where a store being written keeps its committed batches: ``feats.h5.partial``."""
    path = Path(path)
    return path.with_name(path.name + WORK_SUFFIX)


def _json_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _itemsizes(table: pd.DataFrame, columns: Iterable[str], floor: int = 8) -> dict[str, int]:
    """PyTables string widths (UTF-8 bytes) wide enough for every value in ``table``."""
    sizes = {}
    for col in columns:
        values = _plain_strings(table[col]).unique() if col in table else [""]
        longest = max((len(v.encode("utf-8")) for v in values), default=0)
        sizes[col] = max(floor, longest)
    return sizes


def _plain_strings(values: pd.Series) -> pd.Series:
    """Values as plain ``str`` objects, missing ones as ``""``.

    pandas 3's ``astype(str)`` keeps NaN as NaN, and a concatenated clip table (clips plus
    skipped files) has NaN where a frame lacked a column. Values that are all ``str`` already
    come back as they are: a batch's string columns pass through here three times.
    """
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    return values.map(lambda v: "" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v),
                      na_action=None).astype(object)


def _as_plain(frame: pd.DataFrame, string_columns: Iterable[str]) -> pd.DataFrame:
    """Plain object strings (PyTables does not take pandas' newer string dtypes)."""
    frame = frame.copy()
    for col in string_columns:
        if col in frame:
            frame[col] = _plain_strings(frame[col])
    return frame


def _clip_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[: limit - 3].decode("utf-8", "ignore") + "..."


class StoreChanged(StoreError):
    """The store was finished or restarted by its writer while being read: open it again."""


# -- files, fsync, locks -----------------------------------------------------------------------
def _fsync_path(path: Path, *, directory: bool = False, uncache: bool = False) -> None:
    """Flush a file (or a folder's entries) to disk; a crash of the machine keeps what was committed.

    ``uncache``: then drop the file's pages from the page cache (see :func:`_uncache`).
    """
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some filesystems cannot open folders; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
        if uncache:
            _uncache(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _uncache(fd: int) -> None:
    """Drop the file's pages that are on disk already from the page cache (``POSIX_FADV_DONTNEED``;
    pages not yet written back stay). A no-op where the call is missing (macOS, Windows).

    Featurize writes each batch's mel (~0.3 MB a clip) and does not read it back in a fresh run:
    left cached, a full CREMA-D run filled gigabytes of page cache, and every page the kernel
    allocates anew for it costs CPU (in a VM, a fault to the host). Dropped as soon as they are on
    disk, the same few pages are reused batch after batch: on the whole corpus, two workers ran 2%
    and 8% faster in two A/B pairs (docs/benchmarks.md). A resumed run reads back from disk
    instead of the cache.
    """
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass


class _Sync:
    """``fsync`` of a file on a thread of its own (it releases the GIL), so the caller can go on
    writing elsewhere while the disk catches up; :meth:`wait` returns once it is done and
    raises its error. The file's pages are then dropped from the cache (a fresh run does not
    read them back)."""

    def __init__(self, path: Path) -> None:
        self._error: OSError | None = None
        self._path = path
        self._thread = Background(self._run, name="ser-part-fsync")

    def _run(self) -> None:
        try:
            _fsync_path(self._path, uncache=True)
        except OSError as exc:
            self._error = exc

    def wait(self) -> None:
        self._thread.wait()
        if self._error is not None:
            raise self._error


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)


def _is_hdf5(path: Path) -> bool:
    """Whether ``path`` starts with the HDF5 signature (at 0 or a power-of-two user-block offset)."""
    try:
        with open(path, "rb") as f:
            for offset in (0, 512, 1024, 2048, 4096):
                f.seek(offset)
                if f.read(8) == _HDF5_SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def _writer_pid(work: Path) -> int | None:
    """The pid of the process writing ``work``, or None if no live process holds its lock.

    The pid file is read first: within the writer's own process the lock file must not be
    opened and closed (closing any descriptor of it would drop that process's POSIX lock).
    """
    try:
        pid = int((work / _PID).read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid == os.getpid():
        return pid
    if fcntl is None:
        return None
    try:
        fd = os.open(work / _LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return pid or -1
        return None
    finally:
        os.close(fd)  # also releases the shared lock just taken
    return None


class _WriterLock:
    """An exclusive POSIX lock on ``work/LOCK``: one writer per store. POSIX (``lockf``) locks
    are not inherited by forked worker processes and vanish when the holder dies."""

    def __init__(self, work: Path, store: Path, *, wait_s: float = 3.0) -> None:
        self.fd: int | None = os.open(work / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return
        deadline = time.monotonic() + wait_s  # a reader's brief shared lock must not refuse us
        while True:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() > deadline:
                    os.close(self.fd)
                    self.fd = None
                    try:
                        pid = (work / _PID).read_text().strip()
                    except OSError:
                        pid = "?"
                    raise StoreError(f"{store} is being written by another featurize (pid {pid}); wait for "
                                     "it to finish, or stop it and rerun") from None
                time.sleep(0.1)
        (work / _PID).write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _clear_work(work: Path, *, keep_lock: bool) -> None:
    """Remove a work folder's content, the header first (so a half-cleared folder reads as empty)."""
    if not work.is_dir():
        return
    header = work / _HEADER
    if header.exists():
        header.unlink()
    for entry in sorted(work.iterdir()):
        if keep_lock and entry.name in (_LOCK, _PID):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if not keep_lock:
        work.rmdir()


# -- parts -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Part:
    path: Path
    seq: int
    n_rows: int
    n_failures: int
    mel_file: Path | None = None  # where its mel chunks lie (grown.h5), or None: in the part itself


def _part_path(work: Path, seq: int) -> Path:
    return work / f"part-{seq:06d}.h5"


def _list_parts(work: Path, session: str, *, quiet: bool = False) -> list[_Part]:
    """The committed parts of ``session``, in order, up to the first gap or damaged part."""
    import h5py

    found = sorted((int(m.group(1)), p) for p in work.iterdir() if (m := _PART_RE.match(p.name)))
    parts: list[_Part] = []
    for expected, (seq, path) in enumerate(found):
        problem = None
        if seq != expected:
            problem = f"part {expected} is missing"
        else:
            try:
                with h5py.File(path, "r") as f:
                    if str(f.attrs["session"]) != session:
                        problem = f"{path.name} belongs to another run"
                    else:
                        n_rows, n_fail = int(f.attrs["n_rows"]), int(f.attrs["n_failures"])
                        mel_file = work / _GROWN if n_rows and _MEL_REFS in f else None
                        for name in ("descriptors", _MEL_REFS if mel_file else "mel"):
                            if n_rows and f[name].shape[0] != n_rows:
                                problem = f"{path.name} holds {f[name].shape[0]} {name} rows, not {n_rows}"
                        if problem is None and mel_file is not None and not mel_file.is_file():
                            problem = f"{path.name}'s mel rows are in {_GROWN}, which is missing"
            except FileNotFoundError:
                problem = f"{path.name} vanished (the run was finished or restarted meanwhile)"
            except _READ_ERRORS as exc:
                problem = f"{path.name} is damaged ({exc})"
        if problem is not None:
            if not quiet:
                warnings.warn(f"{work}: {problem}; that part and the ones after it are not used "
                              "(their clips will be featurized again)", RuntimeWarning, stacklevel=3)
            break
        parts.append(_Part(path, seq, n_rows, n_fail, mel_file))
    return parts


def _fletcher32(data: bytes | memoryview) -> int:
    """HDF5's Fletcher-32 checksum of ``data`` (``H5_checksum_fletcher32``: big-endian 16-bit
    words, both sums folded every 360 words), computed 360 words at a time with numpy.

    Within a block of ``t`` words from sums ``(s1, s2)``, ``s1`` grows by the words' sum and ``s2``
    by ``t * s1`` plus the words weighted ``t, t-1, ..., 1``; HDF5's 32-bit sums wrap, so each
    block's result is taken modulo 2**32 before the fold, as in C.
    """
    words = np.frombuffer(data, dtype=">u2", count=len(data) // 2).astype(np.uint64)
    full = words.shape[0] - words.shape[0] % 360
    grid = words[:full].reshape(-1, 360)
    weights = np.arange(360, 0, -1, dtype=np.uint64)
    blocks = [(360, s, w) for s, w in zip(grid.sum(axis=1).tolist(), (grid @ weights).tolist())]
    tail = words[full:]
    if tail.shape[0]:
        blocks.append((tail.shape[0], int(tail.sum()), int(tail @ np.arange(tail.shape[0], 0, -1, dtype=np.uint64))))
    if len(data) % 2:  # an odd last byte is the high byte of a last word
        blocks.append((1, int(data[-1]) << 8, int(data[-1]) << 8))
    s1 = s2 = 0
    for t, total, weighted in blocks:
        s2 = (s2 + t * s1 + weighted) & 0xFFFFFFFF
        s1 = (s1 + total) & 0xFFFFFFFF
        s1 = (s1 & 0xFFFF) + (s1 >> 16)
        s2 = (s2 & 0xFFFF) + (s2 >> 16)
    s1 = (s1 & 0xFFFF) + (s1 >> 16)
    s2 = (s2 & 0xFFFF) + (s2 >> 16)
    return ((s2 << 16) | s1) & 0xFFFFFFFF


@functools.lru_cache(maxsize=1)
def _chunk_info_available() -> bool:
    """Whether h5py can tell where a chunk lies (HDF5 1.10.5 and later): needed to grow a store."""
    import h5py

    return hasattr(h5py.h5d.DatasetID, "get_chunk_info_by_coord")


def _row_chunks(ds: Any) -> bool:
    """Whether ``ds`` stores each row as one chunk of raw float32 plus a Fletcher-32 checksum and
    nothing else: the layout of a grown store's mel, so such chunks copy as they are."""
    import h5py

    return (ds.chunks == (1,) + tuple(ds.shape[1:]) and ds.dtype == np.dtype("<f4")
            and [flt[0] for flt in _filters(ds)] == [h5py.h5z.FILTER_FLETCHER32])


class _ReferencedRows:
    """A part's mel rows where they lie in ``grown.h5`` (see the module docstring), read without
    HDF5: each chunk's bytes at its recorded offset, checked against their Fletcher-32 checksum.
    Sliced like an h5py dataset (``rows[lo:hi]``); :meth:`raw` gives a chunk as stored."""

    def __init__(self, path: Path, refs: np.ndarray, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.refs = np.asarray(refs, dtype=np.int64).reshape(-1, 2)
        self.row_shape = tuple(int(v) for v in row_shape)
        self.shape = (self.refs.shape[0],) + self.row_shape
        self.chunk_size = 4 * int(np.prod(self.row_shape)) + 4  # float32 data, then its checksum
        self._fd: int | None = os.open(path, os.O_RDONLY)

    def raw(self, i: int, *, check: bool = True) -> bytes:
        """Row ``i``'s chunk as stored (its float32 bytes, then their checksum); ``check``: verify
        the checksum (else it travels with the chunk, and HDF5 checks it wherever it is read)."""
        offset, size = (int(v) for v in self.refs[i])
        data = os.pread(self._fd, size, offset)
        if size != self.chunk_size or len(data) != size:
            raise OSError(f"{self.path}: mel chunk {i} at byte {offset} is {len(data)} bytes, not {self.chunk_size}")
        if check and _fletcher32(memoryview(data)[:-4]) != int.from_bytes(data[-4:], "little"):
            raise OSError(f"{self.path}: mel chunk {i} at byte {offset} fails its Fletcher-32 checksum")
        return data

    def __getitem__(self, rows: slice) -> np.ndarray:
        idx = range(*rows.indices(self.shape[0]))
        out = np.empty((len(idx),) + self.row_shape, dtype=np.float32)
        for j, i in enumerate(idx):
            out[j] = np.frombuffer(self.raw(i), dtype="<f4", count=out[j].size).reshape(self.row_shape)
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _part_mel(part: _Part, f: Any) -> Any:
    """The mel rows of ``part`` (its open file ``f``): its own dataset, or where they lie in grown.h5."""
    if part.mel_file is None:
        return f["mel"]
    return _ReferencedRows(part.mel_file, f[_MEL_REFS][:], tuple(f.attrs["mel_shape"]))


def _write_columns(group: Any, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    import h5py

    for col in columns:
        if col in _NUMERIC:
            group.create_dataset(col, data=frame[col].to_numpy(dtype=_NUMERIC[col]))
        else:
            values = np.array(list(_plain_strings(frame[col])), dtype=object)
            group.create_dataset(col, data=values, dtype=h5py.string_dtype("utf-8"))


def _table_frame(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame``'s ``columns`` exactly as :func:`_read_columns` reads them back from a part written
    by :func:`_write_columns` (plain object strings, numeric dtypes, rows numbered from 0)."""
    data = {}
    for col in columns:
        if col in _NUMERIC:
            data[col] = frame[col].to_numpy(dtype=_NUMERIC[col])
        else:
            data[col] = pd.Series(list(_plain_strings(frame[col])), dtype=object)
    return pd.DataFrame(data)


def _read_columns(path: Path, key: str, columns: Sequence[str], *, only: Sequence[str] | None = None) -> pd.DataFrame:
    """A part's ``meta`` or ``failures`` rows as a frame (plain object strings)."""
    import h5py

    wanted = list(only or columns)
    with h5py.File(path, "r") as f:
        if key not in f:
            return pd.DataFrame({c: pd.Series([], dtype=_NUMERIC.get(c, object)) for c in wanted})
        group = f[key]
        data = {}
        for col in wanted:
            if col in _NUMERIC:
                data[col] = group[col][:].astype(_NUMERIC[col])
            else:
                data[col] = pd.Series(list(group[col].asstr()[:]), dtype=object)
    return pd.DataFrame(data)


def _filters(ds: Any) -> list[tuple]:
    plist = ds.id.get_create_plist()
    return [plist.get_filter(i) for i in range(plist.get_nfilters())]


def _same_chunks(src: Any, dst: Any) -> bool:
    """Whether ``src``'s stored chunks are valid chunks of ``dst`` as they are: one row per chunk
    on both sides, the same dtype, row shape and filter pipeline (Fletcher-32 and its settings).
    Rows referenced in a grown store (:class:`_ReferencedRows`) are such chunks, checksum and all."""
    if isinstance(src, _ReferencedRows):
        return hasattr(dst.id, "write_direct_chunk") and tuple(dst.shape[1:]) == src.row_shape and _row_chunks(dst)
    if not (hasattr(src.id, "read_direct_chunk") and hasattr(dst.id, "write_direct_chunk")):
        return False
    one_row = (1,) + tuple(dst.shape[1:])
    return (src.chunks == dst.chunks == one_row and src.dtype == dst.dtype
            and tuple(src.shape[1:]) == tuple(dst.shape[1:]) and _filters(src) == _filters(dst))


def _copy_chunks(src: Any, dst: Any, rows: int, at: int) -> None:
    """Copy the first ``rows`` rows of ``src`` to ``dst`` from row ``at``, chunk by chunk as stored
    (see :func:`_same_chunks`): nothing is decoded or re-encoded. Each chunk's Fletcher-32 checksum
    travels with it, so a chunk damaged in ``src`` fails its check whenever ``dst`` is read."""
    write = dst.id.write_direct_chunk
    rest = (0,) * (len(dst.shape) - 1)
    if isinstance(src, _ReferencedRows):
        for i in range(rows):
            write((at + i,) + rest, src.raw(i, check=False), 0)
        return
    read = src.id.read_direct_chunk
    for i in range(rows):
        mask, chunk = read((i,) + rest)
        write((at + i,) + rest, chunk, mask)


def _copy_mel(src: Any, dst: Any, rows: int, at: int) -> None:
    """Copy the first ``rows`` mel rows of ``src`` to ``dst`` from row ``at``: chunk for chunk where
    the layouts agree (:func:`_same_chunks`), else decoded, ``_COPY_ROWS`` rows at a time."""
    if _same_chunks(src, dst):
        _copy_chunks(src, dst, rows, at)
        return
    for lo in range(0, rows, _COPY_ROWS):
        hi = min(lo + _COPY_ROWS, rows)
        dst[at + lo:at + hi] = src[lo:hi]


def _write_rows(dst: Any, rows: np.ndarray, at: int) -> None:
    """Write ``rows`` to ``dst`` from row ``at`` in one HDF5 call, whatever its chunks."""
    dst[at:at + rows.shape[0]] = np.asarray(rows, dtype=np.float32)


# -- store files -------------------------------------------------------------------------------
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
    except _READ_ERRORS as exc:
        raise _corrupt(path, exc) from None
    for name in FAMILIES:
        if info["shapes"][name][0] != info["n_rows"]:
            raise StoreError(f"{path}: {name} has {info['shapes'][name][0]} rows, the store says "
                             f"{info['n_rows']}; it is corrupt: featurize it again (--overwrite)")
    info.update(writer_pid=None, work=None, parts=None)
    return info


def _read_header(work: Path) -> dict[str, Any] | None:
    path = work / _HEADER
    if not path.is_file():
        return None
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
        header["session"], header["run_config"]  # noqa: B018 - required keys
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: the work folder of an unfinished featurize is damaged ({exc}); "
                         "featurize again with --overwrite") from None
    version = header.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{work}: unfinished featurize work of schema version {version}; this ser writes "
                         f"version {SCHEMA_VERSION}; featurize again with --overwrite")
    return header


def _partial_info(path: Path, work: Path, header: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of what an unfinished run has committed so far (read-only)."""
    rc = header["run_config"]
    parts = _list_parts(work, header["session"], quiet=True)
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
        "writer_pid": _writer_pid(work),
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
            return _partial_info(path, work, header)
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


def _check_replaceable(path: Path) -> None:
    """``--overwrite`` replaces a feature store (even a damaged one), never another file."""
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"--out {path} is a folder; give a file name for the store")
    if path.stat().st_size == 0:
        return
    if not _is_hdf5(path):
        raise StoreError(f"--out {path} exists and is not a feature store (not an HDF5 file); refusing to "
                         "overwrite it: remove it yourself or choose another --out")
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ours = "ser_schema_version" in f.attrs
    except _READ_ERRORS:
        return  # an HDF5 file too damaged to open: a broken store may be replaced
    if not ours:
        raise StoreError(f"--out {path} is an HDF5 file but not a ser feature store; refusing to overwrite "
                         "it: remove it yourself or choose another --out")


# -- writing -----------------------------------------------------------------------------------
class StoreWriter:
    """Creates or resumes a store and commits batches to it; use as a context manager.

    ``run_config`` is everything that decides the store's content (feature config, split
    config, scan options, augmentations, labels); a resumed store must have the same, else
    :class:`StoreError` names what differs. ``plan_digest`` (optional) identifies the clip
    list and its split: a corpus that changed since the store was started is refused too.
    Batches go to the work folder (see the module docstring); :meth:`finish` writes the store.
    ``clip_table`` is accepted for compatibility; string widths now come from the data itself.
    """

    def __init__(self, path: str | Path, *, run_config: dict[str, Any], descriptor_names: Sequence[str],
                 clip_table: pd.DataFrame | None = None, overwrite: bool = False,
                 plan_digest: str | None = None) -> None:
        self.path = Path(path)
        self.work = work_dir(self.path)
        self.run_config = run_config
        self.plan_digest = plan_digest
        feature = run_config["feature_config"]
        n_mels = int(feature["n_mels"])
        frames = 1 + int(round(feature["max_seconds"] * feature["sample_rate"])) // int(feature["hop_length"])
        self.mel_shape = (n_mels, frames)
        self.descriptor_names = list(descriptor_names)
        self.resumed = False
        self.closed = False
        self._base: dict[str, Any] | None = None
        self._parts: list[_Part] = []
        # (meta, failures) of the parts this writer committed, as _read_columns would read them back
        self._tables: dict[int, tuple[pd.DataFrame | None, pd.DataFrame | None]] = {}
        # (meta, failures) of a last batch that went to the growing store alone (commit(last=True))
        self._last: tuple[pd.DataFrame | None, pd.DataFrame | None] | None = None
        # the store's arrays, built in the work folder (grown.h5) as each batch commits (see _grow)
        self._live: Any = None
        self._live_rows = 0
        self._next_chunk: int | None = None  # where the next mel chunk is expected in grown.h5 (see _locate)
        if overwrite:
            _check_replaceable(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.work.exists()
        self.work.mkdir(exist_ok=True)
        self._lock = _WriterLock(self.work, self.path)
        try:
            if overwrite:
                _clear_work(self.work, keep_lock=True)
                if self.path.exists():
                    self.path.unlink()
                    _fsync_path(self.path.parent, directory=True)
            self._open_session()
        except BaseException:
            self._lock.release()
            if created:
                shutil.rmtree(self.work, ignore_errors=True)
            raise

    # -- resume ------------------------------------------------------------------------------
    def _check_same(self, old_config: dict[str, Any], old_digest: str | None) -> None:
        diffs = describe_differences(old_config, self.run_config)
        if diffs:
            raise StoreError(
                f"{self.path} was made with other arguments ({'; '.join(diffs)}); "
                "rerun with the same arguments to resume it, or pass --overwrite to start over"
            )
        if old_digest and self.plan_digest and old_digest != self.plan_digest:
            raise StoreError(f"the corpus changed since {self.path} was started (its clip list or their "
                             "split is not the same); pass --overwrite to featurize it again")

    def _open_session(self) -> None:
        """Find where the store stands (under the lock) and prepare to commit after it."""
        header = _read_header(self.work)
        final = _final_info(self.path) if self.path.exists() else None
        if header is not None and final is not None and final["session"] == header["session"]:
            _clear_work(self.work, keep_lock=True)  # merged, but stopped before cleaning up
            header = None
        if header is not None:
            self._check_same(header["run_config"], header.get("plan_digest"))
            base = header.get("base_session")
            if (base is None) != (final is None) or (final is not None and final["session"] != base):
                raise StoreError(f"{self.path} changed since the unfinished featurize in {self.work} began; "
                                 "pass --overwrite to start over")
            self._base = final
            self.session = str(header["session"])
            self.resumed = True
        else:
            if final is not None:
                self._check_same(final["run_config"], final.get("plan_digest"))
                if not final["complete"]:
                    raise StoreError(f"{self.path} is marked incomplete; featurize it again with --overwrite")
                self._base = final
                self.resumed = True
            _clear_work(self.work, keep_lock=True)  # stray parts of an older, unrecorded run
            self.session = uuid.uuid4().hex
            header = {"schema_version": SCHEMA_VERSION, "session": self.session,
                      "base_session": final["session"] if final else None,
                      "package_version": __version__, "run_config": self.run_config,
                      "plan_digest": self.plan_digest, "descriptor_names": self.descriptor_names,
                      "mel_shape": list(self.mel_shape)}
            _atomic_write_text(self.work / _HEADER, json.dumps(header, sort_keys=True))
        for leftover in self.work.glob("*.tmp"):  # a batch or merge cut short: never committed
            leftover.unlink()
        # grown.h5 stays: the parts of a fresh run that stopped point into it for their mel
        self._parts = _list_parts(self.work, self.session)
        for entry in self.work.iterdir():  # parts after a gap or a damaged one are redone
            m = _PART_RE.match(entry.name)
            if m and int(m.group(1)) >= len(self._parts):
                entry.unlink()
        self.resumed = self.resumed or bool(self._parts)
        self.n_rows = (self._base["n_rows"] if self._base else 0) + sum(p.n_rows for p in self._parts)
        # a fresh store grows its arrays batch by batch; a resumed one is merged at the end (its new
        # parts then hold their mel themselves)
        self._grow_ok = self._base is None and not self._parts and _chunk_info_available()

    def done_clip_ids(self) -> set[str]:
        """Clip ids already written (as rows or as failures): a resumed run skips them."""
        done: set[str] = set()
        if self._base is not None:
            with Store(self.path) as base:
                done.update(base.meta()["clip_id"].astype(str))
                done.update(base.failures()["clip_id"].astype(str))
        for part in self._parts:
            for key, cols in (("meta", META_COLUMNS), ("failures", FAILURE_COLUMNS)):
                done.update(_read_columns(part.path, key, cols, only=["clip_id"])["clip_id"].astype(str))
        return done

    # -- writing -----------------------------------------------------------------------------
    def commit(self, descriptors: np.ndarray | None = None, mel: np.ndarray | None = None,
               meta: pd.DataFrame | None = None, failures: pd.DataFrame | None = None, *,
               last: bool = False) -> None:
        """Commit one batch atomically: ``k`` rows (``descriptors (k, D)``, ``mel (k, n_mels,
        frames)``, ``meta`` with k rows) and/or failures (``clip_id``, ``path``, ``reason``).

        ``last``: no batch follows before :meth:`finish`. Where the store is growing (a fresh
        run), this batch then goes into it alone, without a part file of its own: finish
        makes it durable with the rest, and the run's tail is shorter by a part's write, fsync
        and deletion. Until finish it is not committed (:attr:`n_rows` leaves it out): a crash
        or Ctrl-C before then loses it, as it loses a batch still being handed over, and the
        rerun computes it again.
        """
        if self.closed:
            raise StoreError(f"{self.path}: the writer is closed")
        if self._last is not None:
            raise StoreError(f"{self.path}: the last batch is committed already; finish the store")
        k = 0 if descriptors is None else int(descriptors.shape[0])
        if descriptors is not None or mel is not None or meta is not None:
            if descriptors is None or mel is None or meta is None or not (mel.shape[0] == k == len(meta)):
                raise StoreError(f"batch sizes differ: {None if descriptors is None else k} descriptors, "
                                 f"{None if mel is None else mel.shape[0]} mel, {None if meta is None else len(meta)} meta")
        n_fail = 0 if failures is None else len(failures)
        if k == 0 and n_fail == 0:
            return
        if k:
            if descriptors.shape[1:] != (len(self.descriptor_names),) or mel.shape[1:] != self.mel_shape:
                raise StoreError(f"batch shapes {descriptors.shape[1:]} / {mel.shape[1:]} do not fit the store's "
                                 f"({len(self.descriptor_names)},) / {self.mel_shape}")
            if not (np.all(np.isfinite(descriptors)) and np.all(np.isfinite(mel))):
                raise StoreError("refusing to store non-finite features (NaN or Inf)")
            meta_frame = _as_plain(meta.loc[:, list(META_COLUMNS)], META_STRING_COLUMNS)
        if n_fail:
            fail_frame = _as_plain(failures.loc[:, list(FAILURE_COLUMNS)], FAILURE_COLUMNS)
            fail_frame["reason"] = fail_frame["reason"].map(lambda r: _clip_bytes(r, _REASON_BYTES))
        # the rows as _merge would read them back from the part: kept, so it need not
        tables = (_table_frame(meta_frame, META_COLUMNS) if k else None,
                  _table_frame(fail_frame, FAILURE_COLUMNS) if n_fail else None)
        if last and k and self._grow_ok and self._grow(descriptors, mel, k, locate=False) is not None:
            self._last = tables
            return
        seq = len(self._parts)
        final = _part_path(self.work, seq)
        tmp = final.with_name(final.name + ".tmp")
        refs = None
        try:
            # the mel goes to the growing store only; its part records where each row's chunk lies
            refs = self._grow(descriptors, mel, k) if k and self._grow_ok else None
            synced = _Sync(self.work / _GROWN) if refs is not None else None  # while the part is written
            self._write_part(tmp, seq, k, n_fail, descriptors, mel if refs is None else None, refs,
                             meta_frame if k else None, fail_frame if n_fail else None)
            _fsync_path(tmp, uncache=True)
            if synced is not None:
                synced.wait()  # the chunks the part points to are on disk before it is committed
            os.replace(tmp, final)  # the commit
            _fsync_path(self.work, directory=True)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if refs is not None:  # the growing store holds a batch that is not committed: the parts decide
                self._stop_growing()
            if not isinstance(exc, OSError):
                raise
            # a full disk, a vanished folder: the batch is not committed
            raise StoreError(f"cannot commit a batch to {self.work} ({exc}); the {self.n_rows} rows committed "
                             "before it are safe: fix the cause and run the same command again") from None
        self._parts.append(_Part(final, seq, k, n_fail, self.work / _GROWN if refs is not None else None))
        self._tables[seq] = tables
        self.n_rows += k

    def _create_arrays(self, f: Any, n: int) -> tuple[Any, Any]:
        d = f.create_dataset("descriptors", shape=(n, len(self.descriptor_names)),
                             maxshape=(None, len(self.descriptor_names)), dtype="float32",
                             chunks=(256, len(self.descriptor_names)), fletcher32=True)
        d.attrs["names"] = _json_attr(self.descriptor_names)
        m = f.create_dataset("mel", shape=(n,) + self.mel_shape, maxshape=(None,) + self.mel_shape,
                             dtype="<f4", chunks=(1,) + self.mel_shape, fletcher32=True)
        return d, m

    def _grow(self, descriptors: np.ndarray, mel: np.ndarray, k: int, *, locate: bool = True) -> np.ndarray | None:
        """Append a batch to the store being built in the work folder (grown.h5) and return where
        its mel rows' chunks lie there, ``(k, 2)`` offsets and sizes, for the batch's part (``locate``
        False: the run's last batch, which has no part; ``(0, 2)``); None if the store could not
        take it (it then stops growing: :meth:`finish` merges the parts).

        The store's HDF5 metadata is flushed but never trusted after a crash; the chunks are: a
        chunk of fixed size (float32 and a checksum) is written once and never moved. So a fresh
        run writes each mel row once, and :meth:`finish` has only the tables to add. The batch
        is written from memory in one HDF5 call (each call hands the GIL over twice, and with every
        handover the thread computing the next batch waits)."""
        import h5py

        path = self.work / _GROWN
        try:
            if self._live is None:  # no chunk cache: each chunk goes to the file as it is written, in order
                self._live = h5py.File(path, "w", libver=_LIBVER, rdcc_nbytes=0)
                self._create_arrays(self._live, 0)
            d, m = self._live["descriptors"], self._live["mel"]
            at = self._live_rows
            d.resize(at + k, axis=0)
            m.resize(at + k, axis=0)
            d[at:at + k] = np.asarray(descriptors, dtype=np.float32)
            _write_rows(m, mel, at)
            self._live.flush()
            refs = self._locate(m, mel, at, path) if locate else np.empty((0, 2), dtype=np.int64)
            self._live_rows = at + k
        except Exception:  # noqa: BLE001 - an optimisation only: fall back to parts holding their mel
            self._stop_growing()
            return None
        return refs

    def _locate(self, m: Any, mel: np.ndarray, at: int, path: Path) -> np.ndarray:
        """Where the chunks of mel rows ``at, at+1, ...`` (just written, ``mel``) lie in grown.h5:
        ``(k, 2)`` offsets and sizes.

        HDF5 tells a chunk's place (``get_chunk_info_by_coord``), but at a cost that grows with the
        number of chunks (it walks the index): ~0.1 ms a row after 1,000 rows. The chunks of one
        write follow each other in row order, with now and then a block of the index between, so
        each row is looked for where the last one ended, and found there when the bytes stored
        equal the row's; HDF5 is asked only where they do not (a few rows a batch). Equal bytes
        are all a reader needs: whichever chunk they belong to, they decode to this row.

        The stored bytes are compared in a read-only map of the file, in the page cache where the
        write just put them: reading them into memory first cost twice the time (a 20 MB copy,
        into pages fresh for every batch). Only this thread writes the file, and only before
        this, so the map never reaches past its end."""
        import mmap

        k = mel.shape[0]
        rows = np.ascontiguousarray(mel, dtype="<f4").reshape(k, -1).view(np.uint8)  # compared bit for bit
        size = rows.shape[1] + 4  # float32 data, then its Fletcher-32 checksum
        rest = (0,) * len(self.mel_shape)
        refs = np.empty((k, 2), dtype=np.int64)
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            with mmap.mmap(f.fileno(), end, access=mmap.ACCESS_READ) as mapped:
                stored = np.frombuffer(mapped, dtype=np.uint8)
                try:
                    pos = self._next_chunk
                    for i in range(k):
                        if pos is None or pos + size > end or not np.array_equal(stored[pos:pos + size - 4], rows[i]):
                            info = m.id.get_chunk_info_by_coord((at + i,) + rest)
                            if info.filter_mask != 0 or info.byte_offset is None or info.size != size:
                                raise OSError(f"mel row {at + i} is not stored as one checksummed chunk")
                            pos = int(info.byte_offset)
                        refs[i] = (pos, size)
                        pos += size
                finally:
                    del stored  # the map closes only once no array looks into it
        self._next_chunk = pos
        return refs

    def _stop_growing(self) -> None:
        """Stop growing the store: :meth:`finish` merges the parts. grown.h5 stays, for the parts
        that point into it; the work folder's clean-up removes it."""
        self._grow_ok = False
        if self._live is not None:
            try:
                self._live.close()
            except Exception:  # noqa: BLE001
                pass
            self._live = None

    def _write_part(self, tmp: Path, seq: int, k: int, n_fail: int, descriptors: Any,
                    mel: np.ndarray | None, mel_refs: np.ndarray | None, meta_frame: pd.DataFrame | None,
                    fail_frame: pd.DataFrame | None) -> None:
        """Write a batch's part file to ``tmp`` (not yet synced: :meth:`commit` does that): its mel
        rows themselves, or ``mel_refs``, where they lie in grown.h5."""
        import h5py

        with h5py.File(tmp, "w", libver=_LIBVER) as f:
            f.attrs.update(session=self.session, seq=seq, n_rows=k, n_failures=n_fail, mel_shape=self.mel_shape)
            if k:
                f.create_dataset("descriptors", data=np.asarray(descriptors, dtype=np.float32), fletcher32=True,
                                 chunks=(min(k, 256), descriptors.shape[1]))
                if mel_refs is not None:
                    f.create_dataset(_MEL_REFS, data=mel_refs, fletcher32=True)
                else:
                    m = f.create_dataset("mel", shape=(k,) + self.mel_shape, dtype="<f4", fletcher32=True,
                                         chunks=(1,) + self.mel_shape)
                    _write_rows(m, mel, 0)
                _write_columns(f.create_group("meta"), meta_frame, META_COLUMNS)
            if n_fail:
                _write_columns(f.create_group("failures"), fail_frame, FAILURE_COLUMNS)

    def append(self, descriptors: np.ndarray, mel: np.ndarray, meta: pd.DataFrame) -> None:
        """Append ``k`` rows: ``descriptors (k, D)``, ``mel (k, n_mels, frames)``, ``meta`` (k rows)."""
        self.commit(descriptors, mel, meta)

    def add_failures(self, failures: pd.DataFrame) -> None:
        """Record files that could not be used (columns ``clip_id``, ``path``, ``reason``)."""
        self.commit(failures=failures)

    def finish(self) -> pd.DataFrame | None:
        """Write the complete store (base rows, then every part, in order) and remove the work folder.

        The store appears whole, by an atomic rename; a store resumed with nothing new to add is
        left byte for byte as it was. Returns the meta table written (None when nothing was
        written), so a caller need not read it back.
        """
        if self.closed:
            raise StoreError(f"{self.path}: the writer is closed")
        meta = None
        if self._parts or self._base is None:
            tmp = self.work / _MERGED
            try:
                meta, tmp = self._merge(tmp)
                _fsync_path(tmp)
                os.replace(tmp, self.path)  # the store appears, whole
            except OSError as exc:
                if tmp.name == _MERGED:  # grown.h5 may hold committed chunks: the clean-up removes it
                    tmp.unlink(missing_ok=True)
                raise StoreError(f"cannot write {self.path} ({exc}); every batch is still committed in "
                                 f"{self.work}: fix the cause and run the same command again") from None
            _fsync_path(self.path.parent, directory=True)
        _clear_work(self.work, keep_lock=True)
        self.close()
        for name in (_LOCK, _PID):
            try:
                (self.work / name).unlink()
            except FileNotFoundError:
                pass
        try:
            self.work.rmdir()
        except OSError:
            pass
        return meta

    def _merge(self, tmp: Path) -> tuple[pd.DataFrame, Path]:
        """Write the whole store: into the grown store where it holds every row, else to ``tmp``.
        Returns its meta table and the file written."""
        import h5py

        sources: list[tuple[Path, int, _Part | None]] = []
        metas, fails = [], []
        if self._base is not None:
            with Store(self.path) as base:
                metas.append(_as_plain(base.meta().loc[:, list(META_COLUMNS)], META_STRING_COLUMNS))
                fails.append(_as_plain(base.failures().loc[:, list(FAILURE_COLUMNS)], FAILURE_COLUMNS))
            sources.append((self.path, self._base["n_rows"], None))

        def at_hand(tables: tuple[pd.DataFrame | None, pd.DataFrame | None]) -> None:
            meta_rows, fail_rows = tables
            if meta_rows is not None:
                metas.append(meta_rows)
            if fail_rows is not None:
                fails.append(fail_rows)

        for part in self._parts:
            if part.seq in self._tables:  # committed by this writer: its rows are still at hand
                at_hand(self._tables[part.seq])
            else:
                metas.append(_read_columns(part.path, "meta", META_COLUMNS))
                fails.append(_read_columns(part.path, "failures", FAILURE_COLUMNS))
            sources.append((part.path, part.n_rows, part))
        if self._last is not None:  # the last batch, in the growing store only (see commit's last)
            at_hand(self._last)
        metas = [m for m in metas if len(m)]
        fails = [f for f in fails if len(f)]
        meta = (pd.concat(metas, ignore_index=True) if metas
                else pd.DataFrame({c: pd.Series([], dtype=_NUMERIC.get(c, object)) for c in META_COLUMNS}))
        failures = pd.concat(fails, ignore_index=True) if fails else pd.DataFrame(columns=list(FAILURE_COLUMNS))
        for col, dtype in _NUMERIC.items():
            meta[col] = meta[col].astype(dtype)
        n = len(meta)
        last_rows = 0 if self._last is None or self._last[0] is None else len(self._last[0])
        if n != sum(rows for _, rows, _ in sources) + last_rows:
            raise StoreError(f"{self.work}: meta rows ({n}) and array rows disagree; featurize with --overwrite")
        live = self._live is not None and self._grow_ok and self._live_rows == n
        if self._last is not None and not live:  # its rows are nowhere else
            raise StoreError(f"{self.path}: the store being grown lost the last batch; run the same command "
                             "again to compute it anew")
        if live:
            f = self._live
            self._live = None
            tmp = self.work / _GROWN
        else:
            self._stop_growing()
            f = h5py.File(tmp, "w", libver=_LIBVER)
        with f:
            f.attrs["ser_schema_version"] = SCHEMA_VERSION
            f.attrs["package_version"] = __version__
            f.attrs["feature_config"] = _json_attr(self.run_config["feature_config"])
            f.attrs["split_config"] = _json_attr(self.run_config["split_config"])
            f.attrs["labels"] = _json_attr(self.run_config["labels"])
            f.attrs["run_config"] = _json_attr(self.run_config)
            f.attrs["complete"] = 1  # int, not bool: PyTables warns on HDF5 enum bools
            f.attrs["n_rows"] = n
            f.attrs["session"] = self.session
            f.attrs["plan_digest"] = self.plan_digest or (self._base or {}).get("plan_digest") or ""
            if not live:  # grown batch by batch, the arrays hold every row already
                self._copy_rows(f, n, sources)
        meta.index = pd.RangeIndex(0, n)
        failures.index = pd.RangeIndex(0, len(failures))
        with warnings.catch_warnings(), pd.HDFStore(tmp, mode="a", **_TABLE_FILTERS) as hdf:
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            if n:
                hdf.append("meta", meta, format="table", data_columns=_DATA_COLUMNS,
                           min_itemsize=_itemsizes(meta, META_STRING_COLUMNS), index=False)
            if len(failures):
                hdf.append("failures", failures, format="table",
                           min_itemsize=_itemsizes(failures, FAILURE_COLUMNS), index=False)
        return meta, tmp

    def _copy_rows(self, f: Any, n: int, sources: list[tuple[Path, int, _Part | None]]) -> None:
        """Create ``f``'s arrays for ``n`` rows and copy every source's rows in, in order (mel
        chunk for chunk where the layouts agree, see :func:`_copy_mel`)."""
        import h5py

        d, m = self._create_arrays(f, n)
        pos = 0
        for src, rows, part in sources:
            if rows == 0:
                continue
            with h5py.File(src, "r") as s:
                for lo in range(0, rows, _COPY_ROWS):
                    hi = min(lo + _COPY_ROWS, rows)
                    d[pos + lo:pos + hi] = s["descriptors"][lo:hi]
                mel = s["mel"] if part is None else _part_mel(part, s)
                try:
                    _copy_mel(mel, m, rows, pos)
                finally:
                    if isinstance(mel, _ReferencedRows):
                        mel.close()
            pos += rows

    def close(self) -> None:
        """Release the lock; committed parts stay for the next run to resume from."""
        if not self.closed:
            self.closed = True
            self._stop_growing()  # unfinished: the parts are the record (and grown.h5's chunks they name)
            try:
                (self.work / _PID).unlink()
            except FileNotFoundError:
                pass
            self._lock.release()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            self.close()


# -- reading -----------------------------------------------------------------------------------
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
        # (file, first row, rows, part) of each file holding rows: the store, or the committed parts
        self._sources: list[tuple[Path, int, int, _Part | None]] = []
        if info["complete"]:
            self._sources.append((self.path, 0, info["n_rows"], None))
        else:
            start = 0
            for part in info["parts"]:
                self._sources.append((part.path, start, part.n_rows, part))
                start += part.n_rows
        self._h5: dict[Path, Any] = {}
        self._referenced: dict[Path, _ReferencedRows] = {}  # a part's mel rows in grown.h5
        self._pid: int | None = None
        self._meta: pd.DataFrame | None = None

    def _dataset(self, source: Path, family: str, part: _Part | None = None) -> Any:
        import h5py

        if self._pid != os.getpid():
            self._h5, self._referenced, self._pid = {}, {}, os.getpid()
        if source in self._referenced and family == "mel":
            return self._referenced[source]
        if source not in self._h5:
            try:
                self._h5[source] = h5py.File(source, "r")
            except _READ_ERRORS as exc:
                if not source.exists():  # h5py reports a vanished file as a stat error, not FileNotFoundError
                    raise self._vanished(source) from None
                raise _corrupt(source, exc) from None
        if family == "mel" and part is not None and part.mel_file is not None:
            try:
                self._referenced[source] = _part_mel(part, self._h5[source])
            except FileNotFoundError:
                raise self._vanished(part.mel_file) from None
            return self._referenced[source]
        return self._h5[source][family]

    def _vanished(self, source: Path) -> StoreChanged:
        return StoreChanged(f"{self.path}: {source.name} vanished while reading: the run that was "
                            "writing the store finished or restarted; open it again")

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in [*self._h5.values(), *self._referenced.values()]:
                try:
                    f.close()
                except _READ_ERRORS:
                    pass
        self._h5, self._referenced = {}, {}
        self._pid = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # never ship an open handle to another process
        state = dict(self.__dict__)
        state["_h5"], state["_referenced"] = {}, {}
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
                    frames = [_read_columns(src, "meta", META_COLUMNS) for src, _, n_src, _ in self._sources if n_src]
                    meta = (pd.concat(frames, ignore_index=True) if frames
                            else pd.DataFrame(columns=list(META_COLUMNS)))
            except StoreError:
                raise
            except FileNotFoundError:
                raise StoreChanged(f"{self.path}: the store changed while reading (its run finished or "
                                   "restarted); open it again") from None
            except _READ_ERRORS as exc:
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
            frames = [_read_columns(p.path, "failures", FAILURE_COLUMNS) for p in self.info["parts"]]
        except FileNotFoundError:
            raise StoreChanged(f"{self.path}: the store changed while reading (its run finished or "
                               "restarted); open it again") from None
        except _READ_ERRORS as exc:
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
        for source, first, n, part in self._sources:
            lo_i = int(np.searchsorted(sorted_rows, first, side="left"))
            hi_i = int(np.searchsorted(sorted_rows, first + n, side="left"))
            if lo_i == hi_i:
                continue
            ds = self._dataset(source, family, part)
            local = sorted_rows[lo_i:hi_i] - first
            try:
                _read_blocks(ds, local, order[lo_i:hi_i], out)
            except _READ_ERRORS as exc:
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
        h.update(_json_attr(self.info["run_config"]).encode())
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
