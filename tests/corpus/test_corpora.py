"""Tests for ser.corpus.scan: folder and manifest scans, on tiny files made in tmp_path."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from corpus_files import make_files
from ser.corpus.adapters import ADAPTERS
from ser.corpus.scan import CLIP_COLUMNS, DATASETS, ScanResult, detect_dataset, scan
from ser.errors import CorpusError, SerError

EMODB = Path(__file__).resolve().parents[3] / "shared" / "data" / "emodb"
if not EMODB.is_dir():
    EMODB = Path("/work/shared/data/emodb")


def write_wav(path: Path, *, seconds: float = 0.1, sr: int = 8000, seed: int = 0) -> Path:
    """A short seeded-noise WAV (scan never decodes it, but the file is real)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))
    sf.write(path, y.astype(np.float32), sr)
    return path


def row(result: ScanResult, clip_id: str) -> dict:
    rows = result.clips[result.clips["clip_id"] == clip_id]
    assert len(rows) == 1, f"{clip_id} appears {len(rows)} times"
    return rows.iloc[0].to_dict()


# --------------------------------------------------------------------------- the table


def test_clip_table_shape_and_dtypes(tmp_path: Path) -> None:
    write_wav(tmp_path / "1001_DFA_ANG_XX.wav")
    write_wav(tmp_path / "1002_IEO_HAP_HI.wav", seed=1)
    result = scan(tmp_path)
    clips = result.clips
    assert list(clips.columns) == CLIP_COLUMNS
    assert list(clips.index) == [0, 1]
    assert list(clips["path"]) == sorted(clips["path"])
    for column in CLIP_COLUMNS[:-1]:
        assert clips[column].dtype == object, column
    assert clips["age"].dtype == np.float64
    assert list(result.skipped.columns) == ["path", "reason"]
    assert result.skipped.empty
    assert result.base == tmp_path.resolve()


def test_clip_table_writes_to_pytables(tmp_path: Path) -> None:
    pytest.importorskip("tables")
    make_files(tmp_path / "AudioWAV", ["1001_DFA_ANG_XX.wav"])
    clips = scan(tmp_path / "AudioWAV").clips
    clips.to_hdf(tmp_path / "meta.h5", key="meta", format="table")
    back = pd.read_hdf(tmp_path / "meta.h5", "meta")
    assert back["clip_id"].tolist() == ["1001_DFA_ANG_XX"]


def test_registry_and_choices() -> None:
    assert set(ADAPTERS) == {"cremad", "emodb", "ravdess", "tess", "savee", "folders"}
    assert DATASETS[0] == "auto" and DATASETS[-1] == "manifest"


# --------------------------------------------------------------------------- adapters


def test_cremad_names(tmp_path: Path) -> None:
    make_files(tmp_path, ["1001_DFA_ANG_XX.wav", "1091_TSI_SAD_LO.wav", "1002_IEO_HAP_HI.WAV"])
    result = scan(tmp_path, dataset="cremad")
    first = row(result, "1001_DFA_ANG_XX")
    assert first == {
        "clip_id": "1001_DFA_ANG_XX",
        "path": "1001_DFA_ANG_XX.wav",
        "dataset": "cremad",
        "speaker": "1001",
        "emotion": "ANG",
        "sentence": "DFA",
        "intensity": "XX",
        "sex": "",
        "age": first["age"],
    }
    assert math.isnan(first["age"])
    assert row(result, "1091_TSI_SAD_LO")["intensity"] == "LO"
    assert row(result, "1002_IEO_HAP_HI")["path"] == "1002_IEO_HAP_HI.WAV"  # extension case


def test_cremad_demographics_one_level_up(tmp_path: Path) -> None:
    (tmp_path / "VideoDemographics.csv").write_text(
        '"ActorID","Age","Sex","Race","Ethnicity"\n'
        '1001,51,"Male","Caucasian","Not Hispanic"\n'
        '1002,21,"Female","Caucasian","Not Hispanic"\n'
    )
    make_files(tmp_path / "AudioWAV", ["1001_DFA_ANG_XX.wav", "1002_DFA_SAD_XX.wav",
                                       "1099_DFA_NEU_XX.wav"])
    result = scan(tmp_path / "AudioWAV")
    assert (row(result, "1001_DFA_ANG_XX")["sex"], row(result, "1001_DFA_ANG_XX")["age"]) == (
        "Male", 51.0)
    assert (row(result, "1002_DFA_SAD_XX")["sex"], row(result, "1002_DFA_SAD_XX")["age"]) == (
        "Female", 21.0)
    unknown = row(result, "1099_DFA_NEU_XX")  # an actor the table does not list
    assert unknown["sex"] == "" and math.isnan(unknown["age"])


def test_cremad_demographics_too_far_up_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "VideoDemographics.csv").write_text('"ActorID","Age","Sex"\n1001,51,"Male"\n')
    make_files(tmp_path / "a" / "b" / "c", ["1001_DFA_ANG_XX.wav"])
    assert scan(tmp_path / "a" / "b" / "c").clips.loc[0, "sex"] == ""


def test_emodb_names(tmp_path: Path) -> None:
    make_files(tmp_path, ["03a01Fa.wav", "16b10Lb.wav", "08a02Wa.wav", "99a01Nc.wav"])
    result = scan(tmp_path, dataset="emodb")
    happy = row(result, "03a01Fa")
    assert (happy["speaker"], happy["sentence"], happy["emotion"], happy["intensity"]) == (
        "03", "a01", "HAP", "")
    assert (happy["sex"], happy["age"]) == ("Male", 31.0)
    assert (row(result, "16b10Lb")["emotion"], row(result, "16b10Lb")["sex"]) == ("BOR", "Female")
    assert row(result, "08a02Wa")["emotion"] == "ANG"
    assert row(result, "99a01Nc")["sex"] == ""  # speaker outside the known table: kept


def test_ravdess_names(tmp_path: Path) -> None:
    make_files(tmp_path / "Actor_12", ["03-01-05-02-02-01-12.wav"])
    make_files(tmp_path / "Actor_01", ["03-01-02-01-01-01-01.wav", "03-01-08-01-01-02-01.wav"])
    result = scan(tmp_path, dataset="ravdess")
    angry = row(result, "03-01-05-02-02-01-12")
    assert angry["path"] == "Actor_12/03-01-05-02-02-01-12.wav"
    assert (angry["speaker"], angry["emotion"], angry["intensity"], angry["sentence"],
            angry["sex"]) == ("12", "ANG", "strong", "02", "Female")
    calm = row(result, "03-01-02-01-01-01-01")
    assert (calm["emotion"], calm["intensity"], calm["sex"]) == ("CAL", "normal", "Male")
    assert row(result, "03-01-08-01-01-02-01")["emotion"] == "SUR"


def test_tess_names(tmp_path: Path) -> None:
    make_files(tmp_path, ["OAF_angry/OAF_back_angry.wav", "YAF_ps/YAF_dog_ps.wav",
                          "YAF_ps/YAF_dime_pleasant_surprised.wav", "OAF_sad/OAF_bath_sad.wav"])
    result = scan(tmp_path, dataset="tess")
    angry = row(result, "OAF_back_angry")
    assert (angry["speaker"], angry["sentence"], angry["emotion"], angry["sex"], angry["age"]) == (
        "OAF", "back", "ANG", "Female", 64.0)
    dog = row(result, "YAF_dog_ps")
    assert (dog["speaker"], dog["sentence"], dog["emotion"], dog["age"]) == (
        "YAF", "dog", "SUR", 26.0)
    assert row(result, "YAF_dime_pleasant_surprised")["emotion"] == "SUR"


def test_savee_names_folder_and_prefix(tmp_path: Path) -> None:
    make_files(tmp_path, ["DC/a01.wav", "DC/sa03.wav", "JE/su15.wav", "KL_h02.wav", "JK_n01.wav",
                          "JK_d07.wav", "JK_f01.wav"])
    result = scan(tmp_path, dataset="savee")
    assert len(result.clips) == 7 and result.skipped.empty
    sad = row(result, "sa03")
    assert (sad["speaker"], sad["emotion"], sad["sentence"], sad["sex"]) == (
        "DC", "SAD", "sa03", "Male")
    assert (row(result, "su15")["speaker"], row(result, "su15")["emotion"]) == ("JE", "SUR")
    assert (row(result, "a01")["emotion"]) == "ANG"
    assert (row(result, "KL_h02")["speaker"], row(result, "KL_h02")["emotion"]) == ("KL", "HAP")
    assert dict(zip(result.clips["clip_id"], result.clips["emotion"]))["JK_d07"] == "DIS"


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["1001_DFA_ANG_XX.wav", "1001_DFA_DIS_XX.wav", "1002_IEO_HAP_HI.wav"], "cremad"),
        (["03a01Fa.wav", "03a01Nc.wav", "16b10Lb.wav"], "emodb"),
        (["Actor_01/03-01-01-01-01-01-01.wav", "Actor_02/03-01-05-02-02-01-02.wav"], "ravdess"),
        (["OAF_back_angry.wav", "YAF_dog_ps.wav", "YAF_bath_neutral.wav"], "tess"),
        (["DC/a01.wav", "DC/sa01.wav", "JE/su02.wav"], "savee"),
        (["DC_a01.wav", "JK_sa01.wav", "KL_n02.wav"], "savee"),
    ],
)
def test_detect_dataset(tmp_path: Path, names: list[str], expected: str) -> None:
    make_files(tmp_path, names + ["notes.txt"])
    assert detect_dataset(tmp_path) == expected
    result = scan(tmp_path)
    assert result.clips["dataset"].unique().tolist() == [expected]
    assert result.dataset == expected  # the layout read, without a second walk of the folder


def test_detect_needs_a_majority(tmp_path: Path) -> None:
    make_files(tmp_path, ["03a01Fa.wav", "hello.wav", "world.wav"])
    with pytest.raises(CorpusError, match="unknown corpus layout") as info:
        detect_dataset(tmp_path)
    assert "1 of 3" in str(info.value)


def test_no_audio_raises(tmp_path: Path) -> None:
    make_files(tmp_path, ["readme.txt", "sub/data.csv"])
    with pytest.raises(CorpusError) as info:
        scan(tmp_path)
    assert str(info.value) == f"no audio files (.wav/.flac/.mp3/.ogg) under {tmp_path}"


def test_unknown_layout_raises(tmp_path: Path) -> None:
    make_files(tmp_path, ["take_one.wav", "take_two.flac", "voice.mp3"])
    with pytest.raises(CorpusError) as info:
        scan(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "unknown corpus layout" in message and "'take_one.wav'" in message
    assert "--dataset manifest --manifest CSV" in message


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist") as info:
        scan(tmp_path / "AudioWAV")
    assert str(tmp_path / "AudioWAV") in str(info.value)
    with pytest.raises(CorpusError, match="does not exist"):
        detect_dataset(tmp_path / "nowhere")


def test_unknown_dataset_name(tmp_path: Path) -> None:
    make_files(tmp_path, ["03a01Fa.wav"])
    with pytest.raises(CorpusError, match="unknown dataset 'iemocap'"):
        scan(tmp_path, dataset="iemocap")


# --------------------------------------------------------------------------- skipping


def test_unknown_emotion_code_is_skipped(tmp_path: Path) -> None:
    make_files(tmp_path, ["1001_DFA_ANG_XX.wav", "1001_DFA_XYZ_XX.wav", "README.wav"])
    result = scan(tmp_path)
    assert result.clips["clip_id"].tolist() == ["1001_DFA_ANG_XX"]
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert reasons["1001_DFA_XYZ_XX.wav"] == "unknown emotion code 'XYZ' in name"
    assert "does not match the CREMA-D" in reasons["README.wav"]


def test_emodb_unknown_letter_is_skipped(tmp_path: Path) -> None:
    make_files(tmp_path, ["03a01Fa.wav", "03a01Xa.wav"])
    result = scan(tmp_path, dataset="emodb")
    assert result.skipped.to_dict("records") == [
        {"path": "03a01Xa.wav", "reason": "unknown emotion code 'X' in name"}]


def test_nothing_usable_raises_with_counts(tmp_path: Path) -> None:
    make_files(tmp_path, ["1001_DFA_XYZ_XX.wav", "1002_DFA_QQQ_XX.wav"])
    with pytest.raises(CorpusError, match="2 files found, 2 skipped"):
        scan(tmp_path, dataset="cremad")


def test_duplicate_stems_in_two_folders_are_both_kept(tmp_path: Path) -> None:
    make_files(
        tmp_path, ["a/1001_DFA_ANG_XX.wav", "b/1001_DFA_ANG_XX.wav", "a/1001_DFA_SAD_XX.wav"]
    )
    result = scan(tmp_path)
    assert sorted(result.clips["clip_id"]) == [
        "1001_DFA_SAD_XX", "a/1001_DFA_ANG_XX", "b/1001_DFA_ANG_XX"]
    assert result.clips["clip_id"].is_unique


def test_same_clip_in_two_formats_is_one_clip(tmp_path: Path) -> None:
    make_files(tmp_path, ["1001_DFA_ANG_XX.wav", "1001_DFA_ANG_XX.flac"])
    result = scan(tmp_path)
    assert result.clips["path"].tolist() == ["1001_DFA_ANG_XX.flac"]
    assert result.skipped["path"].tolist() == ["1001_DFA_ANG_XX.wav"]
    assert result.skipped["reason"].iloc[0].startswith("duplicate clip")


def test_emotions_filter(tmp_path: Path) -> None:
    make_files(tmp_path, ["1001_DFA_ANG_XX.wav", "1001_DFA_SAD_XX.wav", "1001_DFA_HAP_XX.wav",
                          "1001_DFA_XYZ_XX.wav"])
    result = scan(tmp_path, emotions=("ANG", "SAD"))
    assert sorted(result.clips["emotion"]) == ["ANG", "SAD"]
    # HAP is filtered out, not skipped: only the failure is listed
    assert result.skipped["path"].tolist() == ["1001_DFA_XYZ_XX.wav"]
    with pytest.raises(CorpusError, match="no clip .* has emotion BOR"):
        scan(tmp_path, emotions=["BOR"])
    with pytest.raises(SerError, match="unknown emotion code"):
        scan(tmp_path, emotions=["ANGRY"])


def test_non_ascii_names(tmp_path: Path) -> None:
    write_wav(tmp_path / "données" / "OAF_café_angry.wav")
    write_wav(tmp_path / "données" / "YAF_über_sad.wav", seed=1)
    result = scan(tmp_path)
    assert row(result, "OAF_café_angry")["path"] == "données/OAF_café_angry.wav"
    assert row(result, "YAF_über_sad")["sentence"] == "über"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    make_files(tmp_path, ["sub/03a01Fa.wav"])
    (tmp_path / "sub" / "loop").symlink_to(tmp_path / "sub", target_is_directory=True)
    assert scan(tmp_path).clips["path"].tolist() == ["sub/03a01Fa.wav"]


# --------------------------------------------------------------------------- manifest


def write_manifest(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_manifest_relative_paths_and_emotion_names(tmp_path: Path) -> None:
    base = tmp_path / "corpus"
    write_wav(base / "clips" / "one.wav")
    write_wav(base / "clips" / "two.flac", seed=1)
    write_wav(base / "three.wav", seed=2)
    write_wav(base / "four.wav", seed=3)
    manifest = write_manifest(
        base / "list.csv",
        "path,emotion,speaker,age,sex\n"
        "clips/one.wav,anger,03,30,Male\n"
        "clips/../clips/two.flac,Happy,04,,\n"
        "three.wav,SAD,,x,\n"
        "four.wav,pleasant surprise,s9,41,\n",
    )
    result = scan(tmp_path / "elsewhere", manifest=manifest)
    assert result.base == base.resolve() and result.dataset == "manifest"
    assert result.skipped.empty
    clips = result.clips.set_index("clip_id")
    assert clips.loc["one"].to_dict() == {
        "path": "clips/one.wav", "dataset": "manifest", "speaker": "03", "emotion": "ANG",
        "sentence": "", "intensity": "", "sex": "Male", "age": 30.0}
    assert clips.loc["two", "path"] == "clips/two.flac"
    assert clips.loc["two", "emotion"] == "HAP" and math.isnan(clips.loc["two", "age"])
    assert clips.loc["three", "speaker"] == "" and clips.loc["three", "emotion"] == "SAD"
    assert clips.loc["four", "emotion"] == "SUR"
    assert result.clips["speaker"].dtype == object


def test_manifest_missing_column(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", "file,emotion\na.wav,ANG\n")
    with pytest.raises(CorpusError) as info:
        scan(tmp_path, dataset="manifest", manifest=manifest)
    assert str(manifest) in str(info.value) and "'path'" in str(info.value)
    manifest = write_manifest(tmp_path / "n.csv", "path,label\na.wav,ANG\n")
    with pytest.raises(CorpusError, match="no 'emotion' column"):
        scan(tmp_path, manifest=manifest)


def test_manifest_missing_file_and_bad_emotion_are_skipped(tmp_path: Path) -> None:
    write_wav(tmp_path / "ok.wav")
    write_wav(tmp_path / "odd.wav")
    manifest = write_manifest(
        tmp_path / "m.csv",
        "path,emotion\nok.wav,neutral\ngone.wav,ANG\nodd.wav,sarcasm\nok.wav,SAD\n",
    )
    result = scan(tmp_path, manifest=manifest)
    assert result.clips["path"].tolist() == ["ok.wav"]
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert reasons["gone.wav"] == "file not found"
    assert reasons["odd.wav"] == "unknown emotion 'sarcasm'"
    assert result.skipped["reason"].str.startswith("duplicate clip").sum() == 1


def test_manifest_escaping_paths(tmp_path: Path) -> None:
    outside = write_wav(tmp_path / "outside.wav")
    write_wav(tmp_path / "base" / "in.wav")
    manifest = write_manifest(
        tmp_path / "base" / "m.csv",
        f"path,emotion\nin.wav,ANG\n../outside.wav,SAD\n{outside},HAP\n",
    )
    strict = scan(tmp_path, manifest=manifest)
    assert strict.clips["path"].tolist() == ["in.wav"]
    reasons = dict(zip(strict.skipped["path"], strict.skipped["reason"]))
    assert reasons["../outside.wav"].startswith("path escapes the manifest folder")
    assert reasons[str(outside)].startswith("absolute path not allowed")

    loose = scan(tmp_path, manifest=manifest, allow_absolute=True)
    assert sorted(loose.clips["path"]) == [outside.resolve().as_posix(), "in.wav"]
    assert loose.skipped["reason"].str.startswith("duplicate clip").all()  # listed twice


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_manifest_symlink_escaping_base_is_skipped(tmp_path: Path) -> None:
    outside = write_wav(tmp_path / "secret.wav")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "link.wav").symlink_to(outside)
    manifest = write_manifest(tmp_path / "base" / "m.csv", "path,emotion\nlink.wav,ANG\n")
    with pytest.raises(CorpusError, match="1 files found, 1 skipped"):
        scan(tmp_path, manifest=manifest)


def test_manifest_needs_dataset_manifest(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", "path,emotion\n")
    with pytest.raises(CorpusError, match="dataset 'manifest'"):
        scan(tmp_path, dataset="emodb", manifest=manifest)
    with pytest.raises(CorpusError, match="needs a manifest CSV"):
        scan(tmp_path, dataset="manifest")
    with pytest.raises(CorpusError, match="does not exist"):
        scan(tmp_path, manifest=tmp_path / "nope.csv")


def test_manifest_non_ascii(tmp_path: Path) -> None:
    write_wav(tmp_path / "Émotions" / "grüße.wav")
    manifest = write_manifest(tmp_path / "m.csv", "path,emotion\nÉmotions/grüße.wav,fear\n")
    result = scan(tmp_path, manifest=manifest)
    assert row(result, "grüße")["path"] == "Émotions/grüße.wav"


# --------------------------------------------------------------------------- real EmoDB


@pytest.mark.skipif(not EMODB.is_dir(), reason="shared EmoDB folder not present")
def test_real_emodb_folder() -> None:
    names = sorted(p.name for p in EMODB.iterdir() if p.suffix.lower() == ".wav")
    result = scan(EMODB)
    clips = result.clips
    assert detect_dataset(EMODB) == "emodb"
    assert len(clips) == len(names) == 410
    assert result.skipped.empty
    assert set(clips["speaker"]) == {n[:2] for n in names}
    assert clips["speaker"].nunique() == 8  # the README's eight speakers
    assert int((clips["emotion"] == "BOR").sum()) == sum(n[5] == "L" for n in names) == 64
    assert clips["sex"].isin(["Male", "Female"]).all() and clips["age"].notna().all()
    assert clips["clip_id"].is_unique
