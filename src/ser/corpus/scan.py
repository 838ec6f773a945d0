"""Corpus folders -> clip tables: walk the folder, detect the layout, read each name with its
corpus's adapter (:mod:`ser.corpus.adapters`), or read a CSV manifest instead.

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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

import pandas as pd

from ser.corpus.adapters import (
    ADAPTERS,
    Adapter,
    Fields,
    ScanOptions,
    Unusable,
    emotion_code,
    read_csv_text,
    to_age,
)
from ser.corpus.labels import parse_emotions
from ser.errors import CorpusError

__all__ = [
    "AUDIO_EXTENSIONS", "CLIP_COLUMNS", "DATASETS", "SKIPPED_COLUMNS", "ScanOptions", "ScanResult",
    "detect_dataset", "find_audio", "scan",
]

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

_STRING_COLUMNS = [c for c in CLIP_COLUMNS if c != "age"]
_DETECT_SAMPLE = 200
_MANIFEST_REQUIRED = ("path", "emotion")
_MANIFEST_OPTIONAL = ("speaker", "sentence", "intensity", "sex")
#: Each scan option's command-line flag and the layout that reads it, for refusals.
_OPTION_USE: dict[str, tuple[str, str]] = {
    "speaker_regex": ("--speaker-regex", "it reads speakers from the names under emotion-named "
                      "folders (--dataset folders)"),
    "demographics": ("--demographics", "it is CREMA-D's actor table (--dataset cremad)"),
}

#: Every accepted ``dataset`` value (the ``--dataset`` choices): the adapters' names between
#: ``"auto"`` (detect the layout) and ``"manifest"`` (read a CSV), so a new adapter is a choice.
DATASETS: tuple[str, ...] = ("auto", *ADAPTERS, "manifest")


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


# --------------------------------------------------------------------------- folders


def _check_root(root: str | Path) -> Path:
    """``root`` as a Path, or a CorpusError naming it: missing, or not a folder."""
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
    """The adapter matching more than half of a sample of ``files``, or a CorpusError.

    Corpus-specific layouts come first: the generic ``folders`` layout is chosen only when none
    of them matches (RAVDESS sorted into emotion folders is still read as RAVDESS).
    """
    sample = _sample(files, _DETECT_SAMPLE)
    counts = {name: sum(a.matches(rel) for rel in sample) for name, a in ADAPTERS.items()}
    for fallback in (False, True):
        group = [name for name, a in ADAPTERS.items() if a.fallback == fallback]
        chosen = max(group, key=counts.__getitem__)  # ties go to the first registered
        if counts[chosen] * 2 > len(sample):
            return chosen
    best = max(counts, key=counts.__getitem__)
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

    Returns one of ``"cremad" | "emodb" | "ravdess" | "tess" | "savee" | "folders"``: the
    adapter whose layout matches more than half of (a sample of up to 200) audio file names;
    ``"folders"`` (emotion-named folders) only when no corpus-specific layout does.

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
    """(records, skipped): each file read by ``adapter``, or skipped with the reason."""
    records: list[Fields] = []
    skipped: list[Fields] = []
    for rel in files:
        try:
            fields = adapter.parse(rel)
        except Unusable as reason:
            skipped.append({"path": str(rel), "reason": str(reason)})
            continue
        records.append({**fields, "path": str(rel), "dataset": adapter.name})
    return records, skipped


# --------------------------------------------------------------------------- manifest

def _manifest_path(
    raw: str, base: Path, *, allow_absolute: bool
) -> tuple[str, Path]:
    """(path for the clip table, resolved file) of one manifest entry, or ``Unusable``."""
    text = raw.strip()
    if not text:
        raise Unusable("empty path")
    given = Path(text)
    if given.is_absolute() and not allow_absolute:
        raise Unusable("absolute path not allowed (pass allow_absolute=True to accept)")
    target = given if given.is_absolute() else base / given
    resolved = target.resolve()
    inside = resolved.is_relative_to(base)
    if not inside and not allow_absolute:
        raise Unusable(
            f"path escapes the manifest folder {base} (pass allow_absolute=True to accept)"
        )
    if not resolved.is_file():
        raise Unusable("file not found")
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
    """One manifest row as clip fields and its resolved file, or :class:`Unusable`."""
    path, resolved = _manifest_path(_cell(row, "path"), base, allow_absolute=allow_absolute)
    try:
        emotion = emotion_code(_cell(row, "emotion"))
    except CorpusError:
        raise Unusable(f"unknown emotion {_cell(row, 'emotion')!r}") from None
    fields: Fields = {c: _cell(row, c) for c in _MANIFEST_OPTIONAL}
    fields.update(path=path, dataset="manifest", emotion=emotion, age=to_age(_cell(row, "age")))
    return fields, resolved


def _scan_manifest(
    manifest: Path, *, allow_absolute: bool
) -> tuple[Path, list[Fields], list[Fields]]:
    """(the manifest's folder, records, skipped rows) of a manifest CSV."""
    table = read_csv_text(manifest, what="manifest")
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
                raise Unusable(f"duplicate clip: same file as manifest line {first_row[resolved]}")
        except Unusable as reason:
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
    """The clip table: columns :data:`CLIP_COLUMNS`, "" / NaN where a record lacks a value."""
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
    """The layout to read: a :data:`DATASETS` name, "manifest" whenever a manifest is given."""
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


def _configure(adapter: Adapter, options: ScanOptions, folder: Path) -> Adapter:
    """``adapter`` with ``options`` applied; a CorpusError for an option its layout would ignore."""
    for option in options.given():
        if option not in adapter.options:
            flag, use = _OPTION_USE[option]
            raise CorpusError(f"{flag} does not apply to {folder} read as {adapter.name}: {use}")
    return adapter.configured(options)


def _refuse_manifest_options(options: ScanOptions, manifest: Path) -> None:
    """A CorpusError when a folder-layout option is given with a manifest (it would be ignored)."""
    if options.given():
        flags = ", ".join(_OPTION_USE[o][0] for o in options.given())
        raise CorpusError(
            f"{flags} cannot be used with manifest {manifest}: a manifest lists each clip's "
            f"speaker, sex and age in its own columns"
        )


def _scan_folder(
    root: str | Path, name: str, options: ScanOptions
) -> tuple[str, Path, list[Fields], list[Fields]]:
    """Read a data folder's audio file names with one adapter (detected when ``name`` is "auto").

    Returns:
        (the adapter's name, the resolved folder, the clip records, the skipped files).
    """
    folder = _check_root(root)
    files = find_audio(folder)
    if not files:
        raise _no_audio(folder)
    name = _detect(folder, files) if name == "auto" else name
    adapter = _configure(ADAPTERS[name], options, folder)
    records, skipped = _parse_files(files, adapter)
    if adapter.enrich is not None and records:
        records = adapter.enrich(records, folder)
    return name, folder.resolve(), records, skipped


def _keep_emotions(
    records: list[Fields], wanted: Sequence[str], where: str, *, n_files: int, n_skipped: int
) -> list[Fields]:
    """The records whose emotion is in ``wanted``; a CorpusError if that leaves none."""
    present = sorted({str(r["emotion"]) for r in records})
    kept = [r for r in records if r["emotion"] in wanted]
    if not kept:
        raise CorpusError(
            f"no clip in {where} has emotion {', '.join(wanted)} "
            f"(present: {', '.join(present)}; {n_files} files found, "
            f"{n_skipped} skipped)"
        )
    return kept


def _read(
    root: str | Path, name: str, manifest: str | Path | None, options: ScanOptions, *,
    allow_absolute: bool,
) -> tuple[str, Path, list[Fields], list[Fields], str]:
    """(layout read, base folder, records, skipped, where for messages) of a folder or manifest."""
    if name == "manifest":
        manifest_path = Path(manifest)  # type: ignore[arg-type]
        _refuse_manifest_options(options, manifest_path)
        base, records, skipped = _scan_manifest(manifest_path, allow_absolute=allow_absolute)
        return name, base, records, skipped, f"manifest {manifest_path}"
    name, base, records, skipped = _scan_folder(root, name, options)
    return name, base, records, skipped, f"{Path(root)} (read as {name})"  # root as given


def scan(
    root: str | Path,
    *,
    dataset: str = "auto",
    manifest: str | Path | None = None,
    emotions: Sequence[str] | None = None,
    allow_absolute: bool = False,
    speaker_regex: str | None = None,
    demographics: str | Path | None = None,
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
        speaker_regex: ``dataset="folders"`` only: a regex searched in each file's stem whose
            group ``speaker`` (else its first group) is the speaker; a stem it does not match is
            skipped. Without it the folders layout's speakers are unknown ("").
        demographics: CREMA-D only: the actor table (``VideoDemographics.csv``) to join sex and
            age from, instead of one found beside the audio.

    Returns:
        A :class:`ScanResult`: ``clips`` (columns :data:`CLIP_COLUMNS`, sorted by path),
        ``skipped`` (path, reason) and ``base`` (what relative paths are relative to).

    Raises:
        CorpusError: missing folder or manifest, no audio, unknown layout, a manifest without
            ``path``/``emotion`` columns, no usable clip left; a bad ``speaker_regex``, a
            missing or malformed ``demographics`` table, or either one given for a layout that
            does not read it.
        SerError: an unknown code in ``emotions``.
    """
    wanted = parse_emotions(emotions)
    name = _choose_dataset(dataset, manifest)
    options = ScanOptions(speaker_regex=speaker_regex,
                          demographics=Path(demographics) if demographics is not None else None)
    name, base, records, skipped, where = _read(
        root, name, manifest, options, allow_absolute=allow_absolute)
    n_files = len(records) + len(skipped)
    records, duplicates = _assign_clip_ids(records)
    skipped = skipped + duplicates
    if not records:
        raise _no_clips(where, n_files, skipped)
    if wanted:
        records = _keep_emotions(records, wanted, where, n_files=n_files, n_skipped=len(skipped))
    return ScanResult(
        clips=_clip_frame(records), skipped=_skipped_frame(skipped), base=base, dataset=name
    )
