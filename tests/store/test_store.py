"""The HDF5 store: layout, pandas-readable meta, ordered reads, commit/truncate, refusals."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import ser.store.writer as store_mod
from ser import __version__
from ser.errors import StoreError
from ser.features.extractor import FeatureConfig, descriptor_names
from ser.corpus.labels import CREMAD_EMOTIONS
from ser.store.writer import (META_COLUMNS, SCHEMA_VERSION, Store, StoreWriter, describe_differences,
                       read_attrs, work_dir)

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
    monkeypatch.setattr(store_mod, "_ROW_CHUNK", row_chunk)
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
    other.append(*_batch(0, 3))
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


def _clips(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"clip_id": [f"clip{i}" for i in range(n)], "path": [f"clip{i}.wav" for i in range(n)]})


def _writer(path: Path, **kw: object) -> StoreWriter:
    kw.setdefault("run_config", _run_config())
    return StoreWriter(path, descriptor_names=NAMES, clip_table=_clips(), **kw)


def _batch(start: int, k: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(start)
    desc = rng.standard_normal((k, 2)).astype(np.float32)
    mel = rng.standard_normal((k, 4, 3)).astype(np.float32)
    meta = pd.DataFrame({
        "clip_id": [f"clip{i}" for i in range(start, start + k)],
        "path": [f"clip{i}.wav" for i in range(start, start + k)],
        "dataset": "cremad", "speaker": "1001", "emotion": "ANG", "label": 0, "split": "train",
        "augment": "none", "duration_s": 0.1, "n_frames": 3, "sentence": "DFA", "intensity": "XX",
        "sex": "Male", "age": 30.0,
    })
    return desc, mel, meta


def test_writer_appends_batches_in_order(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    batches = [_batch(0, 2), _batch(2, 3)]
    for b in batches:
        w.append(*b)
    w.finish()
    store = Store(w.path)
    np.testing.assert_array_equal(store.read("descriptors", np.arange(5)), np.concatenate([b[0] for b in batches]))
    np.testing.assert_array_equal(store.read("mel", np.arange(5)), np.concatenate([b[1] for b in batches]))
    assert list(store.meta()["clip_id"]) == [f"clip{i}" for i in range(5)]
    assert list(store.meta().index) == list(range(5))


def test_writer_refuses_a_batch_whose_parts_disagree(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    desc, mel, meta = _batch(0, 3)
    with pytest.raises(StoreError, match="batch sizes differ"):
        w.append(desc, mel[:2], meta)


def test_reopening_ignores_a_batch_cut_short(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.append(*_batch(0, 2))
    w.close()
    # a crash mid-commit leaves a half-written part (the commit is its rename, which never came)
    stray = work_dir(w.path) / "part-000001.h5.tmp"
    stray.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert read_attrs(w.path)["shapes"]["descriptors"][0] == 2
    again = _writer(w.path)
    assert again.resumed and again.n_rows == 2
    assert not stray.exists()
    assert again.done_clip_ids() == {"clip0", "clip1"}
    again.append(*_batch(2, 1))
    again.finish()
    with h5py.File(w.path, "r") as f:
        np.testing.assert_array_equal(f["descriptors"][2], _batch(2, 1)[0][0])
        assert f["descriptors"].shape[0] == 3
    assert not work_dir(w.path).exists()


def test_the_store_appears_only_when_finished(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.append(*_batch(0, 2))
    assert not w.path.exists() and (work_dir(w.path) / "part-000000.h5").is_file()
    info = read_attrs(w.path)
    assert not info["complete"] and info["n_rows"] == 2
    w.finish()
    assert w.path.is_file() and not work_dir(w.path).exists()
    assert read_attrs(w.path)["complete"] and pd.read_hdf(w.path, "meta")["clip_id"].tolist() == ["clip0", "clip1"]


def test_failures_are_recorded_and_count_as_done(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.append(*_batch(0, 1))
    w.add_failures(pd.DataFrame({"clip_id": ["clip4"], "path": ["clip4.wav"], "reason": ["clip4.wav: silent"]}))
    w.add_failures(pd.DataFrame({"clip_id": ["clip5"], "path": ["clip5.wav"], "reason": ["x" * 500]}))
    failures = Store(w.path, require_complete=False).failures()
    assert list(failures["clip_id"]) == ["clip4", "clip5"]
    assert list(failures.index) == [0, 1]
    assert len(failures["reason"].iloc[1].encode()) <= 240 and failures["reason"].iloc[1].endswith("...")
    assert w.done_clip_ids() == {"clip0", "clip4", "clip5"}


def test_missing_strings_in_the_clip_table_do_not_break_the_writer(tmp_path: Path) -> None:
    # regression: clips + skipped files concatenated leave NaN in string columns (pandas 3 keeps
    # NaN through astype(str)), which made sizing the string columns crash
    table = pd.concat([_clips(), pd.DataFrame({"path": ["a_very_long_unparseable_name.wav"],
                                               "reason": ["bad name"]})], ignore_index=True)
    w = StoreWriter(tmp_path / "s.h5", run_config=_run_config(), descriptor_names=NAMES, clip_table=table)
    w.add_failures(pd.DataFrame({"clip_id": ["a_very_long_unparseable_name.wav"],
                                 "path": ["a_very_long_unparseable_name.wav"], "reason": ["bad name"]}))
    w.append(*_batch(0, 2))
    assert len(Store(w.path, require_complete=False).failures()) == 1


def test_an_unfinished_store_is_refused_for_reading(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.append(*_batch(0, 2))
    with pytest.raises(StoreError, match="incomplete"):
        Store(w.path)
    assert Store(w.path, require_complete=False).n_rows == 2
    w.finish()
    assert Store(w.path).n_rows == 2


def test_resuming_with_other_arguments_names_the_difference(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.append(*_batch(0, 2))
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
    with h5py.File(path, "r") as f:
        mel = f["mel"]
        return [mel.id.read_direct_chunk((i, 0, 0)) for i in range(mel.shape[0])]


def _referenced_chunks(work: Path) -> list[bytes]:
    """The mel chunks the parts of ``work`` point to in grown.h5, in row order, as stored (parts
    holding their mel themselves are passed over)."""
    out = []
    with open(work / "grown.h5", "rb") as grown:
        for part in sorted(work.glob("part-*.h5")):
            with h5py.File(part, "r") as f:
                for offset, size in (f["mel_chunks"][:] if "mel_chunks" in f else []):
                    grown.seek(int(offset))
                    out.append(grown.read(int(size)))
    return out


def test_a_fresh_store_writes_each_mel_row_once_and_its_parts_point_to_the_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    batches = [_batch(0, 2), _batch(2, 3)]
    writes, copies = [], []
    real_write, real_copy = store_mod._write_rows, store_mod._copy_chunks
    monkeypatch.setattr(store_mod, "_write_rows",
                        lambda dst, rows, at: (writes.append((dst.file.filename.rsplit("/", 1)[-1], len(rows))),
                                               real_write(dst, rows, at)))
    monkeypatch.setattr(store_mod, "_copy_chunks", lambda *a: (copies.append(a[2]), real_copy(*a)))
    for b in batches:
        w.append(*b)
    # each batch: one write, to the growing store, from the array handed over; the part holds no mel
    assert writes == [("grown.h5", 2), ("grown.h5", 3)]
    parts = sorted(work_dir(w.path).glob("part-*.h5"))
    for part in parts:
        with h5py.File(part, "r") as f:
            assert "mel" not in f and f["mel_chunks"].shape[1] == 2
    committed = _referenced_chunks(work_dir(w.path))
    assert [len(c) for c in committed] == [4 * 3 * 4 + 4] * 5  # float32 rows and their checksums
    w.finish()
    assert copies == [] and len(writes) == 2  # finish writes no mel again
    assert _raw_chunks(w.path) == [(0, c) for c in committed]  # the very chunks the parts point to
    with h5py.File(w.path, "r") as f:
        assert f["mel"].chunks == (1, 4, 3) and f["mel"].fletcher32
    store = Store(w.path)
    store.verify()
    np.testing.assert_array_equal(store.read("mel", np.arange(5)), np.concatenate([b[1] for b in batches]))


@pytest.mark.parametrize("same_rows", [False, True])
def test_each_part_points_to_a_chunk_holding_its_rows_bytes(tmp_path: Path, same_rows: bool) -> None:
    """The chunks are found where the last one ended unless HDF5 put a block of its index between
    (often, with rows this small); identical rows may be found in each other's chunk, which holds
    the same bytes, checksum included."""
    w = _writer(tmp_path / "s.h5")
    for start in range(0, 60, 6):
        desc, mel, meta = _batch(start, 6)
        w.append(desc, np.zeros_like(mel) if same_rows else mel, meta)
    mel_ds = w._live["mel"]
    truth = [mel_ds.id.get_chunk_info_by_coord((i, 0, 0)) for i in range(60)]
    offsets = [t.byte_offset for t in truth]
    assert sorted(offsets) != list(range(offsets[0], offsets[0] + 60 * truth[0].size, truth[0].size))  # gaps
    with open(work_dir(w.path) / "grown.h5", "rb") as f:
        def at(offset: int, size: int) -> bytes:
            f.seek(offset)
            return f.read(size)
        expected = [at(t.byte_offset, t.size) for t in truth]
    assert _referenced_chunks(work_dir(w.path)) == expected
    w.finish()
    np.testing.assert_array_equal(Store(w.path).read("mel", np.arange(60))[:6],
                                  np.zeros((6, 4, 3)) if same_rows else _batch(0, 6)[1])


def test_a_resumed_store_merges_the_mel_chunks_as_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    batches = [_batch(0, 2), _batch(2, 3)]
    w.append(*batches[0])
    w.close()  # stopped: the next run resumes from the part
    copies = []
    real = store_mod._copy_chunks
    monkeypatch.setattr(store_mod, "_copy_chunks", lambda *a: (copies.append(a[2]), real(*a)))
    w = _writer(tmp_path / "s.h5")
    w.append(*batches[1])  # a resumed run grows no store: this part holds its mel
    parts = sorted(work_dir(w.path).glob("part-*.h5"))
    committed = [(0, c) for c in _referenced_chunks(work_dir(w.path))] + _raw_chunks(parts[1])
    w.finish()
    assert copies == [2, 3]  # every part, chunk for chunk (the first's from grown.h5), nothing decoded
    assert _raw_chunks(w.path) == committed
    Store(w.path).verify()


def test_a_part_that_fails_its_fsync_is_not_committed_and_the_grown_store_gives_way_to_the_parts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [_batch(0, 2), _batch(2, 3), _batch(5, 1)]
    w = _writer(tmp_path / "s.h5")
    w.commit(*batches[0])
    real = store_mod._fsync_path

    def failing(path: Path, **kw: bool) -> None:
        if path.name.endswith(".h5.tmp") and path.name.startswith("part-"):
            raise OSError("input/output error")
        real(path, **kw)

    monkeypatch.setattr(store_mod, "_fsync_path", failing)
    with pytest.raises(StoreError, match="cannot commit a batch.*the 2 rows committed before it are safe"):
        w.commit(*batches[1])  # written into the growing store while the fsync ran, then not committed
    monkeypatch.setattr(store_mod, "_fsync_path", real)
    assert w.n_rows == 2 and not list(work_dir(w.path).glob("*.tmp"))
    # the growing store held an uncommitted batch: it grows no more, but stays for the first part's chunks
    assert (work_dir(w.path) / "grown.h5").is_file() and w._live is None
    w.commit(*batches[1])
    w.commit(*batches[2], last=True)  # no store grows any more: the last batch gets a part
    parts = sorted(work_dir(w.path).glob("part-*.h5"))
    assert len(parts) == 3
    with h5py.File(parts[0], "r") as f0, h5py.File(parts[1], "r") as f1:
        assert "mel_chunks" in f0 and "mel" not in f0 and "mel" in f1
    w.finish()
    store = Store(w.path)
    store.verify()
    np.testing.assert_array_equal(store.read("mel", np.arange(6)), np.concatenate([b[1] for b in batches]))
    assert list(store.meta()["clip_id"]) == [f"clip{i}" for i in range(6)]


def test_the_last_batch_goes_to_the_growing_store_alone_and_the_store_is_the_same(tmp_path: Path) -> None:
    batches = [_batch(0, 2), _batch(2, 3)]
    fail = pd.DataFrame({"clip_id": ["bad"], "path": ["bad.wav"], "reason": ["not audio"]})
    plain = _writer(tmp_path / "plain.h5")
    plain.commit(*batches[0])
    plain.commit(*batches[1], failures=fail)
    plain.finish()

    w = _writer(tmp_path / "last.h5")
    w.commit(*batches[0])
    w.commit(*batches[1], failures=fail, last=True)
    assert len(list(work_dir(w.path).glob("part-*"))) == 1  # no part of its own
    assert w.n_rows == 2  # not committed until finish
    with pytest.raises(StoreError, match="last batch"):
        w.commit(*_batch(5, 1))
    w.finish()
    a, b = Store(plain.path), Store(w.path)
    b.verify()
    for family in ("descriptors", "mel"):
        np.testing.assert_array_equal(b.read(family, np.arange(5)), a.read(family, np.arange(5)))
    pd.testing.assert_frame_equal(b.meta(), a.meta())
    pd.testing.assert_frame_equal(b.failures(), a.failures())


def test_a_last_batch_not_finished_is_computed_again_and_a_resumed_store_gives_it_a_part(tmp_path: Path) -> None:
    batches = [_batch(0, 2), _batch(2, 3)]
    w = _writer(tmp_path / "s.h5")
    w.commit(*batches[0])
    w.commit(*batches[1], last=True)
    w.close()  # stopped before finish (Ctrl-C, say): the last batch is lost, the first kept
    w = _writer(tmp_path / "s.h5")
    assert w.resumed and w.n_rows == 2 and w.done_clip_ids() == {"clip0", "clip1"}
    w.commit(*batches[1], last=True)  # a resumed store is merged from parts: the batch gets one
    assert len(list(work_dir(w.path).glob("part-*"))) == 2
    w.finish()
    store = Store(w.path)
    store.verify()
    np.testing.assert_array_equal(store.read("mel", np.arange(5)), np.concatenate([b[1] for b in batches]))


def test_a_store_grown_batch_by_batch_equals_one_merged_from_its_parts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [_batch(0, 2), _batch(2, 3), _batch(5, 1)]
    grown = _writer(tmp_path / "grown.h5")
    for b in batches:
        grown.append(*b)
    grown.finish()
    # growing fails at the second batch (say the disk filled up): finish merges the parts instead
    real = store_mod._write_rows
    grows, copies = [], []

    def flaky(dst, rows, at):
        if dst.file.filename.endswith("grown.h5"):
            grows.append(at)
            if len(grows) == 2:
                raise OSError("no space left on device")
        return real(dst, rows, at)

    monkeypatch.setattr(store_mod, "_write_rows", flaky)
    real_copy = store_mod._copy_chunks
    monkeypatch.setattr(store_mod, "_copy_chunks", lambda *a: (copies.append(a[2]), real_copy(*a)))
    merged = _writer(tmp_path / "merged.h5")
    for b in batches:
        merged.append(*b)
    assert merged._live is None  # it stopped growing at the failure; the first part's chunks are in grown.h5
    merged.finish()
    assert grows == [0, 2] and copies == [2, 3, 1]  # grown once, failed, then every part merged at the end
    a, b = Store(grown.path), Store(merged.path)
    a.verify()
    b.verify()
    for family in ("descriptors", "mel"):
        np.testing.assert_array_equal(a.read(family, np.arange(6)), b.read(family, np.arange(6)))
    pd.testing.assert_frame_equal(a.meta(), b.meta())


def test_a_batch_is_committed_only_once_its_mel_chunks_are_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = []
    real_fsync, real_replace = store_mod._fsync_path, os.replace
    monkeypatch.setattr(store_mod, "_fsync_path", lambda path, **kw: (events.append(("fsync", path.name)),
                                                                      real_fsync(path, **kw))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", Path(b).name)), real_replace(a, b))[1])
    w = _writer(tmp_path / "s.h5")
    for b in (_batch(0, 2), _batch(2, 3)):
        w.append(*b)
    for seq in (0, 1):  # the growing store's fsync, and the part's, before the part's rename
        rename = events.index(("rename", f"part-{seq:06d}.h5"))
        before = events[events.index(("rename", f"part-{seq - 1:06d}.h5")) if seq else 0:rename]
        assert ("fsync", "grown.h5") in before and ("fsync", f"part-{seq:06d}.h5.tmp") in before
    w.finish()
    np.testing.assert_array_equal(Store(w.path).read("mel", np.arange(5)),
                                  np.concatenate([_batch(0, 2)[1], _batch(2, 3)[1]]))


@pytest.mark.skipif(not hasattr(os, "posix_fadvise") or not Path("/proc/self/fd").is_dir(),
                    reason="needs posix_fadvise and /proc to name the files")
def test_written_pages_leave_the_page_cache_once_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fadvise, real_fsync = os.posix_fadvise, os.fsync
    events = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            events.append(("uncache", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fadvise(fd, offset, length, advice)

    def fsync(fd: int) -> None:
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    monkeypatch.setattr(os, "fsync", fsync)
    w = _writer(tmp_path / "s.h5")
    for b in (_batch(0, 2), _batch(2, 3)):
        w.append(*b)
    for seq in (0, 1):  # each part: on disk first, then out of the cache
        part = store_mod._part_path(w.work, seq).name + ".tmp"
        assert events.index(("fsync", part)) < events.index(("uncache", part))
    # the growing store too, at every batch
    assert events.count(("uncache", "grown.h5")) == 2
    assert events.index(("fsync", "grown.h5")) < events.index(("uncache", "grown.h5"))
    w.finish()
    s = Store(tmp_path / "s.h5")
    s.verify()
    np.testing.assert_array_equal(s.read("mel", np.arange(5)), np.concatenate([_batch(0, 2)[1], _batch(2, 3)[1]]))


def test_finish_decodes_a_base_store_chunked_another_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path / "s.h5")
    w.append(*_batch(0, 3))
    w.finish()
    with h5py.File(w.path, "a") as f:  # a base store whose mel is chunked otherwise, without checksums
        mel = f["mel"][:]
        del f["mel"]
        f.create_dataset("mel", data=mel, maxshape=(None, 4, 3), chunks=(2, 4, 3))
    again = _writer(w.path)
    assert again.resumed and again.n_rows == 3
    again.append(*_batch(3, 2))
    copies = []
    real = store_mod._copy_chunks
    monkeypatch.setattr(store_mod, "_copy_chunks", lambda *a: (copies.append(a[2]), real(*a)))
    again.finish()
    assert copies == [2]  # only the new part; the base store's rows were decoded and re-encoded
    store = Store(w.path)
    store.verify()
    np.testing.assert_array_equal(store.read("mel", np.arange(5)), np.concatenate([mel, _batch(3, 2)[1]]))
    with h5py.File(w.path, "r") as f:
        assert f["mel"].chunks == (1, 4, 3) and f["mel"].fletcher32


def test_a_part_chunk_damaged_on_disk_is_caught_when_the_store_is_read(tmp_path: Path) -> None:
    """Chunks are merged without decoding them: a flipped byte in a committed chunk (here in
    grown.h5, where a stopped fresh run's part points) is not seen by finish, but its Fletcher-32
    checksum travels with it, so every read of that row fails, before finish and after."""
    w = _writer(tmp_path / "s.h5")
    w.append(*_batch(0, 3))
    w.close()
    with h5py.File(work_dir(w.path) / "part-000000.h5", "r") as f:
        offset = int(f["mel_chunks"][1, 0])
    grown = work_dir(w.path) / "grown.h5"
    data = bytearray(grown.read_bytes())
    data[offset + 8] ^= 0x5A
    grown.write_bytes(bytes(data))
    partial = Store(w.path, require_complete=False)  # a reader of the unfinished store checks it too
    for row in (0, 2):
        np.testing.assert_array_equal(partial.read("mel", np.array([row])), _batch(0, 3)[1][[row]])
    with pytest.raises(StoreError, match="fails its Fletcher-32 checksum.*corrupt"):
        partial.read("mel", np.array([1]))
    partial.close()
    again = _writer(w.path)
    again.finish()
    store = Store(w.path)
    for row in (0, 2):
        np.testing.assert_array_equal(store.read("mel", np.array([row])), _batch(0, 3)[1][[row]])
    with pytest.raises(StoreError, match="corrupt"):
        store.read("mel", np.array([1]))
    with pytest.raises(StoreError, match="corrupt"):
        store.verify()


@pytest.mark.parametrize("n_bytes", [0, 1, 2, 719, 720, 721, 1441, 4 * 64 * 251])
def test_fletcher32_is_hdf5s(tmp_path: Path, n_bytes: int) -> None:
    """The checksum a reader checks referenced chunks with is the one HDF5 appends, bit for bit,
    on random bytes and on all-ones (where the sums' folding is at its edge), odd lengths included."""
    rng = np.random.default_rng(n_bytes)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        for name, fill in (("random", None), ("ones", 255)):
            data = (rng.integers(0, 256, (3, max(n_bytes, 1))) if fill is None
                    else np.full((3, max(n_bytes, 1)), fill)).astype(np.uint8)
            ds = f.create_dataset(name, data=data, chunks=(1, max(n_bytes, 1)), fletcher32=True)
            for i in range(3):
                chunk = ds.id.read_direct_chunk((i, 0))[1]
                assert store_mod._fletcher32(chunk[:-4]) == int.from_bytes(chunk[-4:], "little")
    assert store_mod._fletcher32(b"") == 0


def test_finish_returns_the_meta_it_wrote(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.append(*_batch(0, 2))
    w.close()
    again = _writer(w.path)  # one part from an earlier writer (read back), one from this one (at hand)
    again.append(*_batch(2, 2))
    again.add_failures(pd.DataFrame({"clip_id": ["clip5"], "path": ["clip5.wav"], "reason": ["silent"]}))
    meta = again.finish()
    # the same rows and values (pandas may read the strings back with its own string dtype)
    pd.testing.assert_frame_equal(meta, pd.read_hdf(w.path, "meta"), check_dtype=False)
    assert list(meta["clip_id"]) == [f"clip{i}" for i in range(4)]
    assert list(Store(w.path).failures()["clip_id"]) == ["clip5"]
    assert _writer(w.path).finish() is None  # nothing new to add: the store is left as it was


def test_plain_strings_blank_missing_values_and_keep_plain_ones() -> None:
    mixed = pd.Series(["a", None, float("nan"), 3, 2.5], dtype=object)
    assert list(store_mod._plain_strings(mixed)) == ["a", "", "", "3", "2.5"]
    plain = pd.Series(["a", "b"], dtype=object)
    assert store_mod._plain_strings(plain) is plain  # already plain: no mapping pass
    assert list(store_mod._plain_strings(pd.Series(["x", pd.NA], dtype="string"))) == ["x", ""]
