"""Writing a store: :class:`StoreWriter` opens (or resumes) a run, commits the parts its tasks
wrote, in plan order, and merges them into ``feats.h5`` at the end.

Crash safety: the store file is never written in place. Parts are written whole and fsynced
before they are committed (an atomic rename, :mod:`ser.store.parts`); :meth:`StoreWriter.finish`
merges the parts (after the rows of an existing store it resumed; mel chunks copied as stored)
into a temporary file in the work folder, fsyncs it, renames it over ``feats.h5`` (atomic) and
removes the folder. A SIGKILL at any moment therefore leaves the previous state or the next one,
never half an HDF5 file, and the rerun resumes from the committed parts.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ser import __version__
from ser.errors import StoreError
from ser.store.files import (HEADER, LOCK, PID, WriterLock, atomic_write_text, clear_work, fsync_path, is_hdf5,
                             work_dir)
from ser.store.layout import (DATA_COLUMNS, FAILURE_COLUMNS, LIBVER, META_COLUMNS, META_STRING_COLUMNS, NUMERIC,
                              READ_ERRORS, SCHEMA_VERSION, TABLE_FILTERS, as_plain, copy_rows, create_arrays,
                              itemsizes, json_attr, mel_shape, read_columns)
from ser.store.parts import Part, PartData, PartSpec, Receipt, list_parts, part_path, stray_parts, write_part
from ser.store.reader import WORK_VERSION, Store, _final_info, _read_header, describe_differences

_MERGED = "merged.h5.tmp"


def _check_replaceable(path: Path) -> None:
    """``--overwrite`` replaces a feature store (even a damaged one), never another file."""
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"--out {path} is a folder; give a file name for the store")
    if path.stat().st_size == 0:
        return
    if not is_hdf5(path):
        raise StoreError(f"--out {path} exists and is not a feature store (not an HDF5 file); refusing to "
                         "overwrite it: remove it yourself or choose another --out")
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ours = "ser_schema_version" in f.attrs
    except READ_ERRORS:
        return  # an HDF5 file too damaged to open: a broken store may be replaced
    if not ours:
        raise StoreError(f"--out {path} is an HDF5 file but not a ser feature store; refusing to overwrite "
                         "it: remove it yourself or choose another --out")


class StoreWriter:
    """Creates or resumes a store and commits parts to it; use as a context manager.

    ``run_config`` is everything that decides the store's content (feature config, split
    config, scan options, augmentations, labels); a resumed store must have the same, else
    :class:`StoreError` names what differs. ``plan_digest`` (optional) identifies the clip
    list and its split: a corpus that changed since the store was started is refused too.
    Tasks write parts (:func:`ser.store.parts.write_part`, given :meth:`part_spec`); this writer
    commits them in plan order (:meth:`commit`), and :meth:`finish` writes the store.
    """

    def __init__(self, path: str | Path, *, run_config: dict[str, Any], descriptor_names: Sequence[str],
                 overwrite: bool = False, plan_digest: str | None = None) -> None:
        self.path = Path(path)
        self.work = work_dir(self.path)
        self.run_config = run_config
        self.plan_digest = plan_digest
        self.mel_shape = mel_shape(run_config["feature_config"])
        self.descriptor_names = list(descriptor_names)
        self.resumed = False
        self.closed = False
        self.run = uuid.uuid4().hex[:12]  # this writer's token in its tasks' tmp names
        self._base: dict[str, Any] | None = None
        self._parts: list[Part] = []
        # the meta and failure rows of the parts committed here, as written (the merge's, unread)
        self._tables: dict[int, tuple[pd.DataFrame, pd.DataFrame]] = {}
        self._merged: Any = None  # the store being merged as parts are committed (see _merge_committed)
        self._merged_parts = 0    # how many of self._parts it holds
        if overwrite:
            _check_replaceable(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.work.exists()
        self.work.mkdir(exist_ok=True)
        self._lock = WriterLock(self.work, self.path)
        try:
            if overwrite:
                clear_work(self.work, keep_lock=True)
                if self.path.exists():
                    self.path.unlink()
                    fsync_path(self.path.parent, directory=True)
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

    def _resume_header(self, header: dict[str, Any], final: dict[str, Any] | None) -> None:
        """Go on with the unfinished run ``header`` describes (on top of the store ``final``, if any)."""
        self._check_same(header["run_config"], header.get("plan_digest"))
        base = header.get("base_session")
        if (base is None) != (final is None) or (final is not None and final["session"] != base):
            raise StoreError(f"{self.path} changed since the unfinished featurize in {self.work} began; "
                             "pass --overwrite to start over")
        self._base = final
        self.session = str(header["session"])
        self.resumed = True

    def _new_header(self, final: dict[str, Any] | None) -> None:
        """Start a new run (adding to the complete store ``final``, if any)."""
        if final is not None:
            self._check_same(final["run_config"], final.get("plan_digest"))
            if not final["complete"]:
                raise StoreError(f"{self.path} is marked incomplete; featurize it again with --overwrite")
            self._base = final
            self.resumed = True
        clear_work(self.work, keep_lock=True)  # stray parts of an older, unrecorded run
        self.session = uuid.uuid4().hex
        header = {"schema_version": SCHEMA_VERSION, "work_version": WORK_VERSION, "session": self.session,
                  "base_session": final["session"] if final else None,
                  "package_version": __version__, "run_config": self.run_config,
                  "plan_digest": self.plan_digest, "descriptor_names": self.descriptor_names,
                  "mel_shape": list(self.mel_shape)}
        atomic_write_text(self.work / HEADER, json.dumps(header, sort_keys=True))

    def _open_session(self) -> None:
        """Find where the store stands (under the lock) and prepare to commit after it."""
        header = _read_header(self.work)
        final = _final_info(self.path) if self.path.exists() else None
        if header is not None and final is not None and final["session"] == header["session"]:
            clear_work(self.work, keep_lock=True)  # merged, but stopped before cleaning up
            header = None
        if header is not None:
            self._resume_header(header, final)
        else:
            self._new_header(final)
        self._parts = list_parts(self.work, self.session)
        for stray in stray_parts(self.work, self._parts):  # never committed, or after a gap: redone
            stray.unlink(missing_ok=True)
        self.resumed = self.resumed or bool(self._parts)
        self.n_rows = (self._base["n_rows"] if self._base else 0) + sum(p.n_rows for p in self._parts)

    def done_clip_ids(self) -> set[str]:
        """Clip ids already written (as rows or as failures): a resumed run skips them."""
        done: set[str] = set()
        if self._base is not None:
            with Store(self.path) as base:
                done.update(base.meta()["clip_id"].astype(str))
                done.update(base.failures()["clip_id"].astype(str))
        for part in self._parts:
            for key, cols in (("meta", META_COLUMNS), ("failures", FAILURE_COLUMNS)):
                done.update(read_columns(part.path, key, cols, only=["clip_id"])["clip_id"].astype(str))
        return done

    # -- writing -----------------------------------------------------------------------------
    def part_spec(self, *, shared: bool = True) -> PartSpec:
        """What a task needs to write its part (``shared``: whether it can see the work folder)."""
        return PartSpec(work=self.work if shared else None, run=self.run, session=self.session,
                        descriptor_names=tuple(self.descriptor_names), mel_shape=self.mel_shape)

    @property
    def next_seq(self) -> int:
        """The plan-order number of the next part to commit."""
        return len(self._parts)

    def commit(self, receipt: Receipt) -> None:
        """Commit a task's part, atomically: the file a worker wrote (``receipt.path``) or, for a
        worker that could not see the work folder, one written here from its rows (``receipt.data``).
        Parts are committed in plan order: ``receipt.seq`` must be :attr:`next_seq`."""
        if self.closed:
            raise StoreError(f"{self.path}: the writer is closed")
        if receipt.seq != self.next_seq:
            why = "is committed already" if receipt.seq < self.next_seq else f"came before part {self.next_seq}"
            raise StoreError(f"{self.work}: part {receipt.seq} {why}: parts are committed once each, in plan order")
        final = part_path(self.work, receipt.seq)
        tmp, tables = receipt.path, receipt.tables
        try:
            if receipt.data is not None:
                tmp = self.part_spec().tmp_path(receipt.seq)
                tables = write_part(tmp, self.part_spec(), receipt.seq, receipt.data)
            os.replace(tmp, final)  # the commit
            fsync_path(self.work, directory=True)
        except OSError as exc:  # a full disk, a vanished folder: the part is not committed
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise StoreError(f"cannot commit a part to {self.work} ({exc}); the {self.n_rows} rows committed "
                             "before it are safe: fix the cause and run the same command again") from None
        self._parts.append(Part(final, receipt.seq, receipt.n_rows, receipt.n_failures))
        if tables is not None:
            self._tables[receipt.seq] = tables
        self.n_rows += receipt.n_rows
        self._merge_committed()

    def _merge_committed(self) -> None:
        """Copy the committed parts' rows not yet merged into the store being built (the work
        folder's ``merged.h5.tmp``: the base store's rows first, then the parts in order).

        Merging as parts come, while the workers compute the next ones, leaves :meth:`finish` the
        tables alone to add: no serial copy of every row at the end of a run (~1 s of a 22 s run
        of 1,200 clips on 2 workers, more with more workers). Nothing relies on this file until it
        is finished: after a crash it is removed with the other uncommitted files and merged anew
        from the parts."""
        import h5py

        try:
            if self._merged is None:
                self._merged = h5py.File(self.work / _MERGED, "w", libver=LIBVER)
                create_arrays(self._merged, 0, self.descriptor_names, self.mel_shape)
                if self._base is not None:
                    self._append_rows(self.path, self._base["n_rows"])
            for part in self._parts[self._merged_parts:]:
                self._append_rows(part.path, part.n_rows)
                self._merged_parts += 1
        except OSError as exc:
            self._drop_merged()
            raise StoreError(f"cannot write {self.work / _MERGED} ({exc}); the {self.n_rows} rows committed "
                             "are safe: fix the cause and run the same command again") from None

    def _append_rows(self, source: Path, rows: int) -> None:
        """Append ``source``'s ``rows`` array rows to the store being merged."""
        import h5py

        if not rows:
            return
        d, m = self._merged["descriptors"], self._merged["mel"]
        at = d.shape[0]
        d.resize(at + rows, axis=0)
        m.resize(at + rows, axis=0)
        with h5py.File(source, "r") as s:
            copy_rows(s["descriptors"], d, rows, at)
            copy_rows(s["mel"], m, rows, at)

    def _drop_merged(self) -> None:
        """Close and remove the store being merged, unfinished; the parts stay the record."""
        if self._merged is not None:
            try:
                self._merged.close()
            except Exception:  # noqa: BLE001 - closing a file already broken by the error at hand
                pass
            self._merged, self._merged_parts = None, 0
            (self.work / _MERGED).unlink(missing_ok=True)

    def write(self, data: PartData) -> None:
        """Write and commit one part from rows held here (the scan's failures, say)."""
        self.commit(Receipt(seq=self.next_seq, n_rows=data.n_rows, n_failures=len(data.failures), n_clips=0,
                            data=data))

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
                meta = self._finish_merged()
                fsync_path(tmp)
                os.replace(tmp, self.path)  # the store appears, whole
            except OSError as exc:
                self._drop_merged()
                tmp.unlink(missing_ok=True)
                raise StoreError(f"cannot write {self.path} ({exc}); every part is still committed in "
                                 f"{self.work}: fix the cause and run the same command again") from None
            fsync_path(self.path.parent, directory=True)
        self._remove_work()
        return meta

    def _remove_work(self) -> None:
        clear_work(self.work, keep_lock=True)
        self.close()
        for name in (LOCK, PID):
            (self.work / name).unlink(missing_ok=True)
        try:
            self.work.rmdir()
        except OSError:
            pass

    def _merged_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Every row's meta and every failure, in order (base store first)."""
        metas, fails = [], []
        if self._base is not None:
            with Store(self.path) as base:
                metas.append(as_plain(base.meta().loc[:, list(META_COLUMNS)], META_STRING_COLUMNS))
                fails.append(as_plain(base.failures().loc[:, list(FAILURE_COLUMNS)], FAILURE_COLUMNS))
        for part in self._parts:
            if part.seq in self._tables:  # committed here: its rows are at hand
                meta_rows, fail_rows = self._tables[part.seq]
            else:  # committed by an earlier run
                meta_rows = read_columns(part.path, "meta", META_COLUMNS)
                fail_rows = read_columns(part.path, "failures", FAILURE_COLUMNS)
            metas.append(meta_rows)
            fails.append(fail_rows)
        metas = [m for m in metas if len(m)]
        fails = [f for f in fails if len(f)]
        meta = (pd.concat(metas, ignore_index=True) if metas
                else pd.DataFrame({c: pd.Series([], dtype=NUMERIC.get(c, object)) for c in META_COLUMNS}))
        failures = pd.concat(fails, ignore_index=True) if fails else pd.DataFrame(columns=list(FAILURE_COLUMNS))
        for col, dtype in NUMERIC.items():
            meta[col] = meta[col].astype(dtype)
        meta.index = pd.RangeIndex(0, len(meta))
        failures.index = pd.RangeIndex(0, len(failures))
        return meta, failures

    def _finish_merged(self) -> pd.DataFrame:
        """Finish the store being merged: every committed part's rows, its attributes, then its
        tables (written through pandas, into the closed file); returns its meta table."""
        self._merge_committed()
        meta, failures = self._merged_tables()
        n = len(meta)
        f, self._merged, self._merged_parts = self._merged, None, 0
        with f:
            if n != f["descriptors"].shape[0]:
                raise StoreError(f"{self.work}: meta rows ({n}) and array rows ({f['descriptors'].shape[0]}) "
                                 "disagree; featurize with --overwrite")
            self._write_attrs(f, n)
        tmp = self.work / _MERGED
        with warnings.catch_warnings(), pd.HDFStore(tmp, mode="a", **TABLE_FILTERS) as hdf:
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            if n:
                hdf.append("meta", meta, format="table", data_columns=DATA_COLUMNS,
                           min_itemsize=itemsizes(meta, META_STRING_COLUMNS), index=False)
            if len(failures):
                hdf.append("failures", failures, format="table",
                           min_itemsize=itemsizes(failures, FAILURE_COLUMNS), index=False)
        return meta

    def _write_attrs(self, f: Any, n: int) -> None:
        f.attrs["ser_schema_version"] = SCHEMA_VERSION
        f.attrs["package_version"] = __version__
        f.attrs["feature_config"] = json_attr(self.run_config["feature_config"])
        f.attrs["split_config"] = json_attr(self.run_config["split_config"])
        f.attrs["labels"] = json_attr(self.run_config["labels"])
        f.attrs["run_config"] = json_attr(self.run_config)
        f.attrs["complete"] = 1  # int, not bool: PyTables warns on HDF5 enum bools
        f.attrs["n_rows"] = n
        f.attrs["session"] = self.session
        f.attrs["plan_digest"] = self.plan_digest or (self._base or {}).get("plan_digest") or ""

    def close(self) -> None:
        """Release the lock; committed parts stay for the next run to resume from."""
        if not self.closed:
            self.closed = True
            self._drop_merged()
            (self.work / PID).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            self.close()
