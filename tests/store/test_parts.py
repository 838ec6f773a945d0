"""Parts: what a task writes, how the writer commits them (plan order, atomically), what a
rerun does with what a stopped run left (tmp parts, damaged parts, gaps, an older ser's work
folder), and what readers see of them while a run is going."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ser.cli import main
from ser.corpus.synth import make_cremad_corpus
from ser.errors import StoreError
from ser.features.config import FeatureConfig, descriptor_names
from ser.featurize.job import FeaturizeConfig, make_tasks, plan, run_config
from ser.featurize.worker import TaskConfig, run_task
from ser.report.info import describe_store
from ser.store import Store, StoreChanged, StoreWriter, read_attrs, work_dir
from ser.store.layout import FAILURE_COLUMNS, META_COLUMNS, filters, read_columns
from ser.store.parts import PartData, Receipt, part_path, write_part
from ser.store.reader import WORK_VERSION
from array_store import tiny_rows

FEATURES = {"n_mels": 4, "max_seconds": 0.1, "sample_rate": 1000, "hop_length": 50}  # 3 frames
NAMES = ["a_mean", "b_mean"]
RUN_CONFIG = {"feature_config": dict(FEATURES), "split_config": {"method": "random", "seed": 42},
              "labels": ["ANG", "SAD"], "augment": []}


def _writer(path: Path, **kw: object) -> StoreWriter:
    return StoreWriter(path, run_config=RUN_CONFIG, descriptor_names=NAMES, **kw)


def _part(start: int, k: int, failures: pd.DataFrame | None = None) -> PartData:
    data = PartData(*tiny_rows(start, k))
    if failures is not None:
        data.failures = failures
    return data


def _fail(*clip_ids: str) -> pd.DataFrame:
    return pd.DataFrame({"clip_id": list(clip_ids), "path": [f"{c}.wav" for c in clip_ids],
                         "reason": ["silent"] * len(clip_ids)})


def _hand_in(w: StoreWriter, seq: int, data: PartData) -> Receipt:
    """What a worker that sees the work folder does: write its part to its tmp name, return a receipt."""
    spec = w.part_spec()
    path = spec.tmp_path(seq)
    write_part(path, spec, seq, data)
    return Receipt(seq=seq, n_rows=data.n_rows, n_failures=len(data.failures), n_clips=data.n_rows, path=path)


def _clean(tmp_path: Path, parts: list[PartData]) -> Store:
    w = _writer(tmp_path / "clean.h5")
    for data in parts:
        w.write(data)
    w.finish()
    return Store(w.path)


def _same(a: Store, b: Store) -> None:
    for family in ("descriptors", "mel"):
        rows = np.arange(a.n_rows)
        np.testing.assert_array_equal(a.read(family, rows), b.read(family, rows))
    pd.testing.assert_frame_equal(a.meta(), b.meta())
    pd.testing.assert_frame_equal(a.failures(), b.failures())
    assert a.n_rows == b.n_rows


# -- commits: plan order, tmp parts ---------------------------------------------------------------


def test_a_workers_part_committed_out_of_plan_order_is_refused(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    parts = [_part(0, 2), _part(2, 3)]
    second = _hand_in(w, 1, parts[1])  # the second task finished first
    with pytest.raises(StoreError, match="part 1 came before part 0"):
        w.commit(second)
    assert w.next_seq == 0 and w.n_rows == 0 and not list(w.work.glob("part-*"))  # nothing committed
    assert second.path.is_file()  # the worker's file stays, to be committed in its turn
    w.commit(_hand_in(w, 0, parts[0]))
    w.commit(second)
    assert not second.path.exists() and part_path(w.work, 1).is_file()
    with pytest.raises(StoreError, match="part 0 is committed already"):
        w.commit(_hand_in(w, 0, parts[0]))  # the same part twice is refused too
    assert w.next_seq == 2 and w.n_rows == 5
    w.finish()
    _same(Store(w.path), _clean(tmp_path, parts))


def test_a_tmp_part_left_by_a_killed_task_is_removed_and_its_clips_redone(tmp_path: Path) -> None:
    parts = [_part(0, 2), _part(2, 3, _fail("clip9"))]
    w = _writer(tmp_path / "s.h5")
    w.commit(_hand_in(w, 0, parts[0]))
    left = _hand_in(w, 1, parts[1]).path  # written whole, but the run was killed before its commit
    w.close()
    assert left.is_file()
    info = read_attrs(w.path)  # readers never see it
    assert info["n_rows"] == 2 and len(info["parts"]) == 1
    again = _writer(w.path)
    assert not left.exists() and not list(again.work.glob("tmp-*"))
    assert again.n_rows == 2 and again.next_seq == 1
    assert again.done_clip_ids() == {"clip0", "clip1"}  # clip2-4 and clip9 are featurized again
    again.commit(_hand_in(again, 1, parts[1]))
    again.finish()
    _same(Store(w.path), _clean(tmp_path, parts))


def test_a_part_spec_without_a_work_folder_has_no_tmp_path(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    spec = w.part_spec(shared=False)
    assert spec.work is None and spec.session == w.session and spec.mel_shape == (4, 3)
    with pytest.raises(StoreError, match="no work folder"):
        spec.tmp_path(0)


def _contents(path: Path) -> dict:
    """Everything a part file holds but its session: attributes, arrays as stored, columns."""
    with h5py.File(path, "r") as f:
        out: dict = {"attrs": {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                               for k, v in f.attrs.items() if k != "session"},
                     "keys": sorted(f.keys())}
        for name in ("descriptors", "mel"):
            if name in f:
                ds = f[name]
                out[name] = (ds.shape, ds.dtype.str, ds.chunks, ds.maxshape, filters(ds), dict(ds.attrs),
                             [ds.id.read_direct_chunk(c.chunk_offset) for c in
                              (ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks()))])
        for key in ("meta", "failures"):
            if key in f:
                out[key + "_columns"] = sorted(f[key].keys())
    out["meta"] = read_columns(path, "meta", META_COLUMNS)
    out["failures"] = read_columns(path, "failures", FAILURE_COLUMNS)
    return out


def _same_part(a: Path, b: Path) -> None:
    ca, cb = _contents(a), _contents(b)
    pd.testing.assert_frame_equal(ca.pop("meta"), cb.pop("meta"))
    pd.testing.assert_frame_equal(ca.pop("failures"), cb.pop("failures"))
    assert ca == cb


@pytest.mark.parametrize("with_rows", [True, False], ids=["rows", "failures-only"])
def test_committing_a_receipt_carrying_rows_writes_the_part_a_worker_would(tmp_path: Path, with_rows: bool) -> None:
    a, b = _writer(tmp_path / "a.h5"), _writer(tmp_path / "b.h5")
    data = (_part(0, 3, _fail("clip7", "clip8")) if with_rows
            else PartData.only_failures(_fail("clip7"), a.part_spec()))
    a.commit(_hand_in(a, 0, data))  # a worker that sees the work folder wrote it
    b.commit(Receipt(seq=0, n_rows=data.n_rows, n_failures=len(data.failures), n_clips=3, data=data))  # a remote one
    assert not list(b.work.glob("tmp-*"))
    _same_part(part_path(a.work, 0), part_path(b.work, 0))
    with h5py.File(part_path(b.work, 0), "r") as f:
        assert f.attrs["session"] == b.session and f.attrs["seq"] == 0
    assert b.n_rows == a.n_rows == data.n_rows
    a.finish()
    b.finish()
    _same(Store(a.path), Store(b.path))


@pytest.fixture(scope="module")
def six_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic CREMA-D clips and one that is not audio (a failure)."""
    root = tmp_path_factory.mktemp("six")
    make_cremad_corpus(root, n_actors=1, sentences=("DFA",), duration_s=(0.6, 1.0), seed=3)
    (root / "AudioWAV" / "1001_IEO_ANG_XX.wav").write_text("not audio")
    return root / "AudioWAV"


@pytest.mark.filterwarnings("ignore:split not stratified:UserWarning")
def test_a_remote_workers_rows_become_the_very_part_a_local_worker_writes(six_clips: Path, tmp_path: Path) -> None:
    cfg = FeaturizeConfig(data=six_clips, out=tmp_path / "x.h5", augment=("noise",),
                          features=FeatureConfig(n_mels=16, max_seconds=1.0))
    p = plan(cfg)
    (task,) = make_tasks(p.clips, p.base, 0, 1, len(p.clips))
    task_cfg = TaskConfig(features=cfg.features, augment=cfg.augment, seed=cfg.split.seed)
    writers = [StoreWriter(tmp_path / f"{name}.h5", run_config=run_config(cfg, p.dataset, p.labels),
                           descriptor_names=descriptor_names(cfg.features)) for name in ("local", "remote")]
    local = run_task(task, writers[0].part_spec(), task_cfg)
    remote = run_task(task, writers[1].part_spec(shared=False), task_cfg)
    assert local.data is None and local.path is not None and local.path.is_file()
    assert remote.path is None and remote.data is not None and not list(writers[1].work.glob("tmp-*"))
    assert (local.n_rows, local.n_failures, local.n_clips) == (remote.n_rows, remote.n_failures, remote.n_clips)
    assert local.n_failures == 1 and local.n_clips == 7 and local.n_rows > 6
    for w, receipt in zip(writers, (local, remote)):
        w.commit(receipt)
    _same_part(part_path(writers[0].work, 0), part_path(writers[1].work, 0))
    for w in writers:
        w.finish()
    _same(Store(writers[0].path), Store(writers[1].path))


# -- what a stopped run left ----------------------------------------------------------------------


def _three_parts(path: Path) -> StoreWriter:
    w = _writer(path)
    for data in (_part(0, 2), _part(2, 3), _part(5, 1, _fail("clip9"))):
        w.write(data)
    w.close()
    return w


@pytest.mark.parametrize("how, warning", [("truncated", "part-000001.h5 is damaged"),
                                          ("gap", "part 1 is missing"),
                                          ("foreign", "part-000001.h5 belongs to another run")])
def test_a_damaged_or_missing_part_and_the_ones_after_it_are_redone(tmp_path: Path, how: str, warning: str) -> None:
    w = _three_parts(tmp_path / "s.h5")
    second = part_path(w.work, 1)
    if how == "truncated":
        second.write_bytes(second.read_bytes()[: second.stat().st_size // 2])
    elif how == "gap":
        second.unlink()
    else:  # the same name, from another run's work folder
        other = _three_parts(tmp_path / "other.h5")
        shutil.copy(part_path(other.work, 1), second)
    info = read_attrs(w.path)  # a reader sees the parts before the problem, quietly
    assert info["n_rows"] == 2 and len(info["parts"]) == 1
    with pytest.warns(RuntimeWarning, match=f"{warning}.*not used.*featurized again"):
        again = _writer(w.path)
    assert again.n_rows == 2 and again.next_seq == 1 and again.resumed
    assert sorted(p.name for p in again.work.glob("*.h5")) == ["part-000000.h5"]  # the rest was removed
    assert again.done_clip_ids() == {"clip0", "clip1"}
    again.write(_part(2, 3))
    again.write(_part(5, 1, _fail("clip9")))
    again.finish()
    _same(Store(w.path), _clean(tmp_path, [_part(0, 2), _part(2, 3), _part(5, 1, _fail("clip9"))]))


def _old_ser_work_folder(path: Path) -> Path:
    """The work folder an older ser left when its run stopped: a header without ``work_version``,
    the growing store ``grown.h5`` and a part pointing into it (``mel_chunks``), no mel of its own."""
    work = work_dir(path)
    work.mkdir()
    header = {"schema_version": 2, "session": "0" * 32, "base_session": None, "package_version": "0.1.0",
              "run_config": RUN_CONFIG, "plan_digest": None, "descriptor_names": NAMES, "mel_shape": [4, 3]}
    (work / "header.json").write_text(json.dumps(header, sort_keys=True))
    data = _part(0, 2)
    with h5py.File(work / "grown.h5", "w") as f:
        f.create_dataset("descriptors", data=data.descriptors, maxshape=(None, 2), chunks=(256, 2), fletcher32=True)
        f.create_dataset("mel", data=data.mel, maxshape=(None, 4, 3), chunks=(1, 4, 3), fletcher32=True)
    with h5py.File(work / "part-000000.h5", "w") as f:
        f.attrs.update(session=header["session"], seq=0, n_rows=2, n_failures=0)
        f["descriptors"] = data.descriptors
        f["mel_chunks"] = np.array([[4096, 52], [4148, 52]], dtype=np.int64)
    return work


@pytest.mark.parametrize("how", ["grown", "no-work-version", "newer"])
def test_an_unfinished_run_of_another_ser_is_refused_naming_the_problem(tmp_path: Path, how: str) -> None:
    path = tmp_path / "s.h5"
    if how == "grown":
        work = _old_ser_work_folder(path)
    else:
        w = _writer(path)
        w.write(_part(0, 2))
        w.close()
        work = w.work
        header = json.loads((work / "header.json").read_text())
        if how == "newer":
            header["work_version"] = WORK_VERSION + 1
        else:
            del header["work_version"]
        (work / "header.json").write_text(json.dumps(header))
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    expected = "unfinished featurize work of another ser.*cannot be resumed.*--overwrite"
    for attempt in (lambda: _writer(path), lambda: read_attrs(path), lambda: Store(path, require_complete=False)):
        with pytest.raises(StoreError, match=expected):
            attempt()
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 1 and "another ser" in result.output and "--overwrite" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file() and p.name not in ("LOCK", "PID")} == {
        k: v for k, v in before.items() if k not in ("LOCK", "PID")}  # nothing of it touched
    fresh = _writer(path, overwrite=True)  # --overwrite starts over
    assert not fresh.resumed and fresh.n_rows == 0
    assert sorted(p.name for p in work.iterdir()) == ["LOCK", "PID", "header.json"]
    assert json.loads((work / "header.json").read_text())["work_version"] == WORK_VERSION
    fresh.write(_part(0, 2))
    fresh.finish()
    assert Store(path).n_rows == 2


# -- readers while a run is going -----------------------------------------------------------------


def test_readers_see_a_snapshot_of_the_committed_parts_while_a_run_is_going(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    info = read_attrs(w.path)  # started, nothing committed yet
    assert not info["complete"] and info["n_rows"] == 0 and info["parts"] == []
    w.write(_part(0, 2))
    text = describe_store(w.path)
    assert f"INCOMPLETE: being written by featurize (pid {os.getpid()})" in text and "1 batch(es)" in text
    assert "rows: 2" in text
    first = Store(w.path, require_complete=False)
    assert first.n_rows == 2 and first.info["writer_pid"] == os.getpid()
    _hand_in(w, 1, _part(2, 3))  # a task's part on disk, not committed: not in any snapshot
    assert read_attrs(w.path)["n_rows"] == 2
    w.commit(_hand_in(w, 1, _part(2, 3)))
    second = Store(w.path, require_complete=False)
    assert second.n_rows == 5 and list(second.meta()["clip_id"]) == [f"clip{i}" for i in range(5)]
    np.testing.assert_array_equal(second.read("mel", np.arange(5)),
                                  np.concatenate([_part(0, 2).mel, _part(2, 3).mel]))
    assert first.n_rows == 2 and list(first.meta()["clip_id"]) == ["clip0", "clip1"]  # its snapshot holds
    np.testing.assert_array_equal(first.read("descriptors", np.arange(2)), _part(0, 2).descriptors)
    first.close()
    second.close()
    w.close()
    text = describe_store(w.path)
    assert "INCOMPLETE: featurize was interrupted after 2 batch(es)" in text
    assert read_attrs(w.path)["writer_pid"] is None


def test_a_part_that_vanishes_while_reading_raises_store_changed(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2, _fail("clip9")))
    w.write(_part(2, 3))
    partial = Store(w.path, require_complete=False)
    w.finish()  # the parts are merged and removed while the reader holds its snapshot
    for read in (lambda: partial.read("mel", np.array([0, 3])), partial.meta, partial.failures):
        with pytest.raises(StoreChanged, match="open it again"):
            read()
    partial.close()
    assert issubclass(StoreChanged, StoreError)
    again = Store(w.path, require_complete=False)  # opened again: the store
    assert again.info["complete"] and again.n_rows == 5
    assert ", complete" in describe_store(w.path)


@pytest.mark.filterwarnings("ignore:split not stratified:UserWarning")
def test_featurize_refuses_an_older_sers_unfinished_run_until_overwrite(six_clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "feats.h5"
    work = _old_ser_work_folder(out)
    args = ["featurize", "--data", str(six_clips), "--out", str(out), "--workers", "1", "--no-progress",
            "--n-mels", "16", "--max-seconds", "1.0", "--augment", "none"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "unfinished featurize work of another ser" in result.output and "--overwrite" in result.output
    assert "Traceback" not in result.output and (work / "grown.h5").is_file() and not out.exists()
    result = CliRunner().invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert read_attrs(out)["complete"] and not work.exists()
    assert Store(out).n_rows == 6 and len(Store(out).failures()) == 1


def test_a_work_folder_removed_while_opening_a_snapshot_raises_store_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ser.store.reader as reader_mod

    w = _writer(tmp_path / "s.h5")
    w.write(_part(0, 2))
    real = reader_mod._read_header

    def finished_meanwhile(work: Path) -> dict:
        header = real(work)
        shutil.rmtree(work)  # the writer merges and removes its work folder right here
        return header

    monkeypatch.setattr(reader_mod, "_read_header", finished_meanwhile)
    with pytest.raises(StoreChanged):
        read_attrs(w.path)
