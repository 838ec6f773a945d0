"""The featurize job, end to end on tiny synthetic corpora: library level and through the CLI."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner, Result

import ser.featurize.worker as worker_mod
from ser.cli import main
from ser.errors import SerError, StoreError
from ser.featurize.job import featurize, make_tasks, plan, pool_size
from ser.featurize.worker import ClipResult, part_data
from ser.corpus.labels import CREMAD_EMOTIONS
from ser.corpus.splits import assign_splits
from ser.store import Store, StoreWriter, read_attrs, work_dir
from ser.store.layout import CLIP_COLUMNS, META_COLUMNS, META_STRING_COLUMNS, as_plain
from ser.store.parts import PartSpec
from ser.corpus.synth import synth_voice

# tiny corpora are too small to stratify every split; the library warns, as it should
pytestmark = pytest.mark.filterwarnings("ignore:split not stratified:UserWarning")

# -- helpers -------------------------------------------------------------------------------------


def assert_same_store(a: Path, b: Path) -> None:
    """Byte-for-byte equal arrays, equal meta and failures, equal self-description."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in ("descriptors", "mel"):
            assert fa[name].shape == fb[name].shape, name
            assert fa[name][:].tobytes() == fb[name][:].tobytes(), f"{name} differs"
    pd.testing.assert_frame_equal(pd.read_hdf(a, "meta"), pd.read_hdf(b, "meta"))
    sa, sb = Store(a), Store(b)
    pd.testing.assert_frame_equal(sa.failures(), sb.failures())
    ia, ib = read_attrs(a), read_attrs(b)
    for key in ("feature_config", "split_config", "run_config", "labels", "descriptor_names", "complete"):
        assert ia[key] == ib[key], key
    assert sa.fingerprint() == sb.fingerprint()


def cli(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def featurize_cli(data: Path, out: Path, *extra: Any) -> Result:
    """``ser featurize`` with small, fast settings (override by repeating an option in ``extra``)."""
    return cli("featurize", "--data", data, "--out", out, "--workers", 1, "--no-progress",
               "--n-mels", 16, "--max-seconds", 1.0, *extra)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def quiet(msg: str) -> None:
    pass


# -- the session store: what featurize wrote ------------------------------------------------------


def test_each_clip_is_in_exactly_one_split(small_store: Path) -> None:
    meta = pd.read_hdf(small_store, "meta")
    assert (meta.groupby("clip_id")["split"].nunique() == 1).all()
    assert meta["clip_id"].nunique() == 48


def test_split_proportions_and_stratification_in_the_store(small_store: Path, small_store_config) -> None:
    meta = pd.read_hdf(small_store, "meta")
    clips = meta[meta["augment"] == "none"]
    per_emotion = pd.crosstab(clips["emotion"], clips["split"])
    assert per_emotion.loc[:, "test"].sum() == 15          # 30% of 48, rounded up
    assert per_emotion.loc[:, "test"].between(2, 3).all()  # 8 clips per emotion -> 2.4 each
    assert per_emotion.loc[:, "val"].sum() == 2            # 5% of the other 33
    # exactly the split the library draws from the clip table (seed 42)
    p = plan(small_store_config)
    expected = dict(zip(p.clips["clip_id"], assign_splits(p.clips, small_store_config.split)))
    assert dict(zip(clips["clip_id"], clips["split"])) == expected


def test_augmented_rows_only_in_train(small_store: Path) -> None:
    meta = pd.read_hdf(small_store, "meta")
    assert set(meta.loc[meta["split"] != "train", "augment"]) == {"none"}
    train = meta[meta["split"] == "train"]
    # every training clip: the original plus one copy per augmentation, adjacent, in order
    assert (train.groupby("clip_id")["augment"].agg(tuple) == ("none", "noise", "shift")).all()
    n_train = train["clip_id"].nunique()
    assert len(meta) == 48 + 2 * n_train
    # copies inherit their clip's meta
    cols = ["path", "speaker", "emotion", "label", "split", "duration_s", "sentence", "sex", "age"]
    assert (train.groupby("clip_id")[cols].nunique() == 1).all().all()


def test_descriptors_and_mel_are_finite_with_the_configured_shape(small_store: Path, small_store_config) -> None:
    cfg = small_store_config.features
    with Store(small_store) as store:
        rows = store.rows()
        desc, mel = store.read("descriptors", rows), store.read("mel", rows)
    assert desc.shape == (len(rows), len(store.descriptor_names))
    assert mel.shape == (len(rows), cfg.n_mels, cfg.n_frames) == (len(rows), 32, 94)
    assert np.all(np.isfinite(desc)) and np.all(np.isfinite(mel))
    assert desc.std(axis=0).max() > 0  # not all rows alike


def test_meta_carries_the_corpus_and_the_true_frame_count(small_store: Path, small_store_config,
                                                          cremad_corpus: Path) -> None:
    cfg = small_store_config.features
    meta = pd.read_hdf(small_store, "meta")
    originals = meta[meta["augment"] == "none"]
    assert set(originals["dataset"]) == {"cremad"}
    assert set(originals["speaker"]) == {"1001", "1002", "1003", "1004"}
    assert set(originals["sentence"]) == {"DFA", "IEO"}
    assert set(originals["sex"]) == {"Male", "Female"}       # from VideoDemographics.csv
    assert originals["age"].notna().all()
    assert all((cremad_corpus / p).is_file() and "/" not in p for p in originals["path"])
    assert [CREMAD_EMOTIONS[i] for i in originals["label"]] == list(originals["emotion"])
    on_disk = [sf.info(str(cremad_corpus / p)).duration for p in originals["path"]]
    np.testing.assert_allclose(originals["duration_s"], on_disk, rtol=0, atol=1e-9)
    kept = np.minimum(originals["duration_s"], cfg.max_seconds)
    expected = np.minimum(1 + np.round(kept * cfg.sample_rate).astype(int) // cfg.hop_length, cfg.n_frames)
    np.testing.assert_array_equal(originals["n_frames"], expected)
    assert (originals["n_frames"] == cfg.n_frames).any() and (originals["n_frames"] < cfg.n_frames).any()
    # padded frames hold the row's floor
    with Store(small_store) as store:
        short = originals.index[originals["n_frames"] < cfg.n_frames][0]
        n = int(originals.loc[short, "n_frames"])
        mel = store.read("mel", np.array([short]))[0]
    assert np.all(mel[:, n:] == mel[:, :n].min())


# -- determinism and resuming ---------------------------------------------------------------------


def test_the_same_store_twice_from_the_same_seed_with_two_workers(small_store: Path, small_store_config,
                                                                  tmp_path: Path) -> None:
    again = dataclasses.replace(small_store_config, out=tmp_path / "again.h5", workers=2, min_clips_per_worker=1)
    featurize(again, progress=False, log=quiet)
    assert_same_store(small_store, again.out)


def test_another_seed_gives_another_split(small_store: Path, small_store_config, tmp_path: Path) -> None:
    other = dataclasses.replace(small_store_config, out=tmp_path / "seed7.h5", augment=(),
                                split=dataclasses.replace(small_store_config.split, seed=7))
    featurize(other, progress=False, log=quiet)
    a = pd.read_hdf(small_store, "meta").query("augment == 'none'").set_index("clip_id")["split"]
    b = pd.read_hdf(other.out, "meta").set_index("clip_id")["split"]
    assert (a.sort_index() != b.sort_index()).any()
    assert Store(other.out).fingerprint() != Store(small_store).fingerprint()


def test_resume_after_an_interrupted_run_gives_the_clean_runs_store(small_store: Path, small_store_config,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dataclasses.replace(small_store_config, out=tmp_path / "resumed.h5", task_clips=8)
    real_commit = StoreWriter.commit
    calls = []

    def commit_then_ctrl_c(self: StoreWriter, receipt) -> None:
        calls.append(receipt.n_rows)
        if len(calls) < 3:
            return real_commit(self, receipt)
        # Ctrl-C lands before the commit: the task's part is on disk, its rename (the commit) never came
        assert receipt.path is not None and receipt.path.is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreWriter, "commit", commit_then_ctrl_c)
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        featurize(cfg, progress=False, log=logs.append)
    monkeypatch.setattr(StoreWriter, "commit", real_commit)
    committed = sum(calls[:2])
    info = read_attrs(cfg.out)
    assert not info["complete"] and info["writer_pid"] is None  # interrupted, nobody writing
    assert info["shapes"]["descriptors"][0] == committed
    assert not cfg.out.exists()  # the store file appears only whole
    assert Store(cfg.out, require_complete=False).n_rows == committed
    assert any("interrupted" in m and "resume" in m for m in logs)
    assert any(p.name.startswith("tmp-") for p in work_dir(cfg.out).iterdir())  # the uncommitted part
    with pytest.raises(SerError, match="incomplete"):
        Store(cfg.out)

    summary = featurize(cfg, progress=False, log=logs.append)
    assert summary.n_done_before == 16  # two tasks of 8 clips
    assert any("resuming" in m and "16 of 48" in m for m in logs)
    assert_same_store(small_store, cfg.out)


def _rows_meta_row_by_row(clips: pd.DataFrame, results: list[ClipResult]) -> pd.DataFrame:
    """The meta frame built the slow way: a dict per row."""
    records = []
    for (_, clip), r in zip(clips.iterrows(), results):
        if r.error is not None:
            continue
        for aug, nf in zip(r.augments, r.n_frames):
            rec = {c: clip[c] for c in CLIP_COLUMNS}
            rec.update(augment=aug, duration_s=r.duration_s, n_frames=nf)
            records.append(rec)
    return pd.DataFrame.from_records(records)


@pytest.mark.parametrize("strings", ["object", "inferred"])
def test_a_tasks_part_data_matches_the_row_by_row_build(strings: str) -> None:
    columns = {
        "clip_id": ["a", "b", "c", "d"], "path": ["x/a.wav", "x/b.wav", "x/c.wav", "x/d.wav"],
        "dataset": ["cremad"] * 4, "speaker": ["1001", "1002", None, "1004"],
        "emotion": ["ANG", "SAD", "ANG", "HAP"], "sentence": ["DFA", np.nan, "IEO", "ITS"],
        "intensity": ["XX"] * 4, "sex": ["Male", "Female", np.nan, ""], "split": ["train", "test", "train", "val"],
    }
    clips = pd.DataFrame({c: pd.Series(v, dtype=object if strings == "object" else None) for c, v in columns.items()})
    clips["age"] = [30.0, np.nan, 41.0, 22.0]
    clips["label"] = np.array([0, 1, 0, 2], dtype=np.int64)
    clips.index = [10, 11, 12, 13]  # a task is a slice of the clip table: labels, not positions
    rng = np.random.default_rng(3)
    spec = PartSpec(work=None, run="r", session="s", descriptor_names=("d0", "d1"), mel_shape=(2, 3))

    def ok(augments: list[str], n_frames: list[int], duration_s: float) -> ClipResult:
        k = len(augments)
        return ClipResult(descriptors=rng.standard_normal((k, 2)).astype(np.float32),
                          mel=rng.standard_normal((k, 2, 3)).astype(np.float32), augments=augments,
                          n_frames=n_frames, duration_s=duration_s)

    results = [ok(["none"], [7], 0.5), ClipResult(error="x/b.wav: not audio"),
               ok(["none", "noise", "shift"], [5, 5, 4], 1.25), ok(["none", "noise"], [3, 3], 2.0)]
    data = part_data(clips, results, spec)
    old = _rows_meta_row_by_row(clips, results)
    assert list(data.meta.columns) == list(CLIP_COLUMNS) + ["augment", "duration_s", "n_frames"]
    kept = [as_plain(m.loc[:, list(META_COLUMNS)], META_STRING_COLUMNS) for m in (old, data.meta)]
    pd.testing.assert_frame_equal(kept[1].reset_index(drop=True), kept[0], check_dtype=False)
    ok_results = [r for r in results if r.error is None]
    assert np.array_equal(data.descriptors, np.concatenate([r.descriptors for r in ok_results]))
    assert np.array_equal(data.mel, np.concatenate([r.mel for r in ok_results]))
    assert data.failures.to_dict("records") == [{"clip_id": "b", "path": "x/b.wav", "reason": "x/b.wav: not audio"}]


def test_a_task_whose_clips_all_failed_is_a_part_of_failures_only() -> None:
    clips = pd.DataFrame({c: ["a"] for c in CLIP_COLUMNS})
    spec = PartSpec(work=None, run="r", session="s", descriptor_names=("d0",), mel_shape=(2, 3))
    data = part_data(clips, [ClipResult(error="a.wav: silent")], spec)
    assert data.n_rows == 0 and data.mel.shape == (0, 2, 3) and data.descriptors.shape == (0, 1)
    assert list(data.failures["reason"]) == ["a.wav: silent"]


def test_tasks_cover_the_clips_in_plan_order_and_small_corpora_get_no_pool(small_store_config) -> None:
    todo = plan(small_store_config).clips.iloc[5:]  # 43 clips, as on a resume
    tasks = make_tasks(todo, Path("/data"), first_seq=3, workers=2, task_clips=32)
    assert [t.seq for t in tasks] == list(range(3, 3 + len(tasks)))
    assert len(tasks) >= 8  # four tasks a worker at least, to balance the end of the run
    joined = pd.concat([t.clips for t in tasks])
    assert list(joined["clip_id"]) == list(todo["clip_id"])
    assert joined["source"].iloc[0] == str(Path("/data") / todo["path"].iloc[0])
    assert len(make_tasks(todo, Path("/data"), 0, workers=1, task_clips=32)) == 2  # one worker: full tasks
    cfg = dataclasses.replace(small_store_config, workers=16)
    assert pool_size(cfg, 150) == 1 and pool_size(cfg, 250) == 2 and pool_size(cfg, 10**6) == 16
    assert pool_size(dataclasses.replace(cfg, min_clips_per_worker=1), 48) == 16


def _two_emotions(small_store_config, out: Path, **kw: Any):
    return dataclasses.replace(small_store_config, out=out, emotions=("ANG", "SAD"), augment=("noise",), **kw)


@pytest.fixture(scope="module")
def clean_two_emotions(small_store_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean run's store of :func:`_two_emotions` in tasks of 4 clips: what an interrupted
    run of the same, resumed, must equal. Read it, never write to it."""
    clean = _two_emotions(small_store_config, tmp_path_factory.mktemp("clean") / "clean.h5", task_clips=4)
    featurize(clean, progress=False, log=quiet)
    return clean.out


def test_a_commit_error_stops_featurize_with_its_message_and_the_rerun_finishes(
        small_store_config, clean_two_emotions: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _two_emotions(small_store_config, tmp_path / "full.h5", task_clips=4)
    real = worker_mod.write_part
    calls: list[int] = []

    def full_on_the_second(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(*args)

    monkeypatch.setattr(worker_mod, "write_part", full_on_the_second)
    with pytest.raises(StoreError, match="No space left on device.*rows committed before it are safe"):
        featurize(cfg, progress=False, log=quiet)
    assert len(calls) == 2  # the tasks after the failed one were never run
    assert sorted(p.name for p in work_dir(cfg.out).iterdir() if p.name.startswith("part-")) == ["part-000000.h5"]
    monkeypatch.undo()
    summary = featurize(cfg, progress=False, log=quiet)  # the lock was released: the rerun resumes
    assert summary.n_done_before == 4
    assert_same_store(clean_two_emotions, cfg.out)


def test_a_worker_that_dies_stops_featurize_with_a_message_and_the_rerun_finishes(
        small_store_config, clean_two_emotions: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed (by the OOM killer, say) breaks the pool: the run stops with a message
    saying what is kept, not a traceback, and the rerun resumes."""
    from concurrent.futures.process import BrokenProcessPool

    import ser.featurize.job as job

    cfg = _two_emotions(small_store_config, tmp_path / "died.h5", task_clips=4)
    real = job.receipts

    def dies_after_two(*args: Any, **kw: Any):
        for i, receipt in enumerate(real(*args, **kw)):
            if i == 2:
                raise BrokenProcessPool("A process in the process pool was terminated abruptly")
            yield receipt

    monkeypatch.setattr(job, "receipts", dies_after_two)
    with pytest.raises(SerError, match="worker died.*rows committed in .* are safe: run the same command again"):
        featurize(cfg, progress=False, log=quiet)
    monkeypatch.undo()
    assert len(Store(cfg.out, require_complete=False).info["parts"]) == 2
    summary = featurize(cfg, progress=False, log=quiet)
    assert summary.n_done_before == 8
    assert_same_store(clean_two_emotions, cfg.out)


def test_ctrl_c_during_compute_keeps_the_tasks_already_committed(
        small_store_config, clean_two_emotions: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _two_emotions(small_store_config, tmp_path / "stopped.h5", task_clips=4)
    real_clip = worker_mod.process_clip
    clips_seen: list[int] = []

    def ctrl_c_at_clip_13(*args: Any, **kw: Any) -> ClipResult:
        clips_seen.append(1)
        if len(clips_seen) == 13:
            raise KeyboardInterrupt
        return real_clip(*args, **kw)

    monkeypatch.setattr(worker_mod, "process_clip", ctrl_c_at_clip_13)
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        featurize(cfg, progress=False, log=logs.append)
    monkeypatch.undo()
    # the three tasks finished before the Ctrl-C are all committed, and the message says so
    committed = Store(cfg.out, require_complete=False)
    assert committed.meta()["clip_id"].nunique() == 12
    assert any(f"interrupted: {committed.n_rows} rows are safely committed" in m for m in logs), logs
    summary = featurize(cfg, progress=False, log=quiet)
    assert summary.n_done_before == 12
    assert_same_store(clean_two_emotions, cfg.out)


# -- filters, extremes, corpora ------------------------------------------------------------------


def test_emotions_filter_keeps_only_those_and_relabels(cremad_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.h5"
    ok(featurize_cli(cremad_corpus, out, "--emotions", "sad,ANG", "--augment", "none"))
    meta = pd.read_hdf(out, "meta")
    assert set(meta["emotion"]) == {"ANG", "SAD"} and len(meta) == 16
    assert read_attrs(out)["labels"] == ["ANG", "SAD"]
    assert (meta["label"] == (meta["emotion"] == "SAD").astype(int)).all()
    # the same set in another order is the same store: it resumes, it is not refused
    again = ok(featurize_cli(cremad_corpus, out, "--emotions", "ANG,SAD", "--augment", "none"))
    assert "16 of 16 clips already done" in again.output
    bad = featurize_cli(cremad_corpus, tmp_path / "g.h5", "--emotions", "ANG,XYZ")
    assert bad.exit_code == 1 and "XYZ" in bad.output


def test_augment_none_gives_one_row_per_clip(emodb_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "emodb.h5"
    result = ok(featurize_cli(emodb_corpus, out, "--augment", "none"))
    meta = pd.read_hdf(out, "meta")
    assert len(meta) == meta["clip_id"].nunique() == 56 and set(meta["augment"]) == {"none"}
    assert "wrote" in result.output and "56 rows" in result.output
    # the EmoDB layout is detected, boredom kept, and 22.05 kHz audio resampled to 16 kHz
    assert set(meta["dataset"]) == {"emodb"}
    assert read_attrs(out)["labels"] == list(CREMAD_EMOTIONS) + ["BOR"]
    assert meta["n_frames"].between(1 + int(0.8 * 16000) // 256 - 1, 1 + 16000 // 256).all()
    assert np.all(np.isfinite(Store(out).read("descriptors", meta.index.to_numpy())))


def test_split_speaker_puts_no_speaker_in_two_splits(cremad_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "spk.h5"
    ok(featurize_cli(cremad_corpus, out, "--split", "speaker", "--augment", "noise"))
    meta = pd.read_hdf(out, "meta")
    assert (meta.groupby("speaker")["split"].nunique() == 1).all()
    per_split = meta.groupby("split")["speaker"].nunique()
    assert per_split.to_dict() == {"test": 1, "train": 2, "val": 1}
    assert set(meta.loc[meta["augment"] == "noise", "split"]) == {"train"}
    assert read_attrs(out)["split_config"]["method"] == "speaker"


def test_test_size_zero_puts_everything_in_train_and_val(cremad_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "t0.h5"
    ok(featurize_cli(cremad_corpus, out, "--test-size", 0, "--augment", "none"))
    meta = pd.read_hdf(out, "meta")
    assert set(meta["split"]) == {"train", "val"} and len(meta) == 48
    assert (meta["split"] == "val").sum() == 3  # 5% of 48, rounded up


def test_test_size_one_puts_everything_in_test_without_augmentation(cremad_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "t1.h5"
    ok(featurize_cli(cremad_corpus, out, "--test-size", 1.0, "--augment", "noise,stretch,shift,pitch"))
    meta = pd.read_hdf(out, "meta")
    assert set(meta["split"]) == {"test"}
    assert set(meta["augment"]) == {"none"} and len(meta) == 48


def test_a_changed_argument_is_refused_and_overwrite_starts_over(cremad_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    common = ("--emotions", "ANG", "--augment", "none")
    ok(featurize_cli(cremad_corpus, out, *common))
    before = out.read_bytes()
    refused = featurize_cli(cremad_corpus, out, *common, "--n-mels", 24, "--seed", 7)
    assert refused.exit_code == 1
    assert "n_mels: 16 -> 24" in refused.output and "seed: 42 -> 7" in refused.output
    assert "--overwrite" in refused.output
    assert out.read_bytes() == before
    resumed = ok(featurize_cli(cremad_corpus, out, *common))  # same arguments: nothing to do
    assert "8 of 8 clips already done" in resumed.output
    ok(featurize_cli(cremad_corpus, out, *common, "--n-mels", 24, "--seed", 7, "--overwrite"))
    info = read_attrs(out)
    assert info["shapes"]["mel"][1] == 24 and info["split_config"]["seed"] == 7 and info["complete"]


def test_ctrl_c_through_the_cli_exits_130_and_the_rerun_finishes(cremad_corpus: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "c.h5"
    args = ("--emotions", "HAP", "--augment", "none")

    def ctrl_c(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreWriter, "commit", ctrl_c)
    result = featurize_cli(cremad_corpus, out, *args)
    assert result.exit_code == 130 and "interrupted" in result.output
    assert not read_attrs(out)["complete"]
    info = ok(cli("info", out))
    assert "INCOMPLETE" in info.output
    monkeypatch.undo()
    ok(featurize_cli(cremad_corpus, out, *args))
    assert read_attrs(out)["complete"] and len(pd.read_hdf(out, "meta")) == 8


def test_multiprocessing_backend_gives_the_same_rows(small_store_config, tmp_path: Path) -> None:
    # regression: joblib's multiprocessing backend cannot stream results (return_as="generator")
    one = _two_emotions(small_store_config, tmp_path / "one.h5")
    mp = dataclasses.replace(one, out=tmp_path / "mp.h5", workers=2, backend="multiprocessing", min_clips_per_worker=1)
    featurize(one, progress=False, log=quiet)
    featurize(mp, progress=False, log=quiet)
    assert_same_store(one.out, mp.out)


def _marking_worker_task(task, spec, cfg):
    """worker_task, noting in $SER_TEST_STARTED that the task began."""
    (Path(os.environ["SER_TEST_STARTED"]) / f"{task.seq:06d}").touch()
    return worker_mod.worker_task(task, spec, cfg)


def test_a_pool_that_cannot_stream_commits_its_parts_a_window_at_a_time(
        small_store_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # joblib's multiprocessing pool hands results back a whole call at a time: one call for the
    # whole plan would commit nothing until the last task ended, and a crash would lose the run
    import multiprocessing

    import ser.featurize.job as job

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("watches the tasks that forked workers begin")
    cfg = dataclasses.replace(_two_emotions(small_store_config, tmp_path / "mp.h5"), workers=2,
                              backend="multiprocessing", min_clips_per_worker=1)
    marks = tmp_path / "started"
    marks.mkdir()
    monkeypatch.setenv("SER_TEST_STARTED", str(marks))
    monkeypatch.setattr(job, "worker_task", _marking_worker_task)  # forked workers see it too
    started_at_commit: list[int] = []
    real = StoreWriter.commit

    def spy(self, receipt):
        started_at_commit.append(len(list(marks.iterdir())))
        return real(self, receipt)

    monkeypatch.setattr(StoreWriter, "commit", spy)
    featurize(cfg, progress=False, log=quiet)
    n_tasks = len(list(marks.iterdir()))
    assert n_tasks > 4 and started_at_commit[0] <= 4 < n_tasks  # the first window: two tasks a worker


def test_remote_workers_that_cannot_see_the_work_folder_return_rows_and_the_parent_writes_them(
        small_store: Path, small_store_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One code path, two callers: the parent writes the part a worker would have written."""
    import ser.featurize.job as job

    monkeypatch.setattr(job, "shares_work_folder", lambda cfg: False)
    returned: list[bool] = []
    real = StoreWriter.commit

    def spy(self, receipt):
        returned.append(receipt.data is not None and receipt.path is None)
        return real(self, receipt)

    monkeypatch.setattr(StoreWriter, "commit", spy)
    cfg = dataclasses.replace(small_store_config, out=tmp_path / "remote.h5", workers=2, min_clips_per_worker=1,
                              task_clips=4)
    featurize(cfg, progress=False, log=quiet)
    assert returned and all(returned)
    assert_same_store(small_store, cfg.out)


# -- bad input -----------------------------------------------------------------------------------

BAD_FILES = {
    "1003_DFA_ANG_XX.wav": "cannot decode audio",   # a text file named .wav
    "1003_DFA_DIS_XX.wav": "empty file (0 bytes)",  # zero bytes
    "1003_DFA_FEA_XX.wav": "silent",                # all-zero samples
}
CONVERTED = ("1003_DFA_HAP_XX.wav", "1003_DFA_NEU_XX.wav", "1003_DFA_SAD_XX.wav")


@pytest.fixture(scope="module")
def messy_corpus(cremad_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Actors 1001-1002 of the session corpus (24 clips), three unusable files, three files in
    other formats (stereo 44.1 kHz, 8-bit, float32 22.05 kHz) and one unparseable name."""
    folder = tmp_path_factory.mktemp("messy") / "AudioWAV"
    folder.mkdir()
    for wav in sorted(cremad_corpus.glob("100[12]_*.wav")):
        shutil.copy(wav, folder / wav.name)
    (folder / "1003_DFA_ANG_XX.wav").write_text("RIFF? no, just some notes about the session\n")
    (folder / "1003_DFA_DIS_XX.wav").write_bytes(b"")
    sf.write(folder / "1003_DFA_FEA_XX.wav", np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    rng = np.random.default_rng(99)
    stereo = np.stack([synth_voice("HAP", duration_s=1.0, sr=44100, rng=rng)] * 2, axis=1)
    stereo[:, 1] *= 0.5
    sf.write(folder / "1003_DFA_HAP_XX.wav", stereo, 44100, subtype="PCM_16")
    sf.write(folder / "1003_DFA_NEU_XX.wav", synth_voice("NEU", duration_s=1.0, sr=16000, rng=rng), 16000,
             subtype="PCM_U8")
    sf.write(folder / "1003_DFA_SAD_XX.wav", synth_voice("SAD", duration_s=1.0, sr=22050, rng=rng), 22050,
             subtype="FLOAT")
    (folder / "notes_on_recording_day_two.wav").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def messy_store(messy_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("messy_store") / "feats.h5"
    return out, featurize_cli(messy_corpus, out, "--augment", "none")


def test_unusable_files_are_recorded_and_the_run_completes(messy_store: tuple[Path, Result]) -> None:
    out, result = messy_store
    ok(result)
    assert "27 rows from 27 clips" in result.output  # 30 parseable names, 3 undecodable
    assert "4 file(s) could not be used" in result.output
    failures = Store(out).failures().set_index("path")
    assert sorted(failures.index) == sorted([*BAD_FILES, "notes_on_recording_day_two.wav"])
    for name, reason in BAD_FILES.items():
        assert name in failures.loc[name, "reason"] and reason in failures.loc[name, "reason"]
    assert "does not match" in failures.loc["notes_on_recording_day_two.wav", "reason"]
    meta = pd.read_hdf(out, "meta")
    assert len(meta) == 24 + len(CONVERTED)
    assert not set(meta["path"]) & set(failures.index)
    assert read_attrs(out)["complete"]


def test_stereo_8bit_float_and_other_rates_are_converted_not_rejected(messy_store: tuple[Path, Result]) -> None:
    out, _ = messy_store
    meta = pd.read_hdf(out, "meta").set_index("path")
    assert set(CONVERTED) <= set(meta.index)
    for name in CONVERTED:
        assert meta.loc[name, "duration_s"] == pytest.approx(1.0, abs=1e-3)
        assert meta.loc[name, "n_frames"] == 1 + 16000 // 256
    rows = pd.read_hdf(out, "meta").query("path in @CONVERTED").index.to_numpy()
    assert np.all(np.isfinite(Store(out).read("descriptors", rows)))


def test_info_prints_counts_and_failures(messy_store: tuple[Path, Result]) -> None:
    out, _ = messy_store
    text = ok(cli("info", out)).output
    assert "complete" in text and "rows: 27" in text and "clips: 27" in text
    assert "clips per split and emotion" in text and "rows per split and augmentation" in text
    assert "clips per speaker and split" in text and "1003" in text
    assert "failures: 4" in text
    for name in [*BAD_FILES, "notes_on_recording_day_two.wav"]:
        assert name in text
    short = ok(cli("info", out, "--failures", 1)).output
    assert "3 more" in short


def test_info_on_something_that_is_not_a_store(tmp_path: Path) -> None:
    result = cli("info", tmp_path / "missing.h5")
    assert result.exit_code == 1 and "no such store" in result.output


def test_a_folder_without_audio_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    result = featurize_cli(tmp_path / "empty", tmp_path / "x.h5")
    assert result.exit_code == 1 and "no audio files" in result.output
    assert not (tmp_path / "x.h5").exists()


def test_an_unknown_layout_is_refused_with_a_hint(cremad_corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    for i, wav in enumerate(sorted(cremad_corpus.glob("*.wav"))[:3]):
        shutil.copy(wav, folder / f"take_{i}.wav")
    result = featurize_cli(folder, tmp_path / "x.h5")
    assert result.exit_code == 1
    assert "unknown corpus layout" in result.output and "take_0.wav" in result.output
    assert "--dataset manifest" in result.output


def test_a_corpus_of_only_unreadable_files_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "AudioWAV"
    folder.mkdir()
    for name in ("1001_DFA_ANG_XX.wav", "1001_DFA_SAD_XX.wav"):
        (folder / name).write_text("not audio")
    result = featurize_cli(folder, tmp_path / "x.h5", "--augment", "none")
    assert result.exit_code == 1
    assert "no clip could be featurized (2 failures)" in result.output
    assert "1001_DFA_SAD_XX.wav" in ok(cli("info", tmp_path / "x.h5")).output


def test_a_missing_data_folder_is_refused(tmp_path: Path) -> None:
    result = featurize_cli(tmp_path / "nowhere", tmp_path / "x.h5")
    assert result.exit_code == 1 and "no such folder" in result.output


def test_out_must_not_be_an_input_file(cremad_corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "AudioWAV"
    shutil.copytree(cremad_corpus, folder)
    victim = folder / "1001_DFA_ANG_XX.wav"
    before = victim.read_bytes()
    result = featurize_cli(folder, victim, "--augment", "none")
    assert result.exit_code == 1 and "input audio files" in result.output
    assert victim.read_bytes() == before


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_out_must_not_be_an_input_file_under_another_name(cremad_corpus: Path, tmp_path: Path, link: str) -> None:
    folder = tmp_path / "AudioWAV"
    shutil.copytree(cremad_corpus, folder)
    victim = folder / "1001_DFA_ANG_XX.wav"
    before = victim.read_bytes()
    out = tmp_path / "feats.h5"  # not an audio name: only its being an input can stop the run
    if link == "hard":
        os.link(victim, out)
    else:
        out.symlink_to(victim)
    result = featurize_cli(folder, out, "--augment", "none", "--overwrite")
    assert result.exit_code == 1 and "input audio files" in result.output
    assert victim.read_bytes() == before
