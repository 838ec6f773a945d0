"""Corpus folders -> clip tables: one small adapter per corpus, plus a CSV manifest.

Only file *names* are read here; audio is opened and decoded later (by the featurize job), so
scanning a corpus of thousands of files takes well under a second.

A clip table (:attr:`ScanResult.clips`) has the columns :data:`CLIP_COLUMNS`, one row per
usable clip, sorted by ``path``. Strings use plain ``object`` dtype ("" where the corpus does
not know a value) so the table writes cleanly to PyTables; ``age`` is float (NaN if unknown).
Files that were found but cannot be used are never dropped silently: they are listed in
:attr:`ScanResult.skipped` with the reason.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

import pandas as pd

from ser.errors import CorpusError
from ser.corpus.labels import ALL_EMOTIONS, CREMAD_EMOTIONS, EMOTION_NAMES, parse_emotions

CLIP_COLUMNS: list[str] = [
    "clip_id",
    "path",
    "dataset",
    "speaker",
    "emotion",
    "sentence",
    "intensity",
    "sex",
    "age",
]
SKIPPED_COLUMNS: list[str] = ["path", "reason"]
#: Audio file extensions a folder scan picks up (compared case-insensitively).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg")
#: CREMA-D's actor table; looked for in the data folder and up to two folders above it.
DEMOGRAPHICS_FILE = "VideoDemographics.csv"

_STRING_COLUMNS = [c for c in CLIP_COLUMNS if c != "age"]
_DETECT_SAMPLE = 200
_MANIFEST_REQUIRED = ("path", "emotion")
_MANIFEST_OPTIONAL = ("speaker", "sentence", "intensity", "sex")

Fields = dict[str, "str | float"]


class _Unusable(Exception):
    """A file (or manifest row) that cannot become a clip; the message is the skip reason."""


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class ScanResult:
    """What :func:`scan` found.

    Attributes:
        clips: columns exactly :data:`CLIP_COLUMNS`, one row per usable clip, sorted by
            ``path``, index ``0..n-1``.
        skipped: columns ``["path", "reason"]``: files found but not usable (name not
            parseable, unknown emotion code, path escaping the manifest folder, missing file,
            duplicate clip). Clips removed by the ``emotions`` filter are not listed here.
        base: the absolute folder that relative ``clips.path`` values are relative to (the data
            folder, or the manifest's folder for ``dataset="manifest"``).
        dataset: the layout the names were read as (one of :data:`ADAPTERS`, detected for
            ``"auto"``), or ``"manifest"``.
    """

    clips: pd.DataFrame
    skipped: pd.DataFrame
    base: Path = field(default_factory=Path.cwd)
    dataset: str = "manifest"


# --------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class Adapter:
    """How one corpus names its files.

    Attributes:
        name: the ``--dataset`` spelling.
        pattern: searched in ``"<parent folder>/<stem>"`` of a file; a match means the name has
            this corpus's layout (used by :func:`detect_dataset` and by ``parse``).
        layout: a human description of the layout, for skip reasons and errors.
        parse: relative path -> fields (speaker, emotion, sentence, intensity, sex, age);
            raises ``_Unusable`` with the reason when the name cannot be used.
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
    found = adapter_re.search(_name_key(rel))
    if found is None:
        raise _Unusable(f"name does not match the {layout} layout")
    return found


def _code(raw: str, mapping: Mapping[str, str]) -> str:
    try:
        return mapping[raw]
    except KeyError:
        raise _Unusable(f"unknown emotion code {raw!r} in name") from None


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
        raise _Unusable(f"unknown intensity code {m['intensity']!r} in name")
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
    table = _read_csv(path, what="demographics table")
    missing = [c for c in ("ActorID", "Age", "Sex") if c not in table.columns]
    if missing:
        raise CorpusError(
            f"demographics table {path} has no column(s) {', '.join(missing)}; "
            f"expected ActorID,Age,Sex,Race,Ethnicity"
        )
    return {
        actor.strip(): (sex.strip(), _to_age(age))
        for actor, sex, age in zip(table["ActorID"], table["Sex"], table["Age"])
    }


def _join_cremad_demographics(records: list[Fields], root: Path) -> list[Fields]:
    path = find_demographics(root)
    if path is None:
        return records
    actors = read_demographics(path)
    joined = []
    for record in records:
        sex, age = actors.get(str(record["speaker"]), ("", math.nan))
        joined.append({**record, "sex": sex, "age": age})
    return joined


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
#: Every accepted ``dataset`` value (the ``--dataset`` choices).
DATASETS: tuple[str, ...] = ("auto", *ADAPTERS, "manifest")


# --------------------------------------------------------------------------- folders


def _check_root(root: str | Path) -> Path:
    folder = Path(root)
    if not folder.exists():
        raise CorpusError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise CorpusError(f"data folder {folder} is not a folder")
    return folder


def find_audio(root: str | Path) -> list[PurePosixPath]:
    """Audio files under ``root`` (recursive, symlinked folders followed once), as POSIX paths
    relative to ``root``, sorted by their string."""
    folder = _check_root(root)
    found: list[PurePosixPath] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        info = os.stat(dirpath)
        if (info.st_dev, info.st_ino) in seen:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        rel_dir = PurePosixPath(Path(dirpath).relative_to(folder).as_posix())
        found.extend(
            rel_dir / name for name in filenames if Path(name).suffix.lower() in AUDIO_EXTENSIONS
        )
    return sorted(found, key=str)


def _no_audio(root: Path) -> CorpusError:
    return CorpusError(f"no audio files (.wav/.flac/.mp3/.ogg) under {root}")


def _sample(files: Sequence[PurePosixPath], n: int) -> list[PurePosixPath]:
    """Up to ``n`` files spread evenly over the sorted list (deterministic)."""
    step = max(1, math.ceil(len(files) / n))
    return list(files[::step])


def _detect(root: Path, files: Sequence[PurePosixPath]) -> str:
    sample = _sample(files, _DETECT_SAMPLE)
    counts = {name: sum(a.matches(rel) for rel in sample) for name, a in ADAPTERS.items()}
    best = max(counts, key=counts.__getitem__)  # ties go to the first registered
    if counts[best] * 2 > len(sample):
        return best
    examples = ", ".join(repr(rel.name) for rel in sample[:3])
    hint = (
        f" (at most {counts[best]} of {len(sample)} sampled names look like {best})"
        if counts[best]
        else ""
    )
    raise CorpusError(
        f"unknown corpus layout under {root}: names such as {examples} match none of "
        f"{', '.join(ADAPTERS)}{hint}; list the files in a CSV and use "
        f"--dataset manifest --manifest CSV (columns path,emotion[,speaker])"
    )


def detect_dataset(root: str | Path) -> str:
    """Which corpus a folder holds, from its audio file names.

    Returns one of ``"cremad" | "emodb" | "ravdess" | "tess" | "savee"``: the adapter whose
    name pattern matches more than half of (a sample of up to 200) audio file names.

    Raises:
        CorpusError: the folder does not exist, holds no audio files, or its names match no
            known layout (the message lists example names and suggests a manifest).
    """
    folder = _check_root(root)
    files = find_audio(folder)
    if not files:
        raise _no_audio(folder)
    return _detect(folder, files)


def _parse_files(
    files: Sequence[PurePosixPath], adapter: Adapter
) -> tuple[list[Fields], list[Fields]]:
    records: list[Fields] = []
    skipped: list[Fields] = []
    for rel in files:
        try:
            fields = adapter.parse(rel)
        except _Unusable as reason:
            skipped.append({"path": str(rel), "reason": str(reason)})
            continue
        records.append({**fields, "path": str(rel), "dataset": adapter.name})
    return records, skipped


# --------------------------------------------------------------------------- manifest

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


def _read_csv(path: Path, *, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise CorpusError(f"{what} {path} does not exist")
    try:
        # dtype=str keeps codes such as speaker "03" as written; "" stays "" (not NaN)
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CorpusError(f"cannot read {what} {path}: {exc}") from exc


def _to_age(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "" or "unknown": age is optional metadata
        return math.nan


def _manifest_path(
    raw: str, base: Path, *, allow_absolute: bool
) -> tuple[str, Path]:
    """(path for the clip table, resolved file) of one manifest entry, or ``_Unusable``."""
    text = raw.strip()
    if not text:
        raise _Unusable("empty path")
    given = Path(text)
    if given.is_absolute() and not allow_absolute:
        raise _Unusable("absolute path not allowed (pass allow_absolute=True to accept)")
    target = given if given.is_absolute() else base / given
    resolved = target.resolve()
    inside = resolved.is_relative_to(base)
    if not inside and not allow_absolute:
        raise _Unusable(
            f"path escapes the manifest folder {base} (pass allow_absolute=True to accept)"
        )
    if not resolved.is_file():
        raise _Unusable("file not found")
    if not inside:
        return resolved.as_posix(), resolved
    lexical = Path(os.path.normpath(target))
    # keep the name as listed (a symlink stays a symlink) when it lies inside the base
    shown = lexical if lexical.is_relative_to(base) else resolved
    return shown.relative_to(base).as_posix(), resolved


def _cell(row: Mapping[str, object], column: str) -> str:
    """A manifest cell as stripped text; "" when the column or the value is missing."""
    value = row.get(column)
    return value.strip() if isinstance(value, str) else ""


def _manifest_row(
    row: Mapping[str, str], base: Path, *, allow_absolute: bool
) -> tuple[Fields, Path]:
    path, resolved = _manifest_path(_cell(row, "path"), base, allow_absolute=allow_absolute)
    try:
        emotion = emotion_code(_cell(row, "emotion"))
    except CorpusError:
        raise _Unusable(f"unknown emotion {_cell(row, 'emotion')!r}") from None
    fields: Fields = {c: _cell(row, c) for c in _MANIFEST_OPTIONAL}
    fields.update(path=path, dataset="manifest", emotion=emotion, age=_to_age(_cell(row, "age")))
    return fields, resolved


def _scan_manifest(
    manifest: Path, *, allow_absolute: bool
) -> tuple[Path, list[Fields], list[Fields]]:
    table = _read_csv(manifest, what="manifest")
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in _MANIFEST_REQUIRED if c not in table.columns]
    if missing:
        raise CorpusError(
            f"manifest {manifest} has no {' or '.join(repr(c) for c in missing)} column "
            f"(columns found: {', '.join(table.columns) or 'none'}; "
            f"expected path,emotion[,speaker,sentence,intensity,sex,age])"
        )
    base = manifest.parent.resolve()
    records: list[Fields] = []
    skipped: list[Fields] = []
    first_row: dict[Path, int] = {}
    for number, row in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        try:
            fields, resolved = _manifest_row(row, base, allow_absolute=allow_absolute)
            if resolved in first_row:
                raise _Unusable(f"duplicate clip: same file as manifest line {first_row[resolved]}")
        except _Unusable as reason:
            skipped.append({"path": _cell(row, "path"), "reason": str(reason)})
            continue
        first_row[resolved] = number
        records.append(fields)
    return base, records, skipped


# --------------------------------------------------------------------------- clip table


def _without_suffix(path: str) -> str:
    return str(PurePosixPath(path).with_suffix(""))


def _assign_clip_ids(records: list[Fields]) -> tuple[list[Fields], list[Fields]]:
    """Give each record a clip_id: its stem, or its path without extension where stems collide.

    Two files that differ only by extension (``a.wav``/``a.flac`` in one folder) are one clip:
    the first by path is kept, the other is returned as skipped.
    """
    ordered = sorted(records, key=lambda r: str(r["path"]))
    kept: list[Fields] = []
    skipped: list[Fields] = []
    first_path: dict[str, str] = {}
    for record in ordered:
        key = _without_suffix(str(record["path"]))
        if key in first_path:
            reason = f"duplicate clip: same name as {first_path[key]}"
            skipped.append({"path": record["path"], "reason": reason})
            continue
        first_path[key] = str(record["path"])
        kept.append(record)
    stems = [PurePosixPath(str(r["path"])).stem for r in kept]
    shared = {stem for stem, count in Counter(stems).items() if count > 1}
    with_ids = [
        {**r, "clip_id": _without_suffix(str(r["path"])) if stem in shared else stem}
        for r, stem in zip(kept, stems)
    ]
    return with_ids, skipped


def _clip_frame(records: Sequence[Fields]) -> pd.DataFrame:
    defaults: Fields = {c: "" for c in _STRING_COLUMNS} | {"age": math.nan}
    rows = [{**defaults, **{c: r[c] for c in CLIP_COLUMNS if c in r}} for r in records]
    frame = pd.DataFrame.from_records(rows, columns=CLIP_COLUMNS)
    # pandas 3 infers its new `str` dtype; PyTables wants plain object columns
    return frame.astype({c: object for c in _STRING_COLUMNS} | {"age": "float64"})


def _skipped_frame(records: Sequence[Fields]) -> pd.DataFrame:
    rows = sorted(({"path": str(r["path"]), "reason": str(r["reason"])} for r in records),
                  key=lambda r: r["path"])
    return pd.DataFrame.from_records(rows, columns=SKIPPED_COLUMNS).astype(object)


def _choose_dataset(dataset: str, manifest: str | Path | None) -> str:
    name = dataset.strip().lower()
    if name not in DATASETS:
        raise CorpusError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if manifest is not None and name not in ("auto", "manifest"):
        raise CorpusError(
            f"a manifest is read with dataset 'manifest', not {name!r} "
            f"(--dataset manifest --manifest CSV)"
        )
    if manifest is not None:
        return "manifest"
    if name == "manifest":
        raise CorpusError("dataset 'manifest' needs a manifest CSV (--manifest CSV)")
    return name


def _no_clips(where: str, n_files: int, skipped: Sequence[Fields]) -> CorpusError:
    example = f" (e.g. {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
    return CorpusError(
        f"no usable clips in {where}: {n_files} files found, {len(skipped)} skipped{example}"
    )


def scan(
    root: str | Path,
    *,
    dataset: str = "auto",
    manifest: str | Path | None = None,
    emotions: Sequence[str] | None = None,
    allow_absolute: bool = False,
) -> ScanResult:
    """Turn a corpus folder (or a manifest CSV) into a clip table, reading file names only.

    Args:
        root: the data folder. Ignored when a manifest is read: manifest paths are relative to
            the manifest's own folder.
        dataset: ``"auto"`` (detect from the names), one of :data:`ADAPTERS`, or
            ``"manifest"``. Giving ``manifest`` with ``"auto"`` means ``"manifest"``.
        manifest: CSV with columns ``path,emotion`` and optionally ``speaker, sentence,
            intensity, sex, age``. Emotions may be codes or names (``anger``, ``happy``).
        emotions: keep only clips with these codes (``None`` or empty: keep all). Filtered
            clips are not failures and do not appear in ``skipped``.
        allow_absolute: accept manifest paths that are absolute or lie outside the manifest's
            folder (they appear as absolute paths in ``clips.path``).

    Returns:
        A :class:`ScanResult`: ``clips`` (columns :data:`CLIP_COLUMNS`, sorted by path),
        ``skipped`` (path, reason) and ``base`` (what relative paths are relative to).

    Raises:
        CorpusError: missing folder or manifest, no audio, unknown layout, a manifest without
            ``path``/``emotion`` columns, or no usable clip left.
        SerError: an unknown code in ``emotions``.
    """
    wanted = parse_emotions(emotions)
    name = _choose_dataset(dataset, manifest)
    if name == "manifest":
        manifest_path = Path(manifest)  # type: ignore[arg-type]
        base, records, skipped = _scan_manifest(manifest_path, allow_absolute=allow_absolute)
        where = f"manifest {manifest_path}"
    else:
        folder = _check_root(root)
        files = find_audio(folder)
        if not files:
            raise _no_audio(folder)
        name = _detect(folder, files) if name == "auto" else name
        adapter = ADAPTERS[name]
        records, skipped = _parse_files(files, adapter)
        if adapter.enrich is not None and records:
            records = adapter.enrich(records, folder)
        base, where = folder.resolve(), f"{folder} (read as {adapter.name})"
    n_files = len(records) + len(skipped)
    records, duplicates = _assign_clip_ids(records)
    skipped = skipped + duplicates
    if not records:
        raise _no_clips(where, n_files, skipped)
    if wanted:
        present = sorted({str(r["emotion"]) for r in records})
        records = [r for r in records if r["emotion"] in wanted]
        if not records:
            raise CorpusError(
                f"no clip in {where} has emotion {', '.join(wanted)} "
                f"(present: {', '.join(present)}; {n_files} files found, "
                f"{len(skipped)} skipped)"
            )
    return ScanResult(clips=_clip_frame(records), skipped=_skipped_frame(skipped), base=base, dataset=name)
