"""Per-corpus file-name adapters: what a name says about its clip, and what a corpus keeps
beside its names (CREMA-D's demographics table).

Each adapter reads only a file's *relative path* (``"parent/stem"``); nothing is opened except
the demographics CSV. A name an adapter cannot use raises :class:`Unusable` with the reason,
which the scan (:mod:`ser.corpus.scan`) lists as a skipped file rather than dropping it.

Fields an adapter returns (:data:`Fields`): ``speaker, emotion, sentence, intensity, sex`` as
strings, ``age`` in years as a float (NaN if unknown); a key may be missing when the corpus
does not know it. Emotions are project codes (:mod:`ser.corpus.labels`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

import pandas as pd

from ser.corpus.labels import ALL_EMOTIONS, CREMAD_EMOTIONS, EMOTION_NAMES
from ser.errors import CorpusError

#: CREMA-D's actor table; looked for in the data folder and up to two folders above it.
DEMOGRAPHICS_FILE = "VideoDemographics.csv"

Fields = dict[str, "str | float"]


class Unusable(Exception):
    """A file (or manifest row) that cannot become a clip; the message is the skip reason."""


# --------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class Adapter:
    """How one corpus names its files.

    Attributes:
        name: the ``--dataset`` spelling.
        pattern: searched in ``"<parent folder>/<stem>"`` of a file; a match means the name has
            this corpus's layout (used by :func:`ser.corpus.scan.detect_dataset`, ``parse``).
        layout: a human description of the layout, for skip reasons and errors.
        parse: relative path -> fields (speaker, emotion, sentence, intensity, sex, age);
            raises ``Unusable`` with the reason when the name cannot be used.
        enrich: optional step that adds what the corpus keeps outside the names
            (CREMA-D's demographics table), given the records and the data folder.
    """

    name: str
    pattern: re.Pattern[str]
    layout: str
    parse: Callable[[PurePosixPath], Fields]
    enrich: Callable[[list[Fields], Path], list[Fields]] | None = None

    def matches(self, rel: PurePosixPath) -> bool:
        """Whether the file name has this corpus's layout (its codes may still be unknown)."""
        return self.pattern.search(_name_key(rel)) is not None


def _name_key(rel: PurePosixPath) -> str:
    """``"parent/stem"`` (or ``"stem"`` at the top): the part of a path that adapters read."""
    parent = rel.parent.name
    return f"{parent}/{rel.stem}" if parent else rel.stem


def _name_re(body: str, flags: int = 0) -> re.Pattern[str]:
    """A pattern for a whole file stem (optionally preceded by its folder)."""
    return re.compile(rf"(?:^|/)(?:{body})$", flags)


def _match(adapter_re: re.Pattern[str], rel: PurePosixPath, layout: str) -> re.Match[str]:
    """The adapter pattern's match on ``rel``, or :class:`Unusable` naming the layout."""
    found = adapter_re.search(_name_key(rel))
    if found is None:
        raise Unusable(f"name does not match the {layout} layout")
    return found


def _code(raw: str, mapping: Mapping[str, str]) -> str:
    """A corpus's emotion code as the project's code, or :class:`Unusable`."""
    try:
        return mapping[raw]
    except KeyError:
        raise Unusable(f"unknown emotion code {raw!r} in name") from None


# CREMA-D: ACTOR_SENTENCE_EMOTION_LEVEL, e.g. 1001_DFA_ANG_XX
_CREMAD_LAYOUT = "CREMA-D ACTOR_SENTENCE_EMOTION_LEVEL (1001_DFA_ANG_XX.wav)"
_CREMAD_RE = _name_re(
    r"(?P<speaker>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<intensity>[A-Z]{2})"
)
_CREMAD_CODES = {e: e for e in CREMAD_EMOTIONS}


def parse_cremad(rel: PurePosixPath) -> Fields:
    """Parse a CREMA-D name: ``1001_DFA_ANG_XX.wav`` -> speaker 1001, sentence DFA, ANG, XX."""
    m = _match(_CREMAD_RE, rel, _CREMAD_LAYOUT)
    return {
        "speaker": m["speaker"],
        "sentence": m["sentence"],
        "emotion": _code(m["emotion"], _CREMAD_CODES),
        "intensity": m["intensity"],
    }


# EmoDB: SPEAKER(2) TEXT(3) EMOTION(1) VERSION(1), e.g. 03a01Fa
_EMODB_LAYOUT = "EmoDB SPEAKER TEXT EMOTION VERSION (03a01Fa.wav)"
_EMODB_RE = _name_re(
    r"(?P<speaker>\d{2})(?P<sentence>[a-z]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z])"
)
_EMODB_CODES = {"W": "ANG", "E": "DIS", "A": "FEA", "F": "HAP", "N": "NEU", "T": "SAD", "L": "BOR"}
#: EmoDB's ten speakers: (sex, age in years).
EMODB_SPEAKERS: dict[str, tuple[str, float]] = {
    "03": ("Male", 31.0),
    "08": ("Female", 34.0),
    "09": ("Female", 21.0),
    "10": ("Male", 32.0),
    "11": ("Male", 26.0),
    "12": ("Male", 30.0),
    "13": ("Female", 32.0),
    "14": ("Female", 35.0),
    "15": ("Male", 25.0),
    "16": ("Female", 31.0),
}


def parse_emodb(rel: PurePosixPath) -> Fields:
    """Parse an EmoDB name: ``03a01Fa.wav`` -> speaker 03, sentence a01, HAP (+ sex, age)."""
    m = _match(_EMODB_RE, rel, _EMODB_LAYOUT)
    sex, age = EMODB_SPEAKERS.get(m["speaker"], ("", math.nan))
    return {
        "speaker": m["speaker"],
        "sentence": m["sentence"],
        "emotion": _code(m["emotion"], _EMODB_CODES),
        "sex": sex,
        "age": age,
    }


# RAVDESS: modality-channel-emotion-intensity-statement-repetition-actor
_RAVDESS_LAYOUT = "RAVDESS MM-CC-EE-II-SS-RR-AA (03-01-05-01-02-01-12.wav)"
_RAVDESS_RE = _name_re(
    r"(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})"
    r"-(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})"
)
_RAVDESS_CODES = {
    "01": "NEU",
    "02": "CAL",
    "03": "HAP",
    "04": "SAD",
    "05": "ANG",
    "06": "FEA",
    "07": "DIS",
    "08": "SUR",
}
_RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}


def parse_ravdess(rel: PurePosixPath) -> Fields:
    """Parse a RAVDESS name: ``03-01-05-01-02-01-12.wav`` -> actor 12 (even: Female), ANG."""
    m = _match(_RAVDESS_RE, rel, _RAVDESS_LAYOUT)
    emotion = _code(m["emotion"], _RAVDESS_CODES)
    intensity = _RAVDESS_INTENSITY.get(m["intensity"])
    if intensity is None:
        raise Unusable(f"unknown intensity code {m['intensity']!r} in name")
    return {
        "speaker": m["actor"],
        "sentence": m["statement"],
        "emotion": emotion,
        "intensity": intensity,
        "sex": "Male" if int(m["actor"]) % 2 else "Female",
    }


# TESS: SPEAKER_WORD_EMOTION, e.g. OAF_back_angry, YAF_dog_ps
_TESS_LAYOUT = "TESS SPEAKER_WORD_EMOTION (OAF_back_angry.wav)"
_TESS_RE = _name_re(
    r"(?P<speaker>OAF|YAF)_(?P<sentence>[^_/]+)_(?P<emotion>[^/]+)", re.IGNORECASE
)
_TESS_CODES = {
    "angry": "ANG",
    "disgust": "DIS",
    "fear": "FEA",
    "happy": "HAP",
    "neutral": "NEU",
    "sad": "SAD",
    "ps": "SUR",
    "pleasant_surprise": "SUR",
    "pleasant_surprised": "SUR",
}
_TESS_AGES = {"OAF": 64.0, "YAF": 26.0}


def parse_tess(rel: PurePosixPath) -> Fields:
    """Parse a TESS name: ``OAF_back_angry.wav`` -> speaker OAF (Female, 64), word back, ANG."""
    m = _match(_TESS_RE, rel, _TESS_LAYOUT)
    speaker = m["speaker"].upper()
    return {
        "speaker": speaker,
        "sentence": m["sentence"],
        "emotion": _code(m["emotion"].lower(), _TESS_CODES),
        "sex": "Female",
        "age": _TESS_AGES[speaker],
    }


# SAVEE: DC/a01 or DC_a01 (speaker from the folder or the prefix)
_SAVEE_LAYOUT = "SAVEE SPEAKER/EMOTIONnn or SPEAKER_EMOTIONnn (DC/a01.wav, DC_a01.wav)"
_SAVEE_RE = _name_re(r"(?P<speaker>DC|JE|JK|KL)[_/](?P<emotion>[a-z]{1,2})(?P<number>\d{2})")
_SAVEE_CODES = {
    "sa": "SAD",
    "su": "SUR",
    "a": "ANG",
    "d": "DIS",
    "f": "FEA",
    "h": "HAP",
    "n": "NEU",
}


def parse_savee(rel: PurePosixPath) -> Fields:
    """Parse a SAVEE name: ``DC/sa03.wav`` or ``DC_sa03.wav`` -> speaker DC (Male), SAD.

    ``sentence`` is the emotion prefix plus number (``sa03``): in SAVEE the number indexes the
    sentence list of that emotion, so ``a01`` and ``h01`` are different texts.
    """
    m = _match(_SAVEE_RE, rel, _SAVEE_LAYOUT)
    return {
        "speaker": m["speaker"],
        "sentence": f"{m['emotion']}{m['number']}",
        "emotion": _code(m["emotion"], _SAVEE_CODES),
        "sex": "Male",
    }


# CREMA-D demographics ------------------------------------------------------------


def find_demographics(root: Path) -> Path | None:
    """CREMA-D's ``VideoDemographics.csv`` in ``root`` or up to two folders above, or None."""
    folder = root.resolve()
    for candidate in (folder, folder.parent, folder.parent.parent):
        path = candidate / DEMOGRAPHICS_FILE
        if path.is_file():
            return path
    return None


def read_demographics(path: Path) -> dict[str, tuple[str, float]]:
    """Read CREMA-D's actor table: ``{actor id: (sex as given, age in years)}``."""
    table = read_csv_text(path, what="demographics table")
    missing = [c for c in ("ActorID", "Age", "Sex") if c not in table.columns]
    if missing:
        raise CorpusError(
            f"demographics table {path} has no column(s) {', '.join(missing)}; "
            f"expected ActorID,Age,Sex,Race,Ethnicity"
        )
    return {
        actor.strip(): (sex.strip(), to_age(age))
        for actor, sex, age in zip(table["ActorID"], table["Sex"], table["Age"])
    }


def _join_cremad_demographics(records: list[Fields], root: Path) -> list[Fields]:
    """Add ``sex`` and ``age`` from CREMA-D's actor table, when one is found near ``root``."""
    path = find_demographics(root)
    if path is None:
        return records
    actors = read_demographics(path)
    joined = []
    for record in records:
        sex, age = actors.get(str(record["speaker"]), ("", math.nan))
        joined.append({**record, "sex": sex, "age": age})
    return joined


#: The adapters by ``--dataset`` name, in detection order (a tie in detection goes to the first).
ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (
        Adapter("cremad", _CREMAD_RE, _CREMAD_LAYOUT, parse_cremad, _join_cremad_demographics),
        Adapter("emodb", _EMODB_RE, _EMODB_LAYOUT, parse_emodb),
        Adapter("ravdess", _RAVDESS_RE, _RAVDESS_LAYOUT, parse_ravdess),
        Adapter("tess", _TESS_RE, _TESS_LAYOUT, parse_tess),
        Adapter("savee", _SAVEE_RE, _SAVEE_LAYOUT, parse_savee),
    )
}


# --------------------------------------------------------------------------- naming helpers

_EMOTION_WORDS: dict[str, str] = {
    **{code.lower(): code for code in ALL_EMOTIONS},
    **{name: code for code, name in EMOTION_NAMES.items()},
    "angry": "ANG",
    "disgusted": "DIS",
    "fearful": "FEA",
    "afraid": "FEA",
    "happiness": "HAP",
    "sadness": "SAD",
    "bored": "BOR",
    "surprised": "SUR",
    "pleasant_surprise": "SUR",
    "pleasant_surprised": "SUR",
}


def emotion_code(value: str) -> str:
    """Map an emotion code or name (``ANG``, ``anger``, ``Angry``, ``pleasant surprise``) to the
    project's code; raises ``CorpusError`` for anything else."""
    key = re.sub(r"[\s-]+", "_", value.strip().lower())
    try:
        return _EMOTION_WORDS[key]
    except KeyError:
        raise CorpusError(
            f"unknown emotion {value!r}; use a code ({', '.join(ALL_EMOTIONS)}) or a name "
            f"({', '.join(EMOTION_NAMES.values())})"
        ) from None


def read_csv_text(path: Path, *, what: str) -> pd.DataFrame:
    """A small CSV (manifest, demographics) with every cell as text, as written.

    Raises:
        CorpusError: naming ``what`` and ``path``: the file is missing or cannot be parsed.
    """
    if not path.is_file():
        raise CorpusError(f"{what} {path} does not exist")
    try:
        # dtype=str keeps codes such as speaker "03" as written; "" stays "" (not NaN)
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CorpusError(f"cannot read {what} {path}: {exc}") from exc


def to_age(text: str) -> float:
    """An age cell in years; NaN for an empty or non-numeric cell."""
    try:
        return float(text)
    except ValueError:  # "" or "unknown": age is optional metadata
        return math.nan

