"""The HDF5 store: layout, pandas-readable meta, ordered reads, parts committed and merged, refusals."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import ser.store.parts as parts_mod
import ser.store.reader as reader_mod
import ser.store.writer as writer_mod
from ser import __version__
from ser.errors import StoreError
from ser.features.config import FeatureConfig, descriptor_names
from ser.corpus.labels import CREMAD_EMOTIONS
from ser.store import SCHEMA_VERSION, Store, StoreWriter, describe_differences, read_attrs, work_dir
from ser.store.layout import META_COLUMNS, plain_strings, same_chunks
from ser.store.parts import PartData, part_path
from array_store import tiny_rows

# -- the session store ---------------------------------------------------------------------------


def test_meta_reads_back_with_pandas_one_row_per_array_row(small_store: Path) -> None:
    meta = pd.read_hdf(small_store, "meta")
    with h5py.File(small_store, "r") as f:
        n_desc, n_mel = f["descriptors"].shape[0], f["mel"].shape[0]
    assert len(meta) == n_desc == n_mel > 48
    assert list(meta.index) == list(range(len(meta)))
    assert set(META_COLUMNS) <= set(meta.columns)
    assert meta["label"].dtype == np.int64 and meta["n_frames"].dtype == np.int64
    assert meta["duration_s"].dtype == np.float64
    # data columns can be queried without loading the table
    test = pd.read_hdf(small_store, "meta", where="split == 'test'")
    pd.testing.assert_frame_equal(test, meta[meta["split"] == "test"])


def test_store_describes_itself(small_store: Path, small_store_config) -> None:
    info = read_attrs(small_store)
    assert info["schema_version"] == SCHEMA_VERSION
    assert info["package_version"] == __version__
    assert info["complete"] is True
    assert info["feature_config"] == small_store_config.features.to_dict()
    assert FeatureConfig.from_dict(info["feature_config"]) == small_store_config.features
    assert info["split_config"] == small_store_config.split.to_dict()
    assert info["labels"] == list(CREMAD_EMOTIONS)
    assert info["descriptor_names"] == descriptor_names(small_store_config.features)
    assert info["run_config"]["augment"] == ["noise", "shift"]
    cfg = small_store_config.features
    assert info["shapes"]["mel"][1:] == (cfg.n_mels, cfg.n_frames)
    with h5py.File(small_store, "r") as f:
        assert f["mel"].chunks == (1, cfg.n_mels, cfg.n_frames)  # one chunk per row
        assert f["descriptors"].dtype == np.float32 and f["mel"].dtype == np.float32


@pytest.mark.parametrize("family", ["descriptors", "mel"])
@pytest.mark.parametrize("row_chunk", [1024, 5])  # one block, and many blocks
def test_read_returns_rows_in_the_requested_order(small_store: Path, family: str, row_chunk: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_mod, "_ROW_CHUNK", row_chunk)
    store = Store(small_store)
    n = store.n_rows
    rows = np.random.default_rng(3).permutation(n)[:25]
    rows = np.concatenate([rows, rows[:3], [n - 1, 0]])  # duplicates and both ends
    got = store.read(family, rows)
    with h5py.File(small_store, "r") as f:
        expected = np.stack([f[family][int(r)] for r in rows])
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert store.read(family, np.array([], dtype=np.int64)).shape == (0,) + expected.shape[1:]
    store.close()


@pytest.mark.parametrize("bad", [[10_000], [0, -1]])
def test_read_refuses_rows_out_of_range(small_store: Path, bad: list[int]) -> None:
    # regression: a row past the end used to spin forever in the block loop
    with Store(small_store) as store, pytest.raises(StoreError, match="out of range"):
        store.read("mel", np.array(bad))


def test_read_refuses_an_unknown_family(small_store: Path) -> None:
    with Store(small_store) as store, pytest.raises(StoreError, match="unknown feature family"):
        store.read("mfcc", np.array([0]))


def test_load_split_matches_meta(small_store: Path) -> None:
    meta = pd.read_hdf(small_store, "meta")
    store = Store(small_store)
    seen = []
    for split in ("train", "val", "test"):
        for family in ("descriptors", "mel"):
            X, y, m = store.load_split(split, family)
            assert len(X) == len(y) == len(m) == (meta["split"] == split).sum() > 0
            assert (m["split"] == split).all()
            pd.testing.assert_frame_equal(m, meta.loc[m.index])
            np.testing.assert_array_equal(y, m["label"].to_numpy())
            np.testing.assert_array_equal(X, store.read(family, m.index.to_numpy()))
        assert list(store.rows(split)) == sorted(store.rows(split))
        seen += list(store.rows(split))
    assert sorted(seen) == list(range(len(meta)))
    labels = store.labels
    assert all(labels[label] == emotion for label, emotion in zip(meta["label"], meta["emotion"]))


def test_store_pickles_without_its_handle(small_store: Path) -> None:
    store = Store(small_store)
    first = store.read("descriptors", np.array([2, 1]))
    clone = pickle.loads(pickle.dumps(store))
    assert not clone._h5  # no handle travels with a pickled store
    np.testing.assert_array_equal(clone.read("descriptors", np.array([2, 1])), first)
    store.close()
    clone.close()


def test_fingerprint_is_stable_and_follows_content(small_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.h5"
    shutil.copy(small_store, copy)
    assert Store(small_store).fingerprint() == Store(copy).fingerprint()
    other = _writer(tmp_path / "other.h5")
    other.write(_part(0, 3))
    other.finish()
    assert Store(other.path).fingerprint() != Store(small_store).fingerprint()


# -- writer unit tests (no audio) ----------------------------------------------------------------

FEATURES = {"n_mels": 4, "max_seconds": 0.1, "sample_rate": 1000, "hop_length": 50}  # 3 frames
NAMES = ["a_mean", "b_mean"]


def _run_config(**changes: object) -> dict:
    rc = {"feature_config": dict(FEATURES), "split_config": {"method": "random", "seed": 42},
          "labels": ["ANG", "SAD"], "augment": []}
    rc.update(changes)
    return rc


def _writer(path: Path, **kw: object) -> StoreWriter:
    kw.setdefault("run_config", _run_config())
    return StoreWriter(path, descriptor_names=NAMES, **kw)


def _part(start: int, k: int, failures: pd.DataFrame | None = None) -> PartData:
    """Rows of clips ``start`` .. ``start + k - 1`` as a part's data (and ``failures``, if given)."""
    data = PartData(*tiny_rows(start, k))
    if failures is not None:
        data.failures = failures
    return data


def _fail(*clip_ids: str, reason: str = "silent") -> pd.DataFrame:
    return pd.DataFrame({"clip_id": list(clip_ids), "path": [f"{c}.wav" for c in clip_ids],
                         "reason": [reason] * len(clip_ids)})


def test_writer_writes_parts_in_order(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    batches = [tiny_rows(0, 2), tiny_rows(2, 3)]
    for b in batches:
        w.write(PartData(*b))
    assert w.next_seq == 2 and w.n_rows == 5
    w.finish()
    store = Store(w.path)
    np.testing.assert_array_equal(store.read("descriptors", np.arange(5)), np.concatenate([b[0] for b in batches]))
    np.testing.assert_array_equal(store.read("mel", np.arange(5)), np.concatenate([b[1] for b in batches]))
    assert list(store.meta()["clip_id"]) == [f"clip{i}" for i in range(5)]
    assert list(store.meta().index) == list(range(5))


def test_writer_refuses_a_part_whose_arrays_disagree(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    desc, mel, meta = tiny_rows(0, 3)
    with pytest.raises(StoreError, match="part sizes differ"):
        w.write(PartData(desc, mel[:2], meta))
    with pytest.raises(StoreError, match="do not fit the store"):
        w.write(PartData(desc, mel[:, :, :2], meta))
    mel[1, 0, 0] = np.nan
    with pytest.raises(StoreError, match="non-finite"):
        w.write(PartData(desc, mel, meta))
    assert w.next_seq == 0 and w.n_rows == 0 and not list(w.work.glob("*.h5"))  # nothing committed, nothing left


def test_reopening_ignores_a_batch_cut_short(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    w.close()
    # a crash mid-commit leaves a half-written part (the commit is its rename, which never came)
    strays = [work_dir(w.path) / "part-000001.h5.tmp", w.part_spec().tmp_path(1)]
    for stray in strays:
        stray.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert read_attrs(w.path)["shapes"]["descriptors"][0] == 2
    again = _writer(w.path)
    assert again.resumed and again.n_rows == 2 and again.next_seq == 1
    assert not any(stray.exists() for stray in strays)
    assert again.done_clip_ids() == {"clip0", "clip1"}
    again.write(_part(2, 1))
    again.finish()
    with h5py.File(w.path, "r") as f:
        np.testing.assert_array_equal(f["descriptors"][2], tiny_rows(2, 1)[0][0])
        assert f["descriptors"].shape[0] == 3
    assert not work_dir(w.path).exists()


def test_the_store_appears_only_when_finished(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    assert not w.path.exists() and (work_dir(w.path) / "part-000000.h5").is_file()
    info = read_attrs(w.path)
    assert not info["complete"] and info["n_rows"] == 2
    w.finish()
    assert w.path.is_file() and not work_dir(w.path).exists()
    assert read_attrs(w.path)["complete"] and pd.read_hdf(w.path, "meta")["clip_id"].tolist() == ["clip0", "clip1"]


def test_failures_are_recorded_and_count_as_done(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 1))
    w.write(PartData.only_failures(_fail("clip4", reason="clip4.wav: silent"), w.part_spec()))
    w.write(PartData.only_failures(_fail("clip5", reason="x" * 500), w.part_spec()))
    failures = Store(w.path, require_complete=False).failures()
    assert list(failures["clip_id"]) == ["clip4", "clip5"]
    assert list(failures.index) == [0, 1]
    assert len(failures["reason"].iloc[1].encode()) <= 240 and failures["reason"].iloc[1].endswith("...")
    assert w.done_clip_ids() == {"clip0", "clip4", "clip5"}


def test_missing_strings_in_meta_and_failures_do_not_break_the_writer(tmp_path: Path) -> None:
    # regression: clips + skipped files concatenated leave NaN in string columns (pandas 3 keeps
    # NaN through astype(str)), which made sizing the string columns crash; a part stores them
    # as "" and the merged store's tables are sized for the longest value
    w = StoreWriter(tmp_path / "s.h5", run_config=_run_config(), descriptor_names=NAMES)
    skipped = pd.concat([_fail("clip9"), pd.DataFrame({"path": ["a_very_long_unparseable_name.wav"],
                                                       "reason": ["bad name"]})], ignore_index=True)
    skipped["clip_id"] = skipped["clip_id"].where(skipped["clip_id"].notna(), None)
    w.write(PartData.only_failures(skipped, w.part_spec()))
    desc, mel, meta = tiny_rows(0, 2)
    meta["sentence"] = [np.nan, "a_much_longer_sentence_than_the_floor"]
    meta["sex"] = [None, pd.NA]
    w.write(PartData(desc, mel, meta))
    partial = Store(w.path, require_complete=False)
    assert list(partial.failures()["clip_id"]) == ["clip9", ""]
    assert list(partial.meta()["sentence"]) == ["", "a_much_longer_sentence_than_the_floor"]
    w.finish()
    store = Store(w.path)
    assert list(store.meta()["sex"]) == ["", ""]
    assert list(store.meta()["sentence"]) == ["", "a_much_longer_sentence_than_the_floor"]
    assert list(store.failures()["path"]) == ["clip9.wav", "a_very_long_unparseable_name.wav"]


def test_an_unfinished_store_is_refused_for_reading(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    with pytest.raises(StoreError, match="incomplete"):
        Store(w.path)
    assert Store(w.path, require_complete=False).n_rows == 2
    w.finish()
    assert Store(w.path).n_rows == 2


def test_resuming_with_other_arguments_names_the_difference(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    w.close()
    changed = _run_config(feature_config={**FEATURES, "n_mels": 8}, augment=["noise"])
    with pytest.raises(StoreError) as info:
        _writer(w.path, run_config=changed)
    message = str(info.value)
    assert "feature_config.n_mels: 4 -> 8" in message
    assert "augment: [] -> ['noise']" in message
    assert "--overwrite" in message
    assert Store(w.path, require_complete=False).n_rows == 2  # untouched
    fresh = _writer(w.path, run_config=changed, overwrite=True)
    assert not fresh.resumed and fresh.n_rows == 0
    assert read_attrs(w.path)["feature_config"]["n_mels"] == 8


def test_describe_differences_walks_nested_dicts() -> None:
    old = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": 0}
    new = {"a": 1, "b": {"c": [1, 3], "d": "x"}, "added": True}
    assert describe_differences(old, new) == ["added: '<absent>' -> True", "b.c: [1, 2] -> [1, 3]",
                                              "gone: 0 -> '<absent>'"]
    assert describe_differences(old, old) == []


def test_read_attrs_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        read_attrs(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(StoreError, match="cannot read the store"):
        read_attrs(text)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(StoreError, match="not a ser feature store"):
        read_attrs(plain)
    with pytest.raises(StoreError, match="not a ser feature store"):
        _writer(plain)  # resuming into a foreign file is refused, not overwritten
    future = tmp_path / "future.h5"
    _writer(future)
    with h5py.File(future, "a") as f:
        f.attrs["ser_schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match="schema version"):
        Store(future, require_complete=False)


# -- merging: mel chunks copied as stored ---------------------------------------------------------


def _raw_chunks(path: Path) -> list[tuple[int, bytes]]:
    """``path``'s mel chunks as stored (filter mask, bytes with their checksum), in row order."""
    with h5py.File(path, "r") as f:
        mel = f["mel"]
        return [mel.id.read_direct_chunk((i, 0, 0)) for i in range(mel.shape[0])]


def _committed_chunks(work: Path) -> list[tuple[int, bytes]]:
    """The mel chunks of ``work``'s committed parts, in row order (parts of no rows passed over)."""
    out = []
    for part in sorted(work.glob("part-*.h5")):
        with h5py.File(part, "r") as f:
            if "mel" in f:
                out += _raw_chunks(part)
    return out


def _copies(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int, bool]]:
    """Record each ``copy_rows`` of a merge: (source file, dataset, rows, copied as stored)."""
    calls = []
    real = writer_mod.copy_rows

    def recording(src, dst, rows, at, **kw):
        calls.append((Path(src.file.filename).name, src.name.lstrip("/"), rows, same_chunks(src, dst)))
        return real(src, dst, rows, at, **kw)

    monkeypatch.setattr(writer_mod, "copy_rows", recording)
    return calls


def test_finish_copies_every_parts_mel_chunks_as_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    batches = [tiny_rows(0, 2), tiny_rows(2, 3)]
    copies = _copies(monkeypatch)  # parts are merged as they are committed
    for b in batches:
        w.write(PartData(*b))
    w.write(PartData.only_failures(_fail("clip9"), w.part_spec()))  # a part of no rows: nothing to copy
    for part in sorted(w.work.glob("part-*.h5"))[:2]:
        with h5py.File(part, "r") as f:  # each part holds its own mel, one Fletcher-32 chunk a row
            assert f["mel"].chunks == (1, 4, 3) and f["mel"].fletcher32
    committed = _committed_chunks(w.work)
    assert [len(c) for _, c in committed] == [4 * 3 * 4 + 4] * 5  # float32 rows and their checksums
    w.finish()
    assert [c for c in copies if c[1] == "mel"] == [
        ("part-000000.h5", "mel", 2, True), ("part-000001.h5", "mel", 3, True)]
    assert _raw_chunks(w.path) == committed  # the very chunks the parts hold
    with h5py.File(w.path, "r") as f:
        assert f["mel"].chunks == (1, 4, 3) and f["mel"].fletcher32
    store = Store(w.path)
    store.verify()
    np.testing.assert_array_equal(store.read("mel", np.arange(5)), np.concatenate([b[1] for b in batches]))
    np.testing.assert_array_equal(store.read("descriptors", np.arange(5)), np.concatenate([b[0] for b in batches]))


def test_a_resumed_store_merges_the_mel_chunks_as_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    w.finish()
    base = _raw_chunks(w.path)
    w = _writer(tmp_path / "s.h5")  # a complete store, added to: its rows, then the new parts'
    assert w.resumed and w.n_rows == 2
    copies = _copies(monkeypatch)
    w.write(_part(2, 3))
    committed = base + _committed_chunks(w.work)
    w.finish()
    assert [c for c in copies if c[1] == "mel"] == [("s.h5", "mel", 2, True), ("part-000000.h5", "mel", 3, True)]
    assert _raw_chunks(w.path) == committed
    Store(w.path).verify()


def test_a_store_merged_from_many_parts_equals_one_written_as_one_part(tmp_path: Path) -> None:
    batches = [tiny_rows(0, 2), tiny_rows(2, 3), tiny_rows(5, 1)]
    fail = _fail("bad", reason="not audio")
    one = _writer(tmp_path / "one.h5")
    one.write(PartData(*(np.concatenate(x) if i < 2 else pd.concat(x, ignore_index=True)
                         for i, x in enumerate(zip(*batches))), fail))
    one.finish()
    many = _writer(tmp_path / "many.h5")
    many.write(PartData(*batches[0]))
    many.close()  # stopped: the next run resumes from its part
    many = _writer(tmp_path / "many.h5")
    many.write(PartData(*batches[1], fail))
    many.write(PartData(*batches[2]))
    many.finish()
    a, b = Store(one.path), Store(many.path)
    a.verify()
    b.verify()
    for family in ("descriptors", "mel"):
        np.testing.assert_array_equal(a.read(family, np.arange(6)), b.read(family, np.arange(6)))
    pd.testing.assert_frame_equal(a.meta(), b.meta())
    pd.testing.assert_frame_equal(a.failures(), b.failures())
    assert _raw_chunks(a.path) == _raw_chunks(b.path)


def test_a_part_that_fails_its_fsync_is_not_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [tiny_rows(0, 2), tiny_rows(2, 3), tiny_rows(5, 1)]
    w = _writer(tmp_path / "s.h5")
    w.write(PartData(*batches[0]))
    real = parts_mod.fsync_path

    def failing(path: Path, **kw: bool) -> None:
        if path.name.startswith("tmp-"):
            raise OSError(5, "Input/output error")
        real(path, **kw)

    monkeypatch.setattr(parts_mod, "fsync_path", failing)
    with pytest.raises(StoreError, match="cannot commit a part.*Input/output error.*the 2 rows committed before it are safe"):
        w.write(PartData(*batches[1]))
    monkeypatch.setattr(parts_mod, "fsync_path", real)
    assert w.n_rows == 2 and w.next_seq == 1
    assert sorted(p.name for p in w.work.iterdir() if p.suffix == ".h5") == ["part-000000.h5"]  # no tmp left
    w.write(PartData(*batches[1]))
    w.write(PartData(*batches[2]))
    w.finish()
    store = Store(w.path)
    store.verify()
    np.testing.assert_array_equal(store.read("mel", np.arange(6)), np.concatenate([b[1] for b in batches]))
    assert list(store.meta()["clip_id"]) == [f"clip{i}" for i in range(6)]


def test_a_full_disk_while_writing_a_part_commits_nothing_and_the_writer_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    real = writer_mod.write_part

    def full(path: Path, *args: object) -> None:
        path.write_bytes(b"half a part")  # the tmp file, cut short by the full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "write_part", full)
    with pytest.raises(StoreError, match="No space left on device.*the 2 rows committed before it are safe"):
        w.write(_part(2, 3))
    monkeypatch.setattr(writer_mod, "write_part", real)
    assert w.n_rows == 2 and w.next_seq == 1 and not list(w.work.glob("tmp-*"))
    w.close()
    again = _writer(w.path)  # a rerun resumes from what was committed
    assert again.n_rows == 2 and again.done_clip_ids() == {"clip0", "clip1"}
    again.write(_part(2, 3))
    again.finish()
    assert list(Store(w.path).meta()["clip_id"]) == [f"clip{i}" for i in range(5)]


def test_a_full_disk_while_merging_keeps_every_part_and_the_rerun_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))

    def full(*args: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "copy_rows", full)
    with pytest.raises(StoreError, match="cannot write .*No space left on device.*rows committed are safe"):
        w.write(_part(2, 3))  # committed, then merged as it comes: the merge fails
    monkeypatch.undo()
    assert not w.path.exists() and not list(w.work.glob("*.tmp"))
    w.close()
    again = _writer(w.path)
    assert again.n_rows == 5 and again.next_seq == 2  # both parts are committed
    again.finish()
    assert list(Store(w.path).meta()["clip_id"]) == [f"clip{i}" for i in range(5)]


def test_a_full_disk_at_the_finish_keeps_every_part_and_the_rerun_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    w.write(_part(2, 3))
    real = writer_mod.fsync_path

    def full(path: Path, **kw: object) -> None:
        if path.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, **kw)

    monkeypatch.setattr(writer_mod, "fsync_path", full)
    with pytest.raises(StoreError, match="cannot write .*No space left on device.*every part is still committed"):
        w.finish()
    monkeypatch.undo()
    assert not w.path.exists() and not list(w.work.glob("*.tmp"))
    w.close()
    again = _writer(w.path)
    assert again.n_rows == 5 and again.next_seq == 2
    again.finish()
    assert list(Store(w.path).meta()["clip_id"]) == [f"clip{i}" for i in range(5)]


def test_a_part_is_committed_only_once_it_is_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = []
    real_parts_fsync, real_writer_fsync, real_replace = parts_mod.fsync_path, writer_mod.fsync_path, os.replace
    monkeypatch.setattr(parts_mod, "fsync_path", lambda path, **kw: (events.append(("fsync", path.name)),
                                                                     real_parts_fsync(path, **kw))[1])
    monkeypatch.setattr(writer_mod, "fsync_path", lambda path, **kw: (events.append(("fsync", path.name)),
                                                                      real_writer_fsync(path, **kw))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", Path(a).name, Path(b).name)),
                                                     real_replace(a, b))[1])
    w = _writer(tmp_path / "s.h5")
    for b in (tiny_rows(0, 2), tiny_rows(2, 3)):
        w.write(PartData(*b))
    for seq in (0, 1):  # the part's own fsync before its rename, the folder's after it
        tmp, final = w.part_spec().tmp_path(seq).name, f"part-{seq:06d}.h5"
        rename = events.index(("rename", tmp, final))
        assert ("fsync", tmp) in events[:rename]
        assert events[rename + 1] == ("fsync", w.work.name)
    w.finish()
    np.testing.assert_array_equal(Store(w.path).read("mel", np.arange(5)),
                                  np.concatenate([tiny_rows(0, 2)[1], tiny_rows(2, 3)[1]]))


def test_finish_decodes_a_base_store_chunked_another_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 3))
    w.finish()
    with h5py.File(w.path, "a") as f:  # a base store whose mel is chunked otherwise, without checksums
        mel = f["mel"][:]
        del f["mel"]
        f.create_dataset("mel", data=mel, maxshape=(None, 4, 3), chunks=(2, 4, 3))
    again = _writer(w.path)
    assert again.resumed and again.n_rows == 3
    copies = _copies(monkeypatch)
    again.write(_part(3, 2))
    again.finish()
    # only the new part's chunks are copied as stored; the base store's rows are decoded and re-encoded
    assert [c for c in copies if c[1] == "mel"] == [("s.h5", "mel", 3, False), ("part-000000.h5", "mel", 2, True)]
    store = Store(w.path)
    store.verify()
    np.testing.assert_array_equal(store.read("mel", np.arange(5)), np.concatenate([mel, tiny_rows(3, 2)[1]]))
    with h5py.File(w.path, "r") as f:
        assert f["mel"].chunks == (1, 4, 3) and f["mel"].fletcher32


def _flip_in_chunk(path: Path, dataset: str, row: int) -> None:
    """Flip bytes inside row ``row``'s stored chunk of ``dataset``, as a bad disk would."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info_by_coord((row,) + (0,) * (f[dataset].ndim - 1))
    data = bytearray(path.read_bytes())
    for i in range(info.byte_offset + 8, info.byte_offset + 12):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_part_chunk_damaged_on_disk_is_caught_when_the_store_is_read(tmp_path: Path) -> None:
    """Chunks are merged without decoding them: a flipped byte in a committed part's mel chunk
    is not seen by finish, but its Fletcher-32 checksum travels with it, so every read of that
    row fails, before finish and after, and the rows around it read as they were."""
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 3))
    w.close()
    _flip_in_chunk(part_path(w.work, 0), "mel", 1)
    partial = Store(w.path, require_complete=False)  # a reader of the unfinished store checks it too
    for row in (0, 2):
        np.testing.assert_array_equal(partial.read("mel", np.array([row])), tiny_rows(0, 3)[1][[row]])
    with pytest.raises(StoreError, match="cannot read mel rows near 1.*corrupt"):
        partial.read("mel", np.array([1]))
    partial.close()
    again = _writer(w.path)
    assert again.n_rows == 3  # the part opens and its counts hold: it is kept, not redone
    again.finish()
    store = Store(w.path)
    for row in (0, 2):
        np.testing.assert_array_equal(store.read("mel", np.array([row])), tiny_rows(0, 3)[1][[row]])
    with pytest.raises(StoreError, match="corrupt"):
        store.read("mel", np.array([1]))
    with pytest.raises(StoreError, match="corrupt"):
        store.verify()


def test_finish_returns_the_meta_it_wrote(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    w.close()
    again = _writer(w.path)  # one part from an earlier writer, one from this one
    again.write(_part(2, 2))
    again.write(PartData.only_failures(_fail("clip5"), again.part_spec()))
    meta = again.finish()
    # the same rows and values (pandas may read the strings back with its own string dtype)
    pd.testing.assert_frame_equal(meta, pd.read_hdf(w.path, "meta"), check_dtype=False)
    assert list(meta["clip_id"]) == [f"clip{i}" for i in range(4)]
    assert list(Store(w.path).failures()["clip_id"]) == ["clip5"]
    before = w.path.read_bytes()
    assert _writer(w.path).finish() is None  # nothing new to add: the store is left as it was
    assert w.path.read_bytes() == before and not work_dir(w.path).exists()


def test_plain_strings_blank_missing_values_and_keep_plain_ones() -> None:
    mixed = pd.Series(["a", None, float("nan"), 3, 2.5], dtype=object)
    assert list(plain_strings(mixed)) == ["a", "", "", "3", "2.5"]
    plain = pd.Series(["a", "b"], dtype=object)
    assert plain_strings(plain) is plain  # already plain: no mapping pass
    assert list(plain_strings(pd.Series(["x", pd.NA], dtype="string"))) == ["x", ""]
