"""Tests for ser.corpus.adapters: the file-name parsers on their own, and the names the scan
module still re-exports for the layers above."""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath

import pytest

from ser.corpus import adapters
from ser.errors import CorpusError

def test_dataset_choices_follow_the_adapter_registry() -> None:
    from ser.corpus.scan import DATASETS

    assert DATASETS == ("auto", "cremad", "emodb", "ravdess", "tess", "savee", "folders", "manifest")
    assert DATASETS[1:-1] == tuple(adapters.ADAPTERS)
    assert all(a.name == key for key, a in adapters.ADAPTERS.items())


@pytest.mark.parametrize(
    ("dataset", "name", "expected"),
    [
        ("cremad", "1001_DFA_ANG_XX.wav",
         {"speaker": "1001", "sentence": "DFA", "emotion": "ANG", "intensity": "XX"}),
        ("emodb", "03a01Fa.wav",
         {"speaker": "03", "sentence": "a01", "emotion": "HAP", "sex": "Male", "age": 31.0}),
        ("ravdess", "Actor_12/03-01-05-02-02-01-12.wav",
         {"speaker": "12", "sentence": "02", "emotion": "ANG", "intensity": "strong",
          "sex": "Female"}),
        ("tess", "YAF_dog_ps.wav",
         {"speaker": "YAF", "sentence": "dog", "emotion": "SUR", "sex": "Female", "age": 26.0}),
        ("savee", "DC/sa03.wav",
         {"speaker": "DC", "sentence": "sa03", "emotion": "SAD", "sex": "Male"}),
    ],
)
def test_parsers_read_the_name(dataset: str, name: str, expected: dict) -> None:
    adapter = adapters.ADAPTERS[dataset]
    rel = PurePosixPath(name)
    assert adapter.matches(rel)
    assert adapter.parse(rel) == expected


@pytest.mark.parametrize(
    ("dataset", "name", "reason"),
    [
        ("cremad", "1001_DFA_XYZ_XX.wav", "unknown emotion code 'XYZ'"),
        ("emodb", "03a01Qa.wav", "unknown emotion code 'Q'"),
        ("ravdess", "03-01-05-03-02-01-12.wav", "unknown intensity code '03'"),
        ("tess", "notes.wav", "does not match the TESS"),
    ],
)
def test_parsers_give_the_skip_reason(dataset: str, name: str, reason: str) -> None:
    with pytest.raises(adapters.Unusable, match=reason):
        adapters.ADAPTERS[dataset].parse(PurePosixPath(name))


def test_emotion_code_words() -> None:
    assert adapters.emotion_code(" Pleasant surprise ") == "SUR"
    assert adapters.emotion_code("anger") == adapters.emotion_code("ANG") == "ANG"
    with pytest.raises(CorpusError, match="unknown emotion 'joy'"):
        adapters.emotion_code("joy")


def test_demographics_join(tmp_path: Path) -> None:
    (tmp_path / adapters.DEMOGRAPHICS_FILE).write_text(
        '"ActorID","Age","Sex","Race","Ethnicity"\n1001,51,"Male","Caucasian","Not Hispanic"\n'
        '1002,,"Female","Asian","Not Hispanic"\n', encoding="utf-8")
    data = tmp_path / "AudioWAV"
    data.mkdir()
    assert adapters.find_demographics(data) == (tmp_path / adapters.DEMOGRAPHICS_FILE).resolve()
    table = adapters.read_demographics(tmp_path / adapters.DEMOGRAPHICS_FILE)
    assert table["1001"] == ("Male", 51.0) and table["1002"][0] == "Female"
    assert math.isnan(table["1002"][1])
    enrich = adapters.ADAPTERS["cremad"].enrich
    assert enrich is not None
    joined = enrich([{"speaker": "1002"}, {"speaker": "1099"}], data)
    assert joined[0]["sex"] == "Female" and joined[1]["sex"] == ""
    assert math.isnan(joined[1]["age"])


def test_demographics_without_columns_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / adapters.DEMOGRAPHICS_FILE
    path.write_text("ActorID,Age\n1001,30\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"{re.escape(str(path))}.*no column.*Sex"):
        adapters.read_demographics(path)
