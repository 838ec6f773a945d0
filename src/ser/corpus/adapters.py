"""Per-corpus file-name adapters: what a name says about its clip, and what a corpus keeps
beside its names (CREMA-D's demographics table).

Each adapter reads only a file's *relative path* (``"parent/stem"``; the ``folders`` layout reads
every folder above the file); nothing is opened except the demographics CSV. A name an adapter
cannot use raises :class:`Unusable` with the reason, which the scan (:mod:`ser.corpus.scan`)
lists as a skipped file rather than dropping it. What the caller knows beyond the names (a
speaker pattern, where CREMA-D's actor table is) comes in :class:`ScanOptions`.

Fields an adapter returns (:data:`Fields`): ``speaker, emotion, sentence, intensity, sex`` as
strings, ``age`` in years as a float (NaN if unknown); a key may be missing when the corpus
does not know it. Emotions are project codes (:mod:`ser.corpus.labels`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

import pandas as pd

from ser.corpus.labels import (
    ALL_EMOTIONS,
    CREMAD_EMOTIONS,
    EMOTION_NAMES,
    EMOTION_WORDS,
    emotion_word,
    normalize_word,
)
from ser.errors import CorpusError

#: CREMA-D's actor table; looked for in the data folder and up to two folders above it.
DEMOGRAPHICS_FILE = "VideoDemographics.csv"

Fields = dict[str, "str | float"]


class Unusable(Exception):
    """A file (or manifest row) that cannot become a clip; the message is the skip reason."""


@dataclass(frozen=True)
class ScanOptions:
    """What the caller knows about a corpus beyond its file names.

    Attributes:
        speaker_regex: for the ``folders`` layout: a regular expression searched in each file's
            stem; its group ``speaker`` (or else its first group) is the clip's speaker. Without
            it, speakers are unknown ("").
        demographics: for CREMA-D: the actor table (``VideoDemographics.csv``) to join sex and
            age from, when it is not beside the audio.
    """

    speaker_regex: str | None = None
    demographics: Path | None = None

    def __post_init__(self) -> None:
        if self.speaker_regex is not None:
            compile_speaker_regex(self.speaker_regex)  # a bad pattern fails before the walk

    def given(self) -> list[str]:
        """The names of the options that are set."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


# --------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class Adapter:
    """How one corpus names its files.

    Attributes:
        name: the ``--dataset`` spelling.
        pattern: searched in ``"<parent folder>/<stem>"`` of a file; a match means the name has
            this corpus's layout (used by :func:`ser.corpus.scan.detect_dataset`, ``parse``).
            None when ``matcher`` decides instead.
        layout: a human description of the layout, for skip reasons and errors.
        parse: relative path -> fields (speaker, emotion, sentence, intensity, sex, age);
            raises ``Unusable`` with the reason when the name cannot be used.
        enrich: optional step that adds what the corpus keeps outside the names
            (CREMA-D's demographics table), given the records and the data folder.
        matcher: relative path -> whether it has this layout, where a name pattern cannot tell
            (emotion-named folders at any depth).
        fallback: a generic layout, detected only when no corpus-specific layout matches.
        options: the :class:`ScanOptions` fields this layout reads (any other one given is an
            error: it would be ignored).
        bind: (this adapter, options) -> the adapter that applies them.
    """

    name: str
    pattern: re.Pattern[str] | None
    layout: str
    parse: Callable[[PurePosixPath], Fields]
    enrich: Callable[[list[Fields], Path], list[Fields]] | None = None
    matcher: Callable[[PurePosixPath], bool] | None = None
    fallback: bool = False
    options: tuple[str, ...] = ()
    bind: Callable[[Adapter, ScanOptions], Adapter] | None = None

    def matches(self, rel: PurePosixPath) -> bool:
        """Whether the file name has this corpus's layout (its codes may still be unknown)."""
        if self.matcher is not None:
            return self.matcher(rel)
        return self.pattern is not None and self.pattern.search(_name_key(rel)) is not None

    def configured(self, options: ScanOptions) -> Adapter:
        """This adapter with ``options`` applied (the options must be among ``self.options``)."""
        if self.bind is None or not options.given():
            return self
        return self.bind(self, options)


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
    r"(?P<speaker>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<intensity>[A-Z]{1,2})"
)
_CREMAD_CODES = {e: e for e in CREMAD_EMOTIONS}
#: CREMA-D's "unspecified" level; a one-letter level (Kaggle's copy ships 1040_ITH_SAD_X.wav
#: for 1040_ITH_SAD_XX.wav) is read as it.
CREMAD_UNSPECIFIED = "XX"


def parse_cremad(rel: PurePosixPath) -> Fields:
    """Parse a CREMA-D name: ``1001_DFA_ANG_XX.wav`` -> speaker 1001, sentence DFA, ANG, XX.

    A one-letter level (``1040_ITH_SAD_X.wav``) is read as unspecified, ``XX``.
    """
    m = _match(_CREMAD_RE, rel, _CREMAD_LAYOUT)
    level = m["intensity"]
    return {
        "speaker": m["speaker"],
        "sentence": m["sentence"],
        "emotion": _code(m["emotion"], _CREMAD_CODES),
        "intensity": level if len(level) == 2 else CREMAD_UNSPECIFIED,
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


# TESS: SPEAKER_WORD_EMOTION, e.g. OAF_back_angry, YAF_dog_ps, in folders such as OAF_Fear
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
_TESS_EMOTIONS = frozenset(_TESS_CODES.values())
_TESS_AGES = {"OAF": 64.0, "YAF": 26.0}
#: A TESS folder: SPEAKER_EMOTION in any case and spelling (OAF_Fear, YAF_pleasant_surprised).
_TESS_FOLDER_RE = re.compile(r"(?P<speaker>OAF|YAF)[\s_-]+(?P<emotion>.+)", re.IGNORECASE)


def _tess_emotion(word: str) -> str | None:
    """A TESS emotion word in any case or spelling (``Fear``, ``fearful``, ``ps``) as a code."""
    code = _TESS_CODES.get(normalize_word(word)) or emotion_word(word)
    return code if code in _TESS_EMOTIONS else None


def _tess_folder(rel: PurePosixPath) -> tuple[str, str | None] | None:
    """(speaker, emotion code or None) named by the TESS folder ``rel`` is in; None if its
    folder is not a TESS SPEAKER_EMOTION folder."""
    m = _TESS_FOLDER_RE.fullmatch(rel.parent.name.strip())
    if m is None:
        return None
    return m["speaker"].upper(), _tess_emotion(m["emotion"])


def _tess_agreed(rel: PurePosixPath, speaker: str, word: str) -> tuple[str, str]:
    """(speaker, emotion) of a TESS file, from its name and folder; :class:`Unusable` when they
    disagree, or when neither names a known emotion."""
    emotion = _tess_emotion(word)
    folder = _tess_folder(rel)
    folder_speaker, folder_emotion = folder if folder is not None else (speaker, None)
    where = f"its folder {rel.parent.name!r}"
    if folder_speaker != speaker:
        raise Unusable(f"name says speaker {speaker} but {where} says {folder_speaker}")
    if emotion is None and folder_emotion is None:
        raise Unusable(f"unknown emotion code {word!r} in name")
    if emotion is not None and folder_emotion not in (None, emotion):
        raise Unusable(f"name says {emotion} ({word!r}) but {where} says {folder_emotion}")
    return speaker, emotion or str(folder_emotion)


def parse_tess(rel: PurePosixPath) -> Fields:
    """Parse a TESS name: ``OAF_back_angry.wav`` -> speaker OAF (Female, 64), word back, ANG.

    Case and spelling may vary (``YAF_Back_Fearful``, ``pleasant surprised``); a TESS folder
    (``OAF_Fear``) must agree with the name, and gives the emotion when the name's is unknown.
    """
    m = _match(_TESS_RE, rel, _TESS_LAYOUT)
    speaker, emotion = _tess_agreed(rel, m["speaker"].upper(), m["emotion"])
    return {
        "speaker": speaker,
        "sentence": m["sentence"].lower(),
        "emotion": emotion,
        "sex": "Female",
        "age": _TESS_AGES[speaker],
    }


# SAVEE: DC/a01 or DC_a01 (speaker from the folder or the prefix), in any case
_SAVEE_LAYOUT = "SAVEE SPEAKER/EMOTIONnn or SPEAKER_EMOTIONnn (DC/a01.wav, DC_a01.wav)"
_SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
_SAVEE_RE = _name_re(
    rf"(?P<speaker>{'|'.join(_SAVEE_SPEAKERS)})[_/](?P<emotion>[a-z]{{1,2}})(?P<number>\d{{1,2}})",
    re.IGNORECASE,
)
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

    ``sentence`` is the emotion prefix plus a two-digit number (``sa03``): in SAVEE the number
    indexes the sentence list of that emotion, so ``a01`` and ``h01`` are different texts. Case
    varies between copies (``dc_A1.wav`` reads as DC, a01); a speaker folder above a prefixed
    name (``DC/JE_a01.wav``) must agree with it.
    """
    m = _match(_SAVEE_RE, rel, _SAVEE_LAYOUT)
    speaker, prefix = m["speaker"].upper(), m["emotion"].lower()
    folder = rel.parent.name.upper()
    if folder in _SAVEE_SPEAKERS and folder != speaker:
        raise Unusable(
            f"name says speaker {speaker} but its folder {rel.parent.name!r} says {folder}"
        )
    return {
        "speaker": speaker,
        "sentence": f"{prefix}{int(m['number']):02d}",
        "emotion": _code(prefix, _SAVEE_CODES),
        "sex": "Male",
    }


# Emotion-named folders: Angry/x.wav, happy/sub/y.wav, SAD/z.wav (the nearest one decides)
_FOLDERS_LAYOUT = "emotion-named folders (Angry/x.wav, sad/y.wav; the nearest one decides)"
_SPEAKER_GROUP = "speaker"


def emotion_folder(rel: PurePosixPath) -> tuple[str, str] | None:
    """(code, folder name) of the nearest folder above ``rel`` that is named after an emotion
    (a name or code in any case: ``Angry``, ``anger``, ``ANG``, ``Pleasant_surprise``), or
    None."""
    for part in reversed(rel.parent.parts):
        code = emotion_word(part)
        if code is not None:
            return code, part
    return None


def compile_speaker_regex(text: str) -> re.Pattern[str]:
    """A speaker pattern: a valid regex with a group ``speaker`` or at least one group.

    Raises:
        CorpusError: naming the pattern and what is wrong with it.
    """
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise CorpusError(f"--speaker-regex {text!r} is not a regular expression: {exc}") from None
    if pattern.groups == 0:
        raise CorpusError(
            f"--speaker-regex {text!r} has no group: put the speaker's part of the file name in "
            rf"parentheses, e.g. '^([A-Za-z]+\d+)_', or name it (?P<speaker>...)"
        )
    return pattern


def regex_speaker(rel: PurePosixPath, pattern: re.Pattern[str]) -> str:
    """The speaker ``pattern`` finds in ``rel``'s stem (group ``speaker``, else the first), or
    :class:`Unusable`."""
    m = pattern.search(rel.stem)
    if m is None:
        raise Unusable(f"name does not match --speaker-regex {pattern.pattern!r}")
    group: str | int = _SPEAKER_GROUP if _SPEAKER_GROUP in pattern.groupindex else 1
    speaker = m[group]
    if not speaker:
        raise Unusable(f"--speaker-regex {pattern.pattern!r} finds an empty speaker in the name")
    return speaker


def parse_folders(rel: PurePosixPath, speaker_re: re.Pattern[str] | None = None) -> Fields:
    """Parse a file under an emotion-named folder: ``URDU/Angry/SM1_F10_A010.wav`` -> ANG.

    The speaker is what ``speaker_re`` finds in the stem (see :func:`regex_speaker`), or unknown
    ("") without one.
    """
    found = emotion_folder(rel)
    if found is None:
        raise Unusable(f"no folder above it is named after an emotion ({_FOLDERS_LAYOUT})")
    speaker = regex_speaker(rel, speaker_re) if speaker_re is not None else ""
    return {"speaker": speaker, "emotion": found[0]}


def _bind_folders(adapter: Adapter, options: ScanOptions) -> Adapter:
    if options.speaker_regex is None:
        return adapter
    speaker_re = compile_speaker_regex(options.speaker_regex)
    return dataclasses.replace(adapter, parse=partial(parse_folders, speaker_re=speaker_re))


# CREMA-D demographics ------------------------------------------------------------


def find_demographics(root: Path) -> Path | None:
    """CREMA-D's ``VideoDemographics.csv`` in ``root`` or up to two folders above, or None."""
    folder = root.resolve()
    for candidate in (folder, folder.parent, folder.parent.parent):
        path = candidate / DEMOGRAPHICS_FILE
        if path.is_file():
            return path
    return None


def _check_actor_ids(path: Path, actors: pd.Series) -> None:
    """A CorpusError naming ``path`` when the table lists no actor, a blank or a repeated one."""
    ids = actors.str.strip()
    if ids.empty:
        raise CorpusError(f"demographics table {path} lists no actors (only a header)")
    if (ids == "").any():
        line = int((ids == "").to_numpy().argmax()) + 2  # line 1 is the header
        raise CorpusError(f"demographics table {path} has no ActorID on line {line}")
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise CorpusError(f"demographics table {path} lists actor {repeated.iloc[0]} twice")


def read_demographics(path: Path) -> dict[str, tuple[str, float]]:
    """Read CREMA-D's actor table: ``{actor id: (sex as given, age in years)}``.

    Raises:
        CorpusError: naming ``path``: missing, unreadable, without the ActorID/Age/Sex columns,
            or with no, a blank or a repeated ActorID.
    """
    table = read_csv_text(path, what="demographics table")
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("ActorID", "Age", "Sex") if c not in table.columns]
    if missing:
        raise CorpusError(
            f"demographics table {path} has no column(s) {', '.join(missing)}; "
            f"expected ActorID,Age,Sex,Race,Ethnicity"
        )
    _check_actor_ids(path, table["ActorID"])
    return {
        actor.strip(): (sex.strip(), to_age(age))
        for actor, sex, age in zip(table["ActorID"], table["Sex"], table["Age"])
    }


def _join_actors(
    records: list[Fields], root: Path, *, actors: Mapping[str, tuple[str, float]]
) -> list[Fields]:
    """``records`` with ``sex`` and ``age`` from ``actors`` ("" and NaN for an unlisted one)."""
    joined = []
    for record in records:
        sex, age = actors.get(str(record["speaker"]), ("", math.nan))
        joined.append({**record, "sex": sex, "age": age})
    return joined


def _join_cremad_demographics(records: list[Fields], root: Path) -> list[Fields]:
    """Add ``sex`` and ``age`` from CREMA-D's actor table, when one is found near ``root``."""
    path = find_demographics(root)
    if path is None:
        return records
    return _join_actors(records, root, actors=read_demographics(path))


def _bind_cremad(adapter: Adapter, options: ScanOptions) -> Adapter:
    """CREMA-D joined with the actor table ``options.demographics`` (read now: a bad one fails
    before any clip is read)."""
    if options.demographics is None:
        return adapter
    actors = read_demographics(Path(options.demographics))
    return dataclasses.replace(adapter, enrich=partial(_join_actors, actors=actors))


#: The adapters by ``--dataset`` name, in detection order (a tie in detection goes to the first;
#: the generic ``folders`` layout is detected only when no corpus's own names match).
ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (
        Adapter("cremad", _CREMAD_RE, _CREMAD_LAYOUT, parse_cremad, _join_cremad_demographics,
                options=("demographics",), bind=_bind_cremad),
        Adapter("emodb", _EMODB_RE, _EMODB_LAYOUT, parse_emodb),
        Adapter("ravdess", _RAVDESS_RE, _RAVDESS_LAYOUT, parse_ravdess),
        Adapter("tess", _TESS_RE, _TESS_LAYOUT, parse_tess),
        Adapter("savee", _SAVEE_RE, _SAVEE_LAYOUT, parse_savee),
        Adapter("folders", None, _FOLDERS_LAYOUT, parse_folders,
                matcher=lambda rel: emotion_folder(rel) is not None, fallback=True,
                options=("speaker_regex",), bind=_bind_folders),
    )
}

#: Each layout's own labels -> the project's code (docs/corpora.md shows this table; the TESS
#: and folders layouts also read the other spellings of :data:`ser.corpus.labels.EMOTION_WORDS`).
LABEL_MAPS: dict[str, Mapping[str, str]] = {
    "cremad": _CREMAD_CODES,
    "emodb": _EMODB_CODES,
    "ravdess": _RAVDESS_CODES,
    "tess": _TESS_CODES,
    "savee": _SAVEE_CODES,
    "folders": EMOTION_WORDS,
}


# --------------------------------------------------------------------------- naming helpers


def emotion_code(value: str) -> str:
    """Map an emotion code or name (``ANG``, ``anger``, ``Angry``, ``pleasant surprise``) to the
    project's code; raises ``CorpusError`` for anything else."""
    key = normalize_word(value)
    try:
        return EMOTION_WORDS[key]
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
    if path.is_dir():
        raise CorpusError(f"{what} {path} is a folder, not a CSV file")
    if not path.is_file():
        raise CorpusError(f"{what} {path} does not exist")
    try:
        # dtype=str keeps codes such as speaker "03" as written; "" stays "" (not NaN)
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise CorpusError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(table.index, pd.RangeIndex):  # pandas made the surplus cells an index
        raise CorpusError(
            f"cannot read {what} {path}: line 2 has more cells than the header has columns "
            f"({', '.join(map(str, table.columns))}); a trailing comma on each line does this"
        )
    return table


def to_age(text: str) -> float:
    """An age cell in years; NaN for an empty or non-numeric cell."""
    try:
        return float(text)
    except ValueError:  # "" or "unknown": age is optional metadata
        return math.nan

