"""``predict_paths``: files, folders, manifests and stdin in; a predictions table out, one row a
file, a broken file an error row; per-speaker normalisation by speaker groups; the worker pool."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser.errors import SerError
from ser.evaluation.predict import (_extract_chunk, check_out, describe, extraction_config, json_record, labels_of,
                                    parse_speaker_from, predict_files, predict_paths, predictions_columns,
                                    read_sources, write_predictions)
from ser.features.config import FeatureConfig
from ser.training.loop import TrainConfig, train
from ser.training.speakers import MIN_CLIPS

QUIET = dict(log=lambda m: None)
SPEAKER_RE = r"regex:^(?P<speaker>\d+)_"


@pytest.fixture(scope="module")
def models(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A descriptor model, the same with per-speaker normalisation, and a tiny mel CNN."""
    root = tmp_path_factory.mktemp("predict-models")
    train(small_store, TrainConfig(model="logreg"), root / "lr", device="cpu", **QUIET)
    train(small_store, TrainConfig(model="logreg", speaker_norm=True), root / "lr-spk", device="cpu", **QUIET)
    train(small_store, TrainConfig(model="cnn2d", epochs=1, batch_size=16, patience=0,
                                   hparams={"filters": "4,8", "kernels": "3x3,3x3"}), root / "cnn", device="cpu",
          **QUIET)
    return {name: root / name / "best.pt" for name in ("lr", "lr-spk", "cnn")}


def _wavs(corpus: Path, speaker: str | None = None) -> list[Path]:
    return sorted(p for p in corpus.glob("*.wav") if speaker is None or p.name.startswith(f"{speaker}_"))


def _expected(checkpoint: Path, files: list[Path]) -> dict[str, dict[str, float]]:
    return {r["file"]: r["probabilities"] for r in predict_files(checkpoint, files) if "error" not in r}


def _assert_rows_match(frame: pd.DataFrame, expected: dict[str, dict[str, float]]) -> None:
    labels = labels_of(frame)
    got = frame.set_index("path")
    for path, probs in expected.items():
        row = got.loc[path]
        assert row["error"] == "", row["error"]
        np.testing.assert_allclose([row[f"p_{lab}"] for lab in labels], [probs[lab] for lab in labels],
                                   rtol=1e-5, atol=1e-6)
        assert row["emotion"] == max(probs, key=probs.get)


def test_a_folder_with_a_broken_file_predicts_the_others_as_predict_files(cremad_corpus: Path, models,
                                                                          tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "deeper").mkdir(parents=True)
    good = _wavs(cremad_corpus)[:6]
    for i, f in enumerate(good):
        shutil.copy(f, folder / ("deeper" if i % 2 else "") / f.name)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x01garbage, not a wave file at all" * 8)
    (folder / "notes.txt").write_text("not audio")
    frame = predict_paths(models["lr"], [folder])
    assert len(frame) == 7 and list(frame.columns) == ["path"] + predictions_columns(labels_of(frame))
    broken = frame[frame["path"].str.endswith("broken.wav")].iloc[0]
    assert "cannot decode" in broken["error"] and broken["emotion"] == "" and np.isnan(broken["p_ANG"])
    copies = sorted(Path(p) for p in frame["path"] if not p.endswith("broken.wav"))
    assert {p.name for p in copies} == {f.name for f in good}
    _assert_rows_match(frame, _expected(models["lr"], copies))


def test_the_worker_pool_gives_the_same_table_as_one_process(cremad_corpus: Path, models) -> None:
    files = _wavs(cremad_corpus)[:10] + [cremad_corpus / "missing.wav"]
    one = predict_paths(models["lr"], files)
    two = predict_paths(models["lr"], files, workers=2, min_files_per_worker=1)
    pd.testing.assert_frame_equal(one, two)
    assert two["error"].iloc[-1].endswith("file not found") and (two["error"].iloc[:-1] == "").all()


def test_folders_are_read_recursively_with_the_audio_extensions_featurize_scans(tmp_path: Path) -> None:
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    for rel in ("top.wav", "a/x.FLAC", "a/b/y.mp3", "a/b/c/z.ogg", "a/b/readme.md", "a/b/c/data.npy"):
        (tmp_path / rel).write_bytes(b"x")
    table = read_sources([tmp_path, tmp_path / "single.wav"])
    assert table["path"].tolist() == [str(tmp_path / p) for p in ("a/b/c/z.ogg", "a/b/y.mp3", "a/x.FLAC", "top.wav")] \
        + [str(tmp_path / "single.wav")]  # a named file is kept, missing or not: its row says why


def test_a_manifest_resolves_paths_against_its_folder_and_keeps_its_columns(cremad_corpus: Path, models,
                                                                             tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    files = _wavs(cremad_corpus)[:3]
    for f in files:
        shutil.copy(f, data / "clips" / f.name)
    rows = [{"path": f"clips/{f.name}", "emotion": "ANG", "note": f"n{i}"} for i, f in enumerate(files)]
    rows.append({"path": str(files[0]), "emotion": "SAD", "note": "absolute"})
    rows.append({"path": "clips/gone.wav", "emotion": "HAP", "note": "missing"})
    pd.DataFrame(rows).to_csv(data / "list.csv", index=False)
    monkeypatch.chdir(tmp_path)  # relative paths are the CSV folder's, not the working folder's
    frame = predict_paths(models["lr"], [Path("data") / "list.csv"])
    labels = labels_of(frame)
    assert list(frame.columns) == ["path", "manifest_emotion", "note"] + predictions_columns(labels)
    assert frame["note"].tolist() == ["n0", "n1", "n2", "absolute", "missing"]
    assert frame["manifest_emotion"].tolist() == ["ANG", "ANG", "ANG", "SAD", "HAP"]
    assert frame["path"].iloc[0] == str(Path("data") / "clips" / files[0].name)
    assert (frame["error"].iloc[:4] == "").all() and "file not found" in frame["error"].iloc[4]
    _assert_rows_match(frame.iloc[:3], _expected(models["lr"], [Path(p) for p in frame["path"].iloc[:3]]))
    p = frame.loc[:, [f"p_{lab}" for lab in labels]].to_numpy()
    np.testing.assert_allclose(p[0], p[3], rtol=1e-6)  # the same clip through its absolute path
    with pytest.raises(SerError, match="no 'path' column"):
        (tmp_path / "bad.csv").write_text("file,emotion\na.wav,ANG\n")
        read_sources([tmp_path / "bad.csv"])


def test_dash_reads_the_sources_from_stdin(cremad_corpus: Path, models, tmp_path: Path, monkeypatch) -> None:
    files = _wavs(cremad_corpus)[:4]
    sub = tmp_path / "sub"
    sub.mkdir()
    shutil.copy(files[3], sub / files[3].name)
    listing = "\n".join(str(f) for f in files[:3]) + f"\n\n  {sub}  \n{tmp_path / 'nothing.wav'}\n"
    frame = predict_paths(models["lr"], ["-", files[0]], stdin=io.StringIO(listing))
    assert frame["path"].tolist() == [str(f) for f in files[:3]] + [str(sub / files[3].name),
                                                                     str(tmp_path / "nothing.wav"), str(files[0])]
    assert (frame["error"] != "").tolist() == [False, False, False, False, True, False]
    monkeypatch.setattr("sys.stdin", io.StringIO(str(files[1]) + "\n"))  # the default stream is sys.stdin
    assert read_sources(["-"])["path"].tolist() == [str(files[1])]
    _assert_rows_match(frame.iloc[:4], _expected(models["lr"], files[:3] + [sub / files[3].name]))


def test_nothing_predictable_gives_error_rows_and_nothing_at_all_is_refused(models, tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"\x00" * 100)
    (tmp_path / "empty.wav").write_bytes(b"")
    frame = predict_paths(models["lr"], [tmp_path, tmp_path / "nope.flac"])
    assert len(frame) == 3 and (frame["error"] != "").all() and (frame["emotion"] == "").all()
    assert "empty file" in frame.set_index("path").loc[str(tmp_path / "empty.wav"), "error"]
    (tmp_path / "none").mkdir()
    with pytest.raises(SerError, match="no audio file to predict"):
        predict_paths(models["lr"], [tmp_path / "none"])
    with pytest.raises(SerError, match="no audio file to predict"):
        predict_paths(models["lr"], ["-"], stdin=io.StringIO("\n\n"))


def test_out_csv_columns_and_what_out_may_not_overwrite(cremad_corpus: Path, models, tmp_path: Path) -> None:
    files = _wavs(cremad_corpus)[:2] + [tmp_path / "missing.wav"]
    frame = predict_paths(models["lr"], files)
    out = write_predictions(frame, tmp_path / "predictions.csv")
    back = pd.read_csv(out, dtype={"error": str}, keep_default_na=False)
    labels = labels_of(frame)
    assert list(back.columns) == ["path", "emotion"] + [f"p_{lab}" for lab in labels] + ["error"]
    assert back["error"].tolist()[:2] == ["", ""] and back["error"].iloc[2].endswith("file not found")
    assert back.loc[:1, [f"p_{lab}" for lab in labels]].astype(float).sum(axis=1).round(4).tolist() == [1.0, 1.0]
    assert back["p_ANG"].iloc[2] == "" and not (tmp_path / "predictions.csv.tmp").exists()
    rows = frame.to_dict("records")
    assert json_record(rows[0], labels)["probabilities"][rows[0]["emotion"]] == pytest.approx(rows[0][f"p_{rows[0]['emotion']}"])
    assert set(json_record(rows[2], labels)) == {"file", "error"}
    assert describe(rows[2], labels) == f"{files[2]}: error: file not found"
    assert describe(rows[0], labels).startswith(f"{files[0]}: {rows[0]['emotion']}   (")
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path\n{files[0]}\n")
    with pytest.raises(SerError, match="manifest being read"):
        check_out(manifest, [files[1], manifest])
    with pytest.raises(SerError, match="existing audio file"):
        check_out(files[0], [files[1]])
    check_out(tmp_path / "fine.csv", [manifest])


def test_speaker_groups_equal_predicting_each_speaker_alone(cremad_corpus: Path, models, tmp_path: Path) -> None:
    files = _wavs(cremad_corpus)
    folder = tmp_path / "in"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    for f in _wavs(cremad_corpus, "1001")[: MIN_CLIPS - 1]:  # a speaker with too few clips
        shutil.copy(f, folder / f.name.replace("1001_", "2001_"))
    shutil.copy(files[0], folder / "unnamed.wav")  # no speaker in its name
    frame = predict_paths(models["lr-spk"], [folder], speaker_from=SPEAKER_RE)
    assert list(frame.columns) == ["path", "speaker"] + predictions_columns(labels_of(frame))
    by_path = frame.set_index("path")
    for speaker in ("1001", "1002", "1003", "1004"):
        mine = sorted(folder.glob(f"{speaker}_*.wav"))
        assert (by_path.loc[[str(p) for p in mine], "speaker"] == speaker).all()
        _assert_rows_match(frame, _expected(models["lr-spk"], mine))
    small = frame[frame["speaker"] == "2001"]
    assert len(small) == MIN_CLIPS - 1
    assert small["error"].str.contains(f"'2001' has {MIN_CLIPS - 1} readable clip").all()
    assert small["error"].str.contains(f"at least {MIN_CLIPS}").all()
    assert "does not match --speaker-from" in by_path.loc[str(folder / "unnamed.wav"), "error"]
    # one group of everything (predict_files' way) is a different prediction: grouping did something
    together = predict_paths(models["lr-spk"], [folder / f.name for f in files])
    _assert_rows_match(together, _expected(models["lr-spk"], [folder / f.name for f in files]))
    cols = [f"p_{lab}" for lab in labels_of(frame)]
    assert not np.allclose(together.set_index("path").loc[[str(folder / f.name) for f in files], cols].to_numpy(),
                           by_path.loc[[str(folder / f.name) for f in files], cols].to_numpy(), atol=1e-3)


def test_speaker_from_a_manifest_column_groups_as_the_regex_does(cremad_corpus: Path, models, tmp_path: Path) -> None:
    files = _wavs(cremad_corpus)
    manifest = pd.DataFrame({"path": [str(f) for f in files], "talker": [f.name[:4] for f in files]})
    manifest.loc[len(manifest)] = {"path": str(files[0]), "talker": ""}
    manifest.to_csv(tmp_path / "m.csv", index=False)
    by_column = predict_paths(models["lr-spk"], [tmp_path / "m.csv"], speaker_from="column:talker")
    by_regex = predict_paths(models["lr-spk"], files, speaker_from=SPEAKER_RE)
    cols = [f"p_{lab}" for lab in labels_of(by_regex)]
    np.testing.assert_allclose(by_column[cols].to_numpy()[:-1], by_regex[cols].to_numpy(), rtol=1e-6)
    assert "no 'talker' value" in by_column["error"].iloc[-1]
    with pytest.raises(SerError, match="no manifest given has that column"):
        predict_paths(models["lr-spk"], files, speaker_from="column:talker")


def test_speaker_from_is_checked(models, cremad_corpus: Path) -> None:
    for bad, why in (("regex:^\\d+_", "needs a group"), ("regex:(", "not a regular expression"),
                     ("speaker:x", "regex:PATTERN"), ("column:", "regex:PATTERN")):
        with pytest.raises(SerError, match=why):
            parse_speaker_from(bad)
    assert parse_speaker_from("column:spk").value == "spk"
    with pytest.raises(SerError, match="per-speaker normalisation"):
        predict_paths(models["lr"], _wavs(cremad_corpus)[:2], speaker_from=SPEAKER_RE)


def test_too_few_files_for_speaker_normalisation_are_error_rows(cremad_corpus: Path, models) -> None:
    files = _wavs(cremad_corpus)[: MIN_CLIPS - 1]
    frame = predict_paths(models["lr-spk"], files)
    assert frame["error"].str.contains(f"at least {MIN_CLIPS} readable clips").all()
    assert (frame["emotion"] == "").all()


def test_a_fusion_feeds_each_member_its_family_as_predict_files_does(cremad_corpus: Path, models,
                                                                     tmp_path: Path) -> None:
    from ser.training.fusion import save_fusion

    save_fusion(tmp_path / "fused.pt", [models["lr"], models["cnn"]], [0.6, 0.4])
    files = _wavs(cremad_corpus)[:5]
    frame = predict_paths(tmp_path / "fused.pt", files + [tmp_path / "missing.wav"])
    _assert_rows_match(frame, _expected(tmp_path / "fused.pt", files))
    alone = predict_paths(models["lr"], files)
    cols = [f"p_{lab}" for lab in labels_of(frame)]
    assert not np.allclose(frame[cols].to_numpy()[:5], alone[cols].to_numpy(), atol=1e-4)
    assert frame["error"].iloc[-1] != ""


def test_descriptor_models_skip_the_mel_spectrogram_with_the_same_descriptors(cremad_corpus: Path) -> None:
    """No model reads mel: one mel band is extracted, and the descriptors are the same bit for bit."""
    full = FeatureConfig(n_mels=32, max_seconds=1.5, stats=("mean", "std"), extras=("prosody",))
    assert extraction_config(full, ("descriptors", "mel")) == full
    lean = extraction_config(full, ("descriptors",))
    assert lean.n_mels == 1 and lean.max_seconds == full.max_seconds and lean.extras == full.extras
    paths = [str(p) for p in _wavs(cremad_corpus)[:6]]
    errors, a = _extract_chunk(paths, full, ("descriptors", "mel"))
    _, b = _extract_chunk(paths, lean, ("descriptors",))
    assert errors == [""] * 6 and a["mel"].shape[:2] == (6, 32)
    np.testing.assert_array_equal(a["descriptors"], b["descriptors"])


def test_cli_predict_folders_manifests_stdin_out_and_exit_status(cremad_corpus: Path, models,
                                                                 tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from ser.cli import main

    ckpt = str(models["lr"])
    files = _wavs(cremad_corpus)[:3]
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(files[0], folder / "sub" / files[0].name)
    (folder / "broken.wav").write_bytes(b"garbage" * 50)
    runner = CliRunner()
    r = runner.invoke(main, ["predict", "--checkpoint", ckpt, "--no-progress", str(folder), str(files[1])])
    assert r.exit_code == 0, r.output
    assert f"{folder / 'broken.wav'}: error: cannot decode" in r.stderr
    assert f"{folder / 'sub' / files[0].name}: " in r.stdout and f"{files[1]}: " in r.stdout
    # - reads the list from stdin; --json keeps its {"file", "emotion", "probabilities"} shape
    r = runner.invoke(main, ["predict", "--checkpoint", ckpt, "--json", "--no-progress", "-"],
                      input="\n".join(str(f) for f in files) + f"\n{tmp_path / 'gone.wav'}\n")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["file"] for d in lines] == [str(f) for f in files] + [str(tmp_path / "gone.wav")]
    assert all(sum(d["probabilities"].values()) == pytest.approx(1, abs=1e-4) for d in lines[:3])
    assert lines[3]["error"].endswith("file not found")
    # a manifest and --out: the CSV's columns, the manifest's kept
    (tmp_path / "clips").mkdir()
    for f in files:
        shutil.copy(f, tmp_path / "clips" / f.name)
    pd.DataFrame({"path": [f"clips/{f.name}" for f in files], "take": ["a", "b", "c"]}).to_csv(tmp_path / "m.csv",
                                                                                              index=False)
    out = tmp_path / "predictions.csv"
    r = runner.invoke(main, ["predict", "--checkpoint", ckpt, "--out", str(out), "--workers", "2",
                             str(tmp_path / "m.csv"), str(folder / "broken.wav")])
    assert r.exit_code == 0, r.output
    assert "3 of 4 file(s) predicted" in r.stderr and not r.stdout
    table = pd.read_csv(out, keep_default_na=False)
    labels = labels_of(table)
    assert list(table.columns) == ["path", "take", "emotion"] + [f"p_{lab}" for lab in labels] + ["error"]
    assert table["take"].tolist() == ["a", "b", "c", ""] and (table["error"].iloc[:3] == "").all()
    # nothing predictable: every row still written, exit status 1
    r = runner.invoke(main, ["predict", "--checkpoint", ckpt, "--out", str(out), "--no-progress",
                             str(folder / "broken.wav"), str(tmp_path / "gone.wav")])
    assert r.exit_code == 1 and "no file could be predicted" in r.output
    assert len(pd.read_csv(out)) == 2
    r = runner.invoke(main, ["predict", "--checkpoint", ckpt, "--no-progress", "-"], input="\n")
    assert r.exit_code == 1 and "no audio file to predict" in r.output
    # --speaker-from: per speaker groups; refused for a checkpoint without per-speaker normalisation
    r = runner.invoke(main, ["predict", "--checkpoint", str(models["lr-spk"]), "--json", "--no-progress",
                             "--speaker-from", r"regex:^(\d+)_", str(cremad_corpus)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert {d["speaker"] for d in lines} == {"1001", "1002", "1003", "1004"} and all("emotion" in d for d in lines)
    r = runner.invoke(main, ["predict", "--checkpoint", ckpt, "--speaker-from", r"regex:^(\d+)_", str(files[0])])
    assert r.exit_code == 1 and "per-speaker normalisation" in r.output
    r = runner.invoke(main, ["predict", "--checkpoint", ckpt, "--out", str(files[0]), str(files[1])])
    assert r.exit_code == 1 and "existing audio file" in r.output
