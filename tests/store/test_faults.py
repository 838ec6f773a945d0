"""Bad audio, killed runs and untrusted files: the pipeline keeps going, loses nothing and
trusts nothing it loads.

- every kind of bad input becomes a per-file reason in the store's ``failures`` table (or is
  converted), end to end through ``featurize``;
- ``featurize`` killed with SIGKILL (a subprocess, at a random moment) resumes to the clean
  run's store; SIGINT stops with a message saying how to resume; a second writer is refused;
  readers during a run see a consistent snapshot or are told it is being written;
- a truncated or damaged store is reported by ``ser info``, ``train`` and ``evaluate`` with a
  message, never a traceback; an old-schema store is refused;
- ``train`` killed with SIGKILL resumes (``--resume``) to the uninterrupted run's weights;
- no output path overwrites audio; manifest paths stay inside the manifest's folder.

The longer randomized version (20+ kill trials, kills at every commit point) is
``benchmarks/fault_injection.py``.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner, Result

from array_store import make_array_store
from ser.cli import main
from ser.errors import StoreError
from ser.features.config import FeatureConfig
from ser.featurize.job import FeaturizeConfig, featurize
from ser.report.info import describe_store
from ser.store import SCHEMA_VERSION, Store, read_attrs, work_dir
from ser.corpus.synth import make_cremad_corpus, synth_voice
from ser.training.loop import TrainConfig, train

pytestmark = pytest.mark.filterwarnings("ignore:split not stratified:UserWarning")
QUIET = dict(log=lambda m: None)
SR = 16000


def cli(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def no_traceback(result: Result) -> None:
    """A failure must be a message (click exits), never an exception escaping the command."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def same_store(a: Path, b: Path) -> None:
    """Same clips, splits, arrays (byte for byte), failures and configuration."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in ("descriptors", "mel"):
            assert fa[name].shape == fb[name].shape, name
            assert fa[name][:].tobytes() == fb[name][:].tobytes(), f"{name} differs"
    ma, mb = pd.read_hdf(a, "meta"), pd.read_hdf(b, "meta")
    pd.testing.assert_frame_equal(ma, mb)
    assert not mb.duplicated(["clip_id", "augment"]).any()
    pd.testing.assert_frame_equal(Store(a).failures(), Store(b).failures())
    ia, ib = read_attrs(a), read_attrs(b)
    for key in ("run_config", "labels", "descriptor_names", "complete", "plan_digest", "n_rows"):
        assert ia[key] == ib[key], key
    assert not work_dir(b).exists()


# -- a tiny corpus, a reference store, and the process that gets killed ---------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic CREMA-D clips (actors 1001-1002, sentence DFA, six emotions), 0.6-1.0 s."""
    root = tmp_path_factory.mktemp("tiny")
    make_cremad_corpus(root, n_actors=2, sentences=("DFA",), duration_s=(0.6, 1.0), seed=3)
    return root / "AudioWAV"


def tiny_config(data: Path, out: Path, **kw: Any) -> FeaturizeConfig:
    return FeaturizeConfig(data=data, out=out, augment=("noise",), workers=1, task_clips=2,
                           features=FeatureConfig(n_mels=16, max_seconds=1.0), **kw)


CHILD = textwrap.dedent("""
    import sys, time, warnings
    from pathlib import Path
    warnings.filterwarnings("ignore")
    from ser.features.config import FeatureConfig
    from ser.featurize.job import FeaturizeConfig, featurize
    cfg = FeaturizeConfig(data=Path(sys.argv[1]), out=Path(sys.argv[2]), augment=("noise",), workers=1,
                          task_clips=2, features=FeatureConfig(n_mels=16, max_seconds=1.0))
    print("ready", flush=True)
    featurize(cfg, progress=False, log=lambda m: None)
    print("done", flush=True)
""")


@pytest.fixture(scope="module")
def reference(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    featurize(tiny_config(tiny, out), progress=False, **QUIET)
    return out


def start_child(data: Path, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


# -- featurize killed ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_featurize_killed_at_a_random_moment_resumes_to_the_clean_store(tiny: Path, reference: Path,
                                                                       tmp_path: Path, seed: int) -> None:
    out = tmp_path / "feats.h5"
    proc = start_child(tiny, out)
    time.sleep(random.Random(seed).uniform(0.3, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():  # the store file only ever appears whole
        assert read_attrs(out)["complete"]
    featurize(tiny_config(tiny, out), progress=False, **QUIET)
    same_store(reference, out)


def test_killed_at_the_final_rename_resumes(tiny: Path, reference: Path, tmp_path: Path) -> None:
    """strace's fault injection kills the writer exactly before its last rename (the replace
    that publishes the store): every part is committed, nothing is published."""
    if shutil.which("strace") is None:
        pytest.skip("strace not installed")
    out = tmp_path / "feats.h5"
    cmd = [sys.executable, "-c", CHILD, str(tiny), str(out)]
    log = tmp_path / "renames.txt"  # a clean run first, to count the writer's renames
    subprocess.run(["strace", "-qq", "-o", str(log), "-e", "trace=rename", *cmd], check=True, capture_output=True)
    n = sum(line.startswith("rename(") for line in log.read_text().splitlines())
    shutil.rmtree(work_dir(out), ignore_errors=True)
    out.unlink(missing_ok=True)
    run = subprocess.run(["strace", "-qq", "-o", "/dev/null", "-e", "trace=rename",
                          "-e", f"inject=rename:signal=KILL:when={n}", *cmd], capture_output=True, text=True)
    assert "done" not in run.stdout and not out.exists()
    info = read_attrs(out)
    assert not info["complete"] and info["n_rows"] == len(pd.read_hdf(reference, "meta"))
    featurize(tiny_config(tiny, out), progress=False, **QUIET)
    same_store(reference, out)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tiny: Path, tmp_path: Path) -> None:
    many = tmp_path / "AudioWAV"  # 120 clips: each of the tiny corpus's two actors as ten
    many.mkdir()
    for copy in range(10):
        for wav in tiny.glob("*.wav"):
            actor = 1001 + 10 * (int(wav.name[:4]) - 1001) + copy
            shutil.copy(wav, many / f"{actor}{wav.name[4:]}")
    assert len(list(many.glob("*.wav"))) == 120  # four tasks of 32 clips (the default), a part each
    out = tmp_path / "feats.h5"
    args = ["featurize", "--data", many, "--out", out, "--workers", 1, "--no-progress", "--n-mels", 16,
            "--max-seconds", 1.0, "--augment", "noise,stretch,shift,pitch"]
    proc = subprocess.Popen([sys.executable, "-c", "from ser.cli import main; main()", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (work_dir(out) / "part-000000.h5").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the first task's part (32 clips) is committed: the run is mid-way
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode in (0, -signal.SIGINT) and out.exists():
        # -SIGINT: the store was finished and Python, shutting down, had restored the default handler
        pytest.skip("featurize finished before the SIGINT arrived")
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert not read_attrs(out)["complete"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert read_attrs(out)["complete"] and not work_dir(out).exists()


def test_a_second_writer_is_refused_and_readers_are_told(tiny: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "feats.h5"
    holder = textwrap.dedent(f"""
        import time
        from ser.store import StoreWriter, read_attrs
        rc = read_attrs({str(reference)!r})
        w = StoreWriter({str(out)!r}, run_config=rc["run_config"], descriptor_names=rc["descriptor_names"])
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=f"being written by another featurize \\(pid {proc.pid}\\)"):
            featurize(tiny_config(tiny, out), progress=False, **QUIET)
        assert read_attrs(out)["writer_pid"] == proc.pid
        assert f"being written by featurize (pid {proc.pid})" in describe_store(out)
        with pytest.raises(StoreError, match="still writing it"):
            Store(out)
        result = cli("train", "--store", out, "--epochs", 1, "--out", tmp_path / "run")
        assert result.exit_code == 1 and "still writing it" in result.output
    finally:
        proc.kill()
        proc.wait()
    assert read_attrs(out)["writer_pid"] is None  # the lock died with its holder
    assert "interrupted" in describe_store(out)
    featurize(tiny_config(tiny, out), progress=False, **QUIET)
    same_store(reference, out)


def test_readers_during_a_run_see_snapshots_and_never_damage_it(tiny: Path, reference: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "feats.h5"
    proc = start_child(tiny, out)
    seen = {"snapshot": 0, "complete": 0, "absent": 0}
    ref_meta = pd.read_hdf(reference, "meta")
    while True:
        running = proc.poll() is None
        try:
            text = describe_store(out)
            seen["complete" if ", complete" in text else "snapshot"] += 1
            assert "INCOMPLETE" in text or ", complete" in text
        except StoreError as exc:  # before the first commit
            assert "no store yet" in str(exc) or "no such store" in str(exc), exc
            seen["absent"] += 1
        try:
            meta = pd.read_hdf(out, "meta")
            pd.testing.assert_frame_equal(meta, ref_meta)  # the store file is only ever whole
        except FileNotFoundError:
            pass
        if not running:
            break
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read()
    assert seen["complete"] > 0 and seen["snapshot"] + seen["absent"] > 0  # looked during the run too
    same_store(reference, out)


# -- bad input, end to end -----------------------------------------------------------------------

def _tone(seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    return synth_voice("HAP", duration_s=seconds, sr=sr, rng=np.random.default_rng(int(seconds * 1000) + sr)) * amp


BAD = {  # file -> what its failure reason must say
    "1002_DFA_ANG_XX.wav": "empty file (0 bytes)",
    "1002_DFA_DIS_XX.wav": "truncated",                       # header cut at 20 bytes
    "1002_DFA_FEA_XX.wav": "cannot decode audio",             # a text file named .wav
    "1002_DFA_HAP_XX.wav": "silent",
    "1002_DFA_NEU_XX.wav": "shorter than one analysis frame",
    "1002_DFA_SAD_XX.wav": "NaN or Inf",                       # NaN samples
    "1002_IEO_ANG_XX.wav": "NaN or Inf",                       # +Inf samples
    "1002_IEO_DIS_XX.wav": "permission denied",
    "1003_IEO_XYZ_XX.wav": "unknown emotion code 'XYZ'",
    "Überprüfung_日本/1006_DFA_SAD_XX.wav": "cannot decode audio",
}
CONVERTED = {  # file -> seconds on disk
    "1004_DFA_ANG_XX.wav": 1.0,   # stereo 44.1 kHz
    "1004_DFA_DIS_XX.wav": 1.0,   # 8-bit
    "1004_DFA_FEA_XX.wav": 1.0,   # 24-bit 48 kHz
    "1004_DFA_HAP_XX.wav": 1.0,   # float32 22.05 kHz
    "1004_DFA_NEU_XX.flac": 1.0,
    "1003_DFA_ANG_XX.wav": 600.0,  # ten minutes, cut to --max-seconds
    "Überprüfung_日本/1006_DFA_ANG_XX.wav": 1.0,  # a non-ASCII folder
}


@pytest.fixture(scope="module")
def messy(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("messy") / "AudioWAV"
    shutil.copytree(tiny, folder)
    good = (_tone(0.5, SR) * 32767).astype(np.int16)
    (folder / "1002_DFA_ANG_XX.wav").write_bytes(b"")
    sf.write(folder / "whole.tmp", good, SR, subtype="PCM_16", format="WAV")
    (folder / "1002_DFA_DIS_XX.wav").write_bytes((folder / "whole.tmp").read_bytes()[:20])
    (folder / "whole.tmp").unlink()
    (folder / "1002_DFA_FEA_XX.wav").write_text("RIFF? no: notes about the session\n")
    sf.write(folder / "1002_DFA_HAP_XX.wav", np.zeros(SR, dtype=np.int16), SR, subtype="PCM_16")
    sf.write(folder / "1002_DFA_NEU_XX.wav", good[:100], SR, subtype="PCM_16")
    nan = _tone(0.5, SR).astype(np.float32)
    nan[10] = np.nan
    sf.write(folder / "1002_DFA_SAD_XX.wav", nan, SR, subtype="FLOAT")
    inf = _tone(0.5, SR).astype(np.float32)
    inf[10] = np.inf
    sf.write(folder / "1002_IEO_ANG_XX.wav", inf, SR, subtype="FLOAT")
    sf.write(folder / "1002_IEO_DIS_XX.wav", good, SR, subtype="PCM_16")  # "locked" in the test
    sf.write(folder / "1003_IEO_XYZ_XX.wav", good, SR, subtype="PCM_16")
    with sf.SoundFile(folder / "1003_DFA_ANG_XX.wav", "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        minute = (np.tile(_tone(1.0, SR), 60) * 32767).astype(np.int16)
        for _ in range(10):
            f.write(minute)
    y44 = _tone(1.0, 44100)
    sf.write(folder / "1004_DFA_ANG_XX.wav", np.stack([y44, 0.5 * y44], axis=1), 44100, subtype="PCM_16")
    sf.write(folder / "1004_DFA_DIS_XX.wav", _tone(1.0, SR), SR, subtype="PCM_U8")
    sf.write(folder / "1004_DFA_FEA_XX.wav", _tone(1.0, 48000), 48000, subtype="PCM_24")
    sf.write(folder / "1004_DFA_HAP_XX.wav", _tone(1.0, 22050), 22050, subtype="FLOAT")
    sf.write(folder / "1004_DFA_NEU_XX.flac", _tone(1.0, SR), SR, subtype="PCM_16")
    for sub in ("take1", "take2"):  # the same clip name in two folders: both kept, told apart
        (folder / sub).mkdir()
        sf.write(folder / sub / "1005_DFA_ANG_XX.wav", _tone(0.8, SR), SR, subtype="PCM_16")
    odd = folder / "Überprüfung_日本"
    odd.mkdir()
    sf.write(odd / "1006_DFA_ANG_XX.wav", _tone(1.0, SR), SR, subtype="PCM_16")
    (odd / "1006_DFA_SAD_XX.wav").write_text("not audio either")
    return folder


@pytest.fixture(scope="module")
def messy_run(messy: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    import builtins

    import ser.audio.decode

    def open_unless_locked(file: Any, *args: Any, **kwargs: Any) -> Any:
        # tests run as root, where chmod 000 does not stop reads: deny this one file like the kernel would
        if str(file).endswith("1002_IEO_DIS_XX.wav"):
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    out = tmp_path_factory.mktemp("messy_store") / "feats.h5"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ser.audio.decode, "open", open_unless_locked, raising=False)
        result = cli("featurize", "--data", messy, "--out", out, "--workers", 1, "--no-progress",
                     "--n-mels", 16, "--max-seconds", 1.0, "--augment", "none")
    return out, result


def test_each_bad_file_has_its_reason_and_the_run_completes(messy_run: tuple[Path, Result]) -> None:
    out, result = messy_run
    assert result.exit_code == 0, result.output
    assert f"{len(BAD)} file(s) could not be used; see `ser info {out}`" in result.output
    for name in BAD:  # each named in the summary too
        assert f"skipped {name}:" in result.output
    failures = Store(out).failures().set_index("path")
    assert sorted(failures.index) == sorted(BAD)
    for name, reason in BAD.items():
        assert reason in failures.loc[name, "reason"], (name, failures.loc[name, "reason"])
    meta = pd.read_hdf(out, "meta")
    assert not set(meta["path"]) & set(BAD)
    assert read_attrs(out)["complete"]
    info = cli("info", out)
    assert info.exit_code == 0 and f"failures: {len(BAD)}" in info.output
    assert "Überprüfung_日本/1006_DFA_SAD_XX.wav" in info.output


def test_other_formats_and_a_ten_minute_clip_are_converted(messy_run: tuple[Path, Result]) -> None:
    out, _ = messy_run
    meta = pd.read_hdf(out, "meta").set_index("path")
    for name, seconds in CONVERTED.items():
        assert meta.loc[name, "duration_s"] == pytest.approx(seconds, abs=2e-3), name
        assert meta.loc[name, "n_frames"] == 1 + SR // 256  # full: cut to --max-seconds 1.0
    with Store(out) as store:
        rows = store.rows()
        assert np.all(np.isfinite(store.read("descriptors", rows))) and np.all(np.isfinite(store.read("mel", rows)))


def test_duplicate_names_in_two_folders_are_two_clips_in_one_split_each(messy_run: tuple[Path, Result]) -> None:
    out, _ = messy_run
    meta = pd.read_hdf(out, "meta")
    dup = meta[meta["path"].str.endswith("1005_DFA_ANG_XX.wav")]
    assert sorted(dup["clip_id"]) == ["take1/1005_DFA_ANG_XX", "take2/1005_DFA_ANG_XX"]
    assert meta["clip_id"].is_unique  # --augment none: one row per clip
    assert meta.groupby("clip_id")["split"].nunique().eq(1).all()


def test_a_non_ascii_path_round_trips(messy_run: tuple[Path, Result]) -> None:
    out, _ = messy_run
    meta = pd.read_hdf(out, "meta")
    row = meta[meta["path"] == "Überprüfung_日本/1006_DFA_ANG_XX.wav"]
    assert len(row) == 1 and row["clip_id"].iloc[0] == "1006_DFA_ANG_XX"


def test_manifest_paths_cannot_leave_its_folder_unless_allowed(tiny: Path, tmp_path: Path) -> None:
    inside = tmp_path / "m"
    inside.mkdir()
    rows = []
    for wav in sorted(tiny.glob("*.wav"))[:6]:
        shutil.copy(wav, inside / wav.name)
        rows.append(f"{wav.name},{wav.stem.split('_')[2]}")
    outside = tmp_path / "outside.wav"
    shutil.copy(sorted(tiny.glob("*.wav"))[6], outside)
    absolute = sorted(tiny.glob("*.wav"))[7]
    rows += ["../outside.wav,ANG", f"{absolute},SAD"]
    manifest = inside / "manifest.csv"
    manifest.write_text("path,emotion\n" + "\n".join(rows) + "\n")
    common = ("--workers", 1, "--no-progress", "--n-mels", 16, "--max-seconds", 1.0, "--augment", "none",
              "--test-size", 0.3)
    out = tmp_path / "m.h5"
    result = cli("featurize", "--manifest", manifest, "--out", out, *common)
    assert result.exit_code == 0, result.output
    failures = Store(out).failures().set_index("path")
    assert "escapes the manifest folder" in failures.loc["../outside.wav", "reason"]
    assert "absolute path not allowed" in failures.loc[str(absolute), "reason"]
    assert len(pd.read_hdf(out, "meta")) == 6
    allowed = tmp_path / "allowed.h5"
    result = cli("featurize", "--manifest", manifest, "--out", allowed, "--allow-absolute-paths", *common)
    assert result.exit_code == 0, result.output
    paths = set(pd.read_hdf(allowed, "meta")["path"])
    assert len(paths) == 8 and str(outside.resolve()) in paths and str(absolute) in paths


# -- outputs never overwrite inputs --------------------------------------------------------------

def test_no_output_path_overwrites_audio(tiny: Path, reference: Path, tmp_path: Path) -> None:
    victim = tmp_path / "keep_me.wav"
    shutil.copy(sorted(tiny.glob("*.wav"))[0], victim)
    before = victim.read_bytes()
    r = cli("featurize", "--data", tiny, "--out", victim, "--workers", 1, "--no-progress", "--overwrite")
    assert r.exit_code == 1 and "existing audio file" in r.output
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    r = cli("featurize", "--data", tiny, "--out", notes, "--workers", 1, "--no-progress", "--overwrite")
    assert r.exit_code == 1 and "not a feature store" in r.output and notes.read_text() == "my notes"
    train(reference, TrainConfig(model="cnn1d", epochs=1, batch_size=8, patience=0), tmp_path / "run",
          device="cpu", **QUIET)
    r = cli("train", "--store", reference, "--epochs", 1, "--out", victim)
    assert r.exit_code != 0 and victim.read_bytes() == before
    r = cli("evaluate", "--checkpoint", tmp_path / "run" / "best.pt", "--out", victim)
    assert r.exit_code != 0 and victim.read_bytes() == before
    # explore: the report's audio/ folder must not be a folder of corpus audio
    corpus = tmp_path / "report"
    shutil.copytree(tiny, corpus / "audio")
    files = {p.name: p.read_bytes() for p in (corpus / "audio").glob("*.wav")}
    (corpus / "index.html").write_text('<meta name="generator" content="ser explore 0.1.0">')
    r = cli("explore", "--data", corpus / "audio", "--out", corpus)
    assert r.exit_code == 1 and "corpus's own audio" in r.output
    assert {p.name: p.read_bytes() for p in (corpus / "audio").glob("*.wav")} == files
    no_traceback(r)


# -- damaged and old stores ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("arr")
    store = make_array_store(root / "a.h5", per_class=20, seed=0)
    train(store, TrainConfig(model="cnn1d", epochs=1, batch_size=16, patience=0), root / "run", device="cpu", **QUIET)
    return store, root / "run" / "best.pt"


def _damaged_copy(store: Path, tmp_path: Path, how: str) -> Path:
    bad = tmp_path / f"{how}.h5"
    shutil.copy(store, bad)
    data = bytearray(bad.read_bytes())
    if how == "truncated":
        bad.write_bytes(bytes(data[: len(data) // 2]))
        return bad
    if how == "middle":
        offset = len(data) // 2
    else:  # inside the chunk of a dataset: "descriptors" or "meta"
        with h5py.File(bad, "r") as f:
            info = (f["descriptors"] if how == "descriptors" else f["meta/table"]).id.get_chunk_info(0)
        offset = info.byte_offset + 64  # in the first rows' values (a chunk may end in unused padding)
    for i in range(offset, offset + 8):
        # not 0xFF: Fletcher-32 cannot tell a 0x0000 word from 0xFFFF (a known blind spot)
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))
    return bad


def _commands(bad: Path, ckpt: Path, tmp_path: Path) -> dict[str, Result]:
    return {
        "info": cli("info", bad),
        "train": cli("train", "--store", bad, "--model", "cnn1d", "--epochs", 1, "--batch-size", 16,
                     "--out", tmp_path / "t", "--device", "cpu"),
        "evaluate": cli("evaluate", "--checkpoint", ckpt, "--store", bad, "--out", tmp_path / "e", "--device", "cpu"),
    }


@pytest.mark.parametrize("how", ["truncated", "descriptors", "meta"])
def test_a_damaged_store_is_reported_by_info_train_and_evaluate(trained: tuple[Path, Path], tmp_path: Path,
                                                               how: str) -> None:
    store, ckpt = trained
    bad = _damaged_copy(store, tmp_path, how)
    for name, result in _commands(bad, ckpt, tmp_path).items():
        no_traceback(result)
        assert result.exit_code == 1, (name, result.output)
        assert "corrupt" in result.output, (name, result.output)


def test_bytes_flipped_in_the_middle_are_caught_or_harmless(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """The middle of a store is array data: ``ser info`` (which checks every block) reports it;
    train and evaluate report it if they read that block, and otherwise run on intact data."""
    store, ckpt = trained
    bad = _damaged_copy(store, tmp_path, "middle")
    results = _commands(bad, ckpt, tmp_path)
    assert results["info"].exit_code == 1 and "corrupt" in results["info"].output
    for name, result in results.items():
        no_traceback(result)
        assert result.exit_code == 0 or "corrupt" in result.output, (name, result.output)


def test_an_old_schema_store_is_refused_with_a_message(tiny: Path, tmp_path: Path) -> None:
    old = tmp_path / "v1.h5"
    with h5py.File(old, "w") as f:
        f.attrs["ser_schema_version"] = 1
    before = old.read_bytes()
    for result in (cli("info", old), cli("train", "--store", old, "--epochs", 1, "--out", tmp_path / "r")):
        assert result.exit_code == 1 and "schema version 1" in result.output and "older" in result.output
        no_traceback(result)
    r = cli("featurize", "--data", tiny, "--out", old, "--workers", 1, "--no-progress", "--augment", "none")
    assert r.exit_code == 1 and "--overwrite" in r.output and old.read_bytes() == before
    r = cli("featurize", "--data", tiny, "--out", old, "--workers", 1, "--no-progress", "--augment", "none",
            "--n-mels", 16, "--max-seconds", 1.0, "--overwrite")
    assert r.exit_code == 0, r.output
    assert read_attrs(old)["schema_version"] == SCHEMA_VERSION


# -- train killed --------------------------------------------------------------------------------

_TRAIN_ARGS = ["--model", "cnn2d", "--filters", "4,8", "--kernels", "3x3,3x3", "--epochs", 10, "--batch-size", 8,
               "--patience", 0, "--seed", 5, "--dropout", 0.3, "--mixup", 0.2, "--spec-augment", "--device", "cpu"]


def _train_command(store: Path) -> list[str]:
    # every run is a fresh process, as a user's would be: nothing another test left in this
    # process (thread limits, allocator settings) can make the runs differ
    return [sys.executable, "-c", "from ser.cli import main; main()", "train", "--store", str(store),
            *map(str, _TRAIN_ARGS)]


def _train_to_end(command: list[str], out: Path, *extra: str) -> None:
    done = subprocess.run([*command, "--out", str(out), *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def whole_training(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run the stopped-and-resumed ones must equal."""
    out = tmp_path_factory.mktemp("train") / "whole"
    _train_to_end(_train_command(trained[0]), out)
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_train_stopped_mid_run_resumes_to_the_uninterrupted_result(trained: tuple[Path, Path], whole_training: Path,
                                                                   tmp_path: Path, sig: int) -> None:
    command = _train_command(trained[0])
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([*command, "--out", str(stopped)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.lstrip().startswith("epoch   2/"):
            proc.send_signal(sig)
            break
    rest = proc.stderr.read()
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("train finished before the signal arrived")
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # Ctrl-C: a clean stop that says how to go on, the prefetching thread waited for
        assert proc.returncode == 130, rest
        assert "interrupted" in rest and "--resume" in rest and "Traceback" not in rest, rest
    last = torch.load(stopped / "last.pt", weights_only=True)  # whole: saved atomically
    assert 2 <= last["epoch"] < 10 and last["resume"]["epoch"] == last["epoch"]
    _train_to_end(command, stopped, "--resume")
    hist = [pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (whole_training, stopped)]
    pd.testing.assert_frame_equal(*hist)
    for name in ("best.pt", "last.pt"):
        a, b = (torch.load(d / name, weights_only=True) for d in (whole_training, stopped))
        assert a["epoch"] == b["epoch"]
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], b["state_dict"][key]), (name, key)


# -- damaged checkpoints, a full disk ------------------------------------------------------------

def _flip_tensor_bytes(path: Path, out: Path) -> None:
    """Flip bytes inside a tensor's data in a torch zip: what a bad disk or a bad copy does."""
    import struct
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        entry = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[entry.header_offset + 26:entry.header_offset + 30])
    start = entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2
    for i in range(start, start + 4):
        data[i] ^= 0x5A
    out.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_with_a_message(trained: tuple[Path, Path], tmp_path: Path) -> None:
    store, ckpt = trained
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    flipped = tmp_path / "flipped.pt"
    _flip_tensor_bytes(ckpt, flipped)  # torch's zip does not notice: the checkpoint's SHA-256 does
    for bad, reason in ((cut, "not a readable checkpoint"), (flipped, "damaged")):
        result = cli("evaluate", "--checkpoint", bad, "--store", store, "--out", tmp_path / "e")
        no_traceback(result)
        assert result.exit_code == 1 and reason in result.output, result.output


@pytest.mark.parametrize("where", ["worker", "commit"])
def test_a_full_disk_stops_featurize_with_a_message_and_the_rerun_finishes(
        tiny: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The disk fills up at the third part: while its worker writes it (``worker``), or at the
    parent's rename that commits it (``commit``). Either way featurize stops with a StoreError
    naming the cause, the parts committed before stay, no tmp file is left, and the rerun
    finishes the clean run's store."""
    import ser.store.parts as parts_mod

    out = tmp_path / "feats.h5"
    calls = []
    if where == "worker":
        real_fsync = parts_mod.fsync_path

        def full_on_the_third(path: Path, **kw: Any) -> None:
            if path.name.startswith("tmp-"):  # a worker's part, written, then flushed to a full disk
                calls.append(path.name)
                if len(calls) == 3:
                    assert path.stat().st_size > 0
                    raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(path, **kw)

        monkeypatch.setattr(parts_mod, "fsync_path", full_on_the_third)
    else:
        real_replace = os.replace

        def full_at_the_third_commit(src: Any, dst: Any) -> None:
            if Path(dst).name.startswith("part-"):
                calls.append(Path(dst).name)
                if len(calls) == 3:
                    raise OSError(errno.ENOSPC, "No space left on device")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", full_at_the_third_commit)
    with pytest.raises(StoreError, match="No space left on device.*rows committed before it are safe"):
        featurize(tiny_config(tiny, out), progress=False, **QUIET)
    monkeypatch.undo()
    assert len(calls) == 3
    assert not list(work_dir(out).glob("*.tmp")) and not list(work_dir(out).glob("tmp-*"))
    info = read_attrs(out)
    assert not info["complete"] and len(info["parts"]) == 2  # what was committed is kept
    featurize(tiny_config(tiny, out), progress=False, **QUIET)
    same_store(reference, out)


def test_a_tmp_part_of_a_task_killed_before_its_commit_is_removed_and_redone(
        tiny: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped after a task wrote its part but before the parent committed it leaves a
    ``tmp-*`` file; the rerun removes it and featurizes that task's clips again."""
    import ser.featurize.job as job_mod

    out = tmp_path / "feats.h5"
    real = job_mod.run_task
    done = []

    def killed_after_the_third(task: Any, spec: Any, cfg: Any) -> Any:
        receipt = real(task, spec, cfg)
        done.append(receipt)
        if len(done) == 3:
            raise KeyboardInterrupt  # the part is written, the receipt never reaches the parent
        return receipt

    monkeypatch.setattr(job_mod, "run_task", killed_after_the_third)
    with pytest.raises(KeyboardInterrupt):
        featurize(tiny_config(tiny, out), progress=False, **QUIET)
    monkeypatch.undo()
    left = done[-1].path
    assert left is not None and left.is_file() and left.name.startswith("tmp-")
    info = read_attrs(out)
    assert not info["complete"] and len(info["parts"]) == 2
    summary = featurize(tiny_config(tiny, out), progress=False, **QUIET)
    assert not left.exists()
    assert summary.n_done_before == sum(r.n_clips for r in done[:2])
    same_store(reference, out)
