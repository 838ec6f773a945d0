"""Corpora as people have them: emotion-named folders, Kaggle's CREMA-D, TESS and SAVEE copies
that vary in case, spelling and layout, an actor table kept elsewhere, and label sets that
differ between corpora. Names only (scan never decodes), made in tmp_path."""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath

import pytest

from corpus_files import make_files
from ser.corpus import adapters
from ser.corpus.labels import label_list
from ser.corpus.scan import ScanResult, detect_dataset, scan
from ser.corpus.splits import SplitConfig, assign_splits
from ser.errors import CorpusError, SerError

ROOT = Path(__file__).resolve().parents[2]
SHARED_DEMOGRAPHICS = ROOT.parent / "shared" / "data" / "cremad-meta" / "VideoDemographics.csv"
DEMOGRAPHICS = (
    '"ActorID","Age","Sex","Race","Ethnicity"\n'
    '1001,51,"Male","Caucasian","Not Hispanic"\n'
    '1040,23,"Female","Asian","Not Hispanic"\n'
)


def by_path(result: ScanResult) -> dict[str, dict]:
    return {r["path"]: r for r in result.clips.to_dict("records")}


def reasons(result: ScanResult) -> dict[str, str]:
    return dict(zip(result.skipped["path"], result.skipped["reason"]))


# --------------------------------------------------------------------------- emotion folders


@pytest.mark.parametrize(
    ("folder", "code"),
    [("Angry", "ANG"), ("anger", "ANG"), ("ANG", "ANG"), ("happy", "HAP"), ("Happiness", "HAP"),
     ("hap", "HAP"), ("SAD", "SAD"), ("sadness", "SAD"), ("Neutral", "NEU"), ("neu", "NEU"),
     ("fear", "FEA"), ("Fearful", "FEA"), ("FEA", "FEA"), ("disgust", "DIS"),
     ("Disgusted", "DIS"), ("dis", "DIS"), ("surprise", "SUR"), ("Surprised", "SUR"),
     ("Pleasant_surprise", "SUR"), ("pleasant surprise", "SUR"), ("PS", "SUR"), ("sur", "SUR"),
     ("calm", "CAL"), ("CAL", "CAL"), ("boredom", "BOR"), ("Bored", "BOR"), ("bor", "BOR")],
)
def test_folder_names_and_codes_in_any_case(folder: str, code: str) -> None:
    fields = adapters.parse_folders(PurePosixPath(f"{folder}/take_1.wav"))
    assert fields == {"speaker": "", "emotion": code}


def test_folders_nearest_emotion_folder_decides(tmp_path: Path) -> None:
    make_files(tmp_path, [
        "Angry/x.wav", "happy/y.wav", "SAD/z.wav", "Pleasant_surprise/p.wav",
        "URDU/Neutral/SM1_F10_N010.wav",     # an emotion folder below another folder
        "happy/angry/q.wav",                 # the nearest emotion folder wins
        "fear/takes/t.wav",                  # a plain folder between file and emotion
        "notes/readme.wav",                  # no emotion folder above it
    ])
    result = scan(tmp_path, dataset="folders")
    emotions = {p: r["emotion"] for p, r in by_path(result).items()}
    assert emotions == {
        "Angry/x.wav": "ANG", "happy/y.wav": "HAP", "SAD/z.wav": "SAD",
        "Pleasant_surprise/p.wav": "SUR", "URDU/Neutral/SM1_F10_N010.wav": "NEU",
        "happy/angry/q.wav": "ANG", "fear/takes/t.wav": "FEA"}
    assert set(result.clips["dataset"]) == {"folders"} and set(result.clips["speaker"]) == {""}
    assert reasons(result) == {
        "notes/readme.wav": "no folder above it is named after an emotion (emotion-named "
                            "folders (Angry/x.wav, sad/y.wav; the nearest one decides))"}


def test_folders_same_stem_in_two_emotions_are_two_clips(tmp_path: Path) -> None:
    make_files(tmp_path, ["Angry/01.wav", "Sad/01.wav"])
    result = scan(tmp_path)
    assert dict(zip(result.clips["clip_id"], result.clips["emotion"])) == {
        "Angry/01": "ANG", "Sad/01": "SAD"}


def test_auto_detects_emotion_folders(tmp_path: Path) -> None:
    make_files(tmp_path, ["Angry/SM1_F10_A010.wav", "Happy/SM2_M3_H001.wav", "Sad/SM1_F1_S02.wav",
                          "readme.wav"])
    assert detect_dataset(tmp_path) == "folders"
    result = scan(tmp_path)
    assert result.dataset == "folders" and len(result.clips) == 3
    assert list(result.skipped["path"]) == ["readme.wav"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["angry/03-01-05-01-01-01-01.wav", "calm/03-01-02-01-01-01-02.wav",
          "sad/03-01-04-02-01-01-03.wav"], "ravdess"),
        # folders matches all four names, CREMA-D three: the corpus's own layout still wins
        (["ANG/1001_DFA_ANG_XX.wav", "SAD/1001_DFA_SAD_XX.wav", "HAP/1002_IEO_HAP_HI.wav",
          "HAP/take 2.wav"], "cremad"),
    ],
)
def test_a_corpus_sorted_into_emotion_folders_is_read_as_that_corpus(
    tmp_path: Path, names: list[str], expected: str
) -> None:
    make_files(tmp_path, names)
    assert detect_dataset(tmp_path) == expected
    result = scan(tmp_path)
    assert result.clips["speaker"].ne("").all()  # the corpus's own names give the speakers
    assert len(result.clips) == 3


def test_folders_speaker_regex_first_group_and_named_group(tmp_path: Path) -> None:
    make_files(tmp_path, ["Angry/SM1_F10_A010.wav", "Sad/SF12_F3_S005.wav", "Sad/take.wav"])
    first = scan(tmp_path, dataset="folders", speaker_regex=r"^([A-Za-z]+\d+)_")
    assert {p: r["speaker"] for p, r in by_path(first).items()} == {
        "Angry/SM1_F10_A010.wav": "SM1", "Sad/SF12_F3_S005.wav": "SF12"}
    assert reasons(first) == {
        "Sad/take.wav": r"name does not match --speaker-regex '^([A-Za-z]+\\d+)_'"}
    named = scan(tmp_path, dataset="folders", speaker_regex=r"^(\w+?)_(?P<speaker>F\d+)_")
    assert sorted(named.clips["speaker"]) == ["F10", "F3"]  # the named group, not the first


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("^([A-Z]+", "--speaker-regex '^([A-Z]+' is not a regular expression"),
     (r"^SM\d+", r"--speaker-regex '^SM\\d+' has no group")],
)
def test_bad_speaker_regex_is_a_clear_error(tmp_path: Path, pattern: str, message: str) -> None:
    make_files(tmp_path, ["Angry/SM1_F10_A010.wav"])
    with pytest.raises(CorpusError, match=re.escape(message)):
        scan(tmp_path, dataset="folders", speaker_regex=pattern)


def test_speaker_regex_for_another_layout_is_refused(tmp_path: Path) -> None:
    make_files(tmp_path, ["1001_DFA_ANG_XX.wav"])
    with pytest.raises(CorpusError, match="--speaker-regex does not apply to .* read as cremad.*"
                                          "--dataset folders"):
        scan(tmp_path, speaker_regex=r"^(\d+)_")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,emotion\n1001_DFA_ANG_XX.wav,ANG\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"--speaker-regex cannot be used with manifest "
                                          f"{re.escape(str(manifest))}"):
        scan(tmp_path, manifest=manifest, speaker_regex=r"^(\d+)_")


@pytest.mark.filterwarnings("ignore:split not stratified")
def test_speaker_split_without_speakers_names_the_fix(tmp_path: Path) -> None:
    make_files(tmp_path, [f"{emotion}/{i:02d}.wav" for emotion in ("Angry", "Sad")
                          for i in range(6)])
    clips = scan(tmp_path).clips
    with pytest.raises(SerError, match="12 of 12 clip\\(s\\) have none \\(e.g. Angry/00.wav\\).*"
                                       "--speaker-regex"):
        assign_splits(clips, SplitConfig(method="speaker"))
    assert set(assign_splits(clips, SplitConfig(method="random"))) >= {"train", "test"}


def test_speaker_split_with_a_speaker_regex(tmp_path: Path) -> None:
    make_files(tmp_path, [f"{emotion}/S{s}_{i}.wav" for emotion in ("Angry", "Sad", "Happy")
                          for s in range(1, 7) for i in range(2)])
    clips = scan(tmp_path, speaker_regex=r"^(S\d+)_").clips
    assert sorted(clips["speaker"].unique()) == [f"S{s}" for s in range(1, 7)]
    split = assign_splits(clips, SplitConfig(method="speaker"))
    assert (clips.assign(split=split).groupby("speaker")["split"].nunique() == 1).all()


def test_featurize_plan_passes_the_options_to_the_scan(tmp_path: Path) -> None:
    from ser.featurize.job import FeaturizeConfig, plan

    make_files(tmp_path / "data", [f"{e}/S{s}_{i}.wav" for e in ("Angry", "Sad")
                                   for s in range(1, 5) for i in range(3)])
    cfg = FeaturizeConfig(data=tmp_path / "data", out=tmp_path / "f.h5", dataset="folders",
                          speaker_regex=r"^(S\d)_", split=SplitConfig(method="speaker"))
    p = plan(cfg)
    assert p.dataset == "folders" and p.labels == ["ANG", "SAD"]
    assert sorted(p.clips["speaker"].unique()) == ["S1", "S2", "S3", "S4"]
    assert (p.clips.groupby("speaker")["split"].nunique() == 1).all()

    make_files(tmp_path / "cremad" / "a" / "b" / "c", ["1040_ITH_SAD_X.wav"])
    (tmp_path / "meta.csv").write_text(DEMOGRAPHICS, encoding="utf-8")
    cfg = FeaturizeConfig(data=tmp_path / "cremad" / "a" / "b" / "c", out=tmp_path / "g.h5",
                          demographics=tmp_path / "meta.csv", split=SplitConfig(test_size=0.0,
                                                                                val_size=0.0))
    row = plan(cfg).clips.iloc[0]
    assert (row["intensity"], row["sex"], row["age"]) == ("XX", "Female", 23.0)


# --------------------------------------------------------------------------- CREMA-D


def test_cremad_one_letter_level_is_unspecified(tmp_path: Path) -> None:
    make_files(tmp_path, ["1040_ITH_SAD_X.wav", "1040_ITH_SAD_HI.wav", "1040_ITH_SAD_XXX.wav"])
    result = scan(tmp_path)
    assert result.dataset == "cremad"
    clips = by_path(result)
    assert (clips["1040_ITH_SAD_X.wav"]["intensity"], clips["1040_ITH_SAD_X.wav"]["emotion"],
            clips["1040_ITH_SAD_X.wav"]["speaker"]) == ("XX", "SAD", "1040")
    assert clips["1040_ITH_SAD_HI.wav"]["intensity"] == "HI"
    assert "does not match the CREMA-D" in reasons(result)["1040_ITH_SAD_XXX.wav"]


def test_cremad_demographics_option(tmp_path: Path) -> None:
    meta = tmp_path / "meta" / "VideoDemographics.csv"
    meta.parent.mkdir()
    meta.write_text(DEMOGRAPHICS, encoding="utf-8")
    audio = make_files(tmp_path / "x" / "y" / "AudioWAV",
                       ["1001_DFA_ANG_XX.wav", "1040_ITH_SAD_X.wav", "1091_TSI_NEU_LO.wav"])
    assert set(scan(audio).clips["sex"]) == {""}  # not beside the audio: nothing joined
    clips = by_path(scan(audio, demographics=meta))
    assert (clips["1001_DFA_ANG_XX.wav"]["sex"], clips["1001_DFA_ANG_XX.wav"]["age"]) == (
        "Male", 51.0)
    assert (clips["1040_ITH_SAD_X.wav"]["sex"], clips["1040_ITH_SAD_X.wav"]["age"]) == (
        "Female", 23.0)
    assert clips["1091_TSI_NEU_LO.wav"]["sex"] == ""
    assert math.isnan(clips["1091_TSI_NEU_LO.wav"]["age"])


def test_cremad_demographics_option_wins_over_the_one_beside(tmp_path: Path) -> None:
    (tmp_path / adapters.DEMOGRAPHICS_FILE).write_text(
        '"ActorID","Age","Sex"\n1001,99,"Female"\n', encoding="utf-8")
    other = tmp_path / "other.csv"
    other.write_text(DEMOGRAPHICS, encoding="utf-8")
    make_files(tmp_path / "AudioWAV", ["1001_DFA_ANG_XX.wav"])
    beside = scan(tmp_path / "AudioWAV").clips.iloc[0]
    assert (beside["sex"], beside["age"]) == ("Female", 99.0)
    given = scan(tmp_path / "AudioWAV", dataset="cremad", demographics=other).clips.iloc[0]
    assert (given["sex"], given["age"]) == ("Male", 51.0)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "does not exist"),
     ("ActorID,Age\n1001,30\n", "has no column(s) Sex"),
     ('"ActorID","Age","Sex"\n', "lists no actors"),
     ('"ActorID","Age","Sex"\n1001,30,Male\n1001,31,Male\n', "lists actor 1001 twice"),
     ('"ActorID","Age","Sex"\n1001,30,Male\n,31,Male\n', "has no ActorID on line 3"),
     ("ActorID,Age,Sex\n1001,30,Male,x,y,z\n", "line 2 has more cells than the header"),
     ("ActorID,Age,Sex\n1001,30,Male\n1002,31,Male,x\n", "cannot read"),
     (b"\xff\xfe\x00\x81binary", "cannot read"),
     ("", "cannot read")],
)
def test_bad_demographics_names_the_file(
    tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    make_files(tmp_path / "AudioWAV", ["1001_DFA_ANG_XX.wav"])
    path = tmp_path / "demo.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        scan(tmp_path / "AudioWAV", demographics=path)
    message = str(info.value)
    assert f"demographics table {path}" in message and problem in message


def test_demographics_folder_and_other_layout_are_refused(tmp_path: Path) -> None:
    make_files(tmp_path / "AudioWAV", ["1001_DFA_ANG_XX.wav"])
    with pytest.raises(CorpusError, match="is a folder, not a CSV file"):
        scan(tmp_path / "AudioWAV", demographics=tmp_path)
    make_files(tmp_path / "emodb", ["03a01Fa.wav"])
    (tmp_path / "d.csv").write_text(DEMOGRAPHICS, encoding="utf-8")
    with pytest.raises(CorpusError, match="--demographics does not apply to .* read as emodb"):
        scan(tmp_path / "emodb", demographics=tmp_path / "d.csv")


@pytest.mark.skipif(not SHARED_DEMOGRAPHICS.is_file(), reason="shared CREMA-D metadata absent")
def test_real_cremad_demographics_file(tmp_path: Path) -> None:
    make_files(tmp_path, ["1001_DFA_ANG_XX.wav", "1002_DFA_SAD_XX.wav", "1040_ITH_SAD_X.wav"])
    clips = by_path(scan(tmp_path, demographics=SHARED_DEMOGRAPHICS))
    assert (clips["1001_DFA_ANG_XX.wav"]["sex"], clips["1001_DFA_ANG_XX.wav"]["age"]) == (
        "Male", 51.0)
    assert clips["1002_DFA_SAD_XX.wav"]["sex"] == "Female"
    assert clips["1040_ITH_SAD_X.wav"]["sex"] in ("Male", "Female")


# --------------------------------------------------------------------------- TESS


def test_tess_folder_case_and_spelling(tmp_path: Path) -> None:
    make_files(tmp_path, [
        "OAF_Fear/OAF_back_fear.wav", "YAF_fear/YAF_dog_fear.wav",
        "OAF_Pleasant_surprise/OAF_back_ps.wav", "YAF_pleasant_surprised/YAF_dog_ps.wav",
        "YAF_happy/YAF_Bath_Happy.wav", "OAF_disgust/OAF_bite_Disgusted.wav",
        "OAF_angry/OAF_back_angy.wav",       # a typo in the name: the folder says angry
    ])
    result = scan(tmp_path)
    assert result.dataset == "tess" and result.skipped.empty
    read = {p: (r["speaker"], r["sentence"], r["emotion"], r["age"])
            for p, r in by_path(result).items()}
    assert read == {
        "OAF_Fear/OAF_back_fear.wav": ("OAF", "back", "FEA", 64.0),
        "YAF_fear/YAF_dog_fear.wav": ("YAF", "dog", "FEA", 26.0),
        "OAF_Pleasant_surprise/OAF_back_ps.wav": ("OAF", "back", "SUR", 64.0),
        "YAF_pleasant_surprised/YAF_dog_ps.wav": ("YAF", "dog", "SUR", 26.0),
        "YAF_happy/YAF_Bath_Happy.wav": ("YAF", "bath", "HAP", 26.0),
        "OAF_disgust/OAF_bite_Disgusted.wav": ("OAF", "bite", "DIS", 64.0),
        "OAF_angry/OAF_back_angy.wav": ("OAF", "back", "ANG", 64.0),
    }


def test_tess_disagreements_are_skipped_with_both_readings(tmp_path: Path) -> None:
    make_files(tmp_path, [
        "OAF_angry/OAF_back_angry.wav", "OAF_angry/OAF_chair_sad.wav", "YAF_sad/OAF_dog_sad.wav",
        "misc/OAF_back_joy.wav", "YAF_calm/YAF_dog_calm.wav",
    ])
    result = scan(tmp_path, dataset="tess")
    assert list(result.clips["path"]) == ["OAF_angry/OAF_back_angry.wav"]
    assert reasons(result) == {
        "OAF_angry/OAF_chair_sad.wav": "name says SAD ('sad') but its folder 'OAF_angry' says ANG",
        "YAF_sad/OAF_dog_sad.wav": "name says speaker OAF but its folder 'YAF_sad' says YAF",
        "misc/OAF_back_joy.wav": "unknown emotion code 'joy' in name",
        "YAF_calm/YAF_dog_calm.wav": "unknown emotion code 'calm' in name",  # not a TESS emotion
    }


# --------------------------------------------------------------------------- SAVEE


def test_savee_audiodata_layout(tmp_path: Path) -> None:
    make_files(tmp_path, ["AudioData/DC/a01.wav", "AudioData/JE/sa3.wav", "AudioData/jk/SU15.wav",
                          "AudioData/KL/n30.wav", "AudioData/DC/JE_h01.wav",
                          "AudioData/DC/x01.wav", "AudioData/info.wav"])
    result = scan(tmp_path)
    assert result.dataset == "savee"
    read = {p: (r["speaker"], r["sentence"], r["emotion"]) for p, r in by_path(result).items()}
    assert read == {
        "AudioData/DC/a01.wav": ("DC", "a01", "ANG"),
        "AudioData/JE/sa3.wav": ("JE", "sa03", "SAD"),
        "AudioData/jk/SU15.wav": ("JK", "su15", "SUR"),
        "AudioData/KL/n30.wav": ("KL", "n30", "NEU"),
    }
    skipped = reasons(result)
    assert skipped["AudioData/DC/JE_h01.wav"] == (
        "name says speaker JE but its folder 'DC' says DC")
    assert skipped["AudioData/DC/x01.wav"] == "unknown emotion code 'x' in name"
    assert "does not match the SAVEE" in skipped["AudioData/info.wav"]


def test_savee_kaggle_all_layout(tmp_path: Path) -> None:
    make_files(tmp_path, ["ALL/DC_a01.wav", "ALL/JE_sa01.wav", "ALL/kl_Su02.wav", "ALL/JK_d7.wav",
                          "ALL/DC/DC_h02.wav"])
    result = scan(tmp_path)
    assert result.dataset == "savee" and result.skipped.empty
    read = {r["clip_id"]: (r["speaker"], r["sentence"], r["emotion"], r["sex"])
            for r in result.clips.to_dict("records")}
    assert read == {
        "DC_a01": ("DC", "a01", "ANG", "Male"), "JE_sa01": ("JE", "sa01", "SAD", "Male"),
        "kl_Su02": ("KL", "su02", "SUR", "Male"), "JK_d7": ("JK", "d07", "DIS", "Male"),
        "DC_h02": ("DC", "h02", "HAP", "Male"),
    }


# --------------------------------------------------------------------------- label sets


def test_corpus_only_labels_keep_their_own_codes(tmp_path: Path) -> None:
    make_files(tmp_path / "folders", ["Calm/a.wav", "Surprised/b.wav", "Bored/c.wav",
                                      "Angry/d.wav"])
    folders = scan(tmp_path / "folders").clips
    assert label_list(folders["emotion"]) == ["ANG", "BOR", "CAL", "SUR"]
    make_files(tmp_path / "ravdess", ["Actor_01/03-01-02-01-01-01-01.wav",
                                      "Actor_01/03-01-08-01-01-01-01.wav",
                                      "Actor_01/03-01-01-01-01-01-01.wav"])
    assert label_list(scan(tmp_path / "ravdess").clips["emotion"]) == ["NEU", "CAL", "SUR"]
    make_files(tmp_path / "emodb", ["03a01La.wav", "03a01Wa.wav"])
    assert sorted(scan(tmp_path / "emodb").clips["emotion"]) == ["ANG", "BOR"]
    make_files(tmp_path / "savee", ["DC_su01.wav", "DC_a01.wav"])
    assert sorted(scan(tmp_path / "savee").clips["emotion"]) == ["ANG", "SUR"]


def _doc_label_table() -> dict[str, dict[str, str]]:
    text = (ROOT / "docs" / "corpora.md").read_text(encoding="utf-8")
    section = text.split("## Label mapping", 1)[1]
    table: dict[str, dict[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue
        for label in re.findall(r"`([^`]+)`", cells[1]):
            table.setdefault(cells[0], {})[label] = cells[3]
    return table


def test_docs_label_table_is_the_code_table() -> None:
    assert _doc_label_table() == {name: dict(m) for name, m in adapters.LABEL_MAPS.items()}
    assert set(adapters.LABEL_MAPS) == set(adapters.ADAPTERS)
