"""Emotion and class probabilities for new audio, through featurize's own feature code.

Two entry points:

- :func:`predict_files`: a list of files in, one result dict per file out (all in this process);
- :func:`predict_paths`: what ``ser predict`` runs: files, folders (recursive), manifest CSVs
  and ``-`` (paths on stdin) in, a table out (:func:`predictions_columns`). Decoding and feature
  extraction, the cost, run in ``workers`` processes (featurize's joblib/loky pool, one thread a
  worker); the model runs here, a chunk of files at a time. A file that cannot be read gets its
  reason in the ``error`` column and the batch goes on.

Checkpoints trained with per-speaker normalisation standardise each speaker's clips by that
speaker's own statistics; ``speaker_from`` says who the speaker of each file is
(:func:`parse_speaker_from`), else all the files given are taken as one speaker's.

This module imports neither torch nor the training code at import time: the pool's workers
import it to run :func:`_worker_chunk`, and only need the feature path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, TextIO

import numpy as np
import pandas as pd

from ser.errors import AudioError, SerError
from ser.features.config import FeatureConfig

if TYPE_CHECKING:  # torch and the training code load in the parent only, when a model is loaded
    from ser.training.checkpoint import Checkpoint
    from ser.training.fusion import Fusion

#: Files a worker extracts per task: few enough that the progress bar moves, enough to amortise
#: the dispatch (a 3 s clip costs ~2 ms).
CHUNK_FILES = 32
#: A local pool gets no more workers than files / this: starting a worker (spawn, imports) costs
#: about what extracting a few hundred 3 s clips does (benchmarks/predict_speed.py).
MIN_FILES_PER_WORKER = 200
#: Rows the model sees at once (bounds the memory of a mel model on a large speaker group).
MODEL_BATCH = 256
_ALL_FILES = "<all files>"  # the one speaker group when no speaker_from is given


def predict_files(checkpoint: str | Path, files: Sequence[str | Path], *, device: str = "cpu") -> list[dict[str, Any]]:
    """One result per file: ``{"file", "emotion", "probabilities": {label: p}}`` or ``{"file", "error"}``.

    A checkpoint trained with per-speaker normalisation treats the files given as one speaker's
    clips and standardises them by their own statistics (at least ``speakers.MIN_CLIPS`` files).
    A fusion feeds each member its own family and averages their probabilities.
    """
    from ser.audio.decode import load_audio
    from ser.features.extractor import extract
    from ser.training.fusion import Fusion, load_model

    ckpt = load_model(checkpoint)
    members = ckpt.members if isinstance(ckpt, Fusion) else [ckpt]
    cfg = FeatureConfig.from_dict(ckpt.feature_config)
    results: list[dict[str, Any]] = []
    feats: list[dict[str, np.ndarray]] = []
    for f in files:
        try:
            y, _ = load_audio(f, sr=cfg.sample_rate, max_seconds=cfg.max_seconds, min_samples=cfg.n_fft // 4)
        except AudioError as exc:
            results.append({"file": str(f), "error": str(exc)})
            continue
        feats.append(extract(y, cfg))
        results.append({"file": str(f)})
    if not feats:
        return results
    n_frames = np.array([x["n_frames"] for x in feats], dtype=np.int64)
    probs = [_member_probabilities(m, np.stack([x[m.family] for x in feats]), n_frames, device) for m in members]
    p = ckpt.combine(probs) if isinstance(ckpt, Fusion) else probs[0]
    ok = iter(p)
    for r in results:
        if "error" not in r:
            row = next(ok)
            r.update(emotion=ckpt.labels[int(np.argmax(row))],
                     probabilities={lab: float(v) for lab, v in zip(ckpt.labels, row)})
    return results


def _member_probabilities(ckpt: Checkpoint, x: np.ndarray, n_frames: np.ndarray, device: str) -> np.ndarray:
    """One checkpoint's class probabilities for the feature rows ``x`` of its family (``n_frames``:
    each clip's own frame count, which the mel family's speaker statistics need)."""
    if ckpt.train_config.get("speaker_norm"):
        from ser.training.speakers import speaker_statistics, standardize

        one = np.zeros(len(x), dtype=object)
        one[:] = "speaker"
        x = standardize(x, one, speaker_statistics(x, one, n_frames), n_frames)
    return _model_probabilities(ckpt, x, device)


def _model_probabilities(ckpt: Checkpoint, x: np.ndarray, device: Any) -> np.ndarray:
    """Softmax of ``ckpt``'s model on the rows ``x`` (already standardised if it wants that),
    :data:`MODEL_BATCH` rows at a time; ``(rows, classes)`` float32."""
    import torch

    model = ckpt.model.to(device).eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(x), MODEL_BATCH):
            logits = model(torch.from_numpy(np.ascontiguousarray(x[lo:lo + MODEL_BATCH])).to(device))
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(ckpt.labels)), dtype=np.float32)


# -- what to predict: files, folders, manifests, stdin ---------------------------------------------


def is_manifest(source: str | Path) -> bool:
    """Whether a source is read as a manifest CSV (an existing file named ``*.csv``)."""
    p = Path(source)
    return p.suffix.lower() == ".csv" and p.is_file()


def read_sources(sources: Iterable[str | Path], *, stdin: TextIO | None = None) -> pd.DataFrame:
    """The files to predict, in the order given: a table with ``path`` first, then the columns
    of the manifests read ("" where a row has none).

    Each source is a folder (its audio files, recursively, as featurize scans them: sorted), a
    manifest CSV (its ``path`` column, relative paths resolved against the CSV's folder, its
    other columns kept), ``-`` (one source a line from ``stdin``, default ``sys.stdin``; blank
    lines skipped) or a file (kept even when missing: its row reports why it cannot be read).
    """
    rows: list[dict[str, str]] = []
    for source in sources:
        if str(source) == "-":
            stream = sys.stdin if stdin is None else stdin
            listed = [line.strip() for line in stream.read().splitlines()]
            rows += [r for line in listed if line and line != "-" for r in _source_rows(line)]
        else:
            rows += _source_rows(source)
    table = pd.DataFrame.from_records(rows) if rows else pd.DataFrame({"path": []})
    return table.fillna("").astype(object).reset_index(drop=True)


def _source_rows(source: str | Path) -> list[dict[str, str]]:
    """The rows one source stands for (see :func:`read_sources`)."""
    from ser.corpus.scan import find_audio

    p = Path(source)
    if p.is_dir():
        return [{"path": str(p / rel)} for rel in find_audio(p)]
    if is_manifest(p):
        return _manifest_rows(p)
    return [{"path": str(source)}]


def _manifest_rows(csv: Path) -> list[dict[str, str]]:
    """A manifest's rows: ``path`` resolved against the CSV's folder, the other cells as text."""
    from ser.corpus.adapters import read_csv_text

    table = read_csv_text(csv, what="manifest")
    table.columns = [str(c).strip() for c in table.columns]
    named = [c for c in table.columns if c.lower() == "path"]
    if not named:
        raise SerError(f"manifest {csv} has no 'path' column (columns found: {', '.join(table.columns) or 'none'})")
    rows = []
    for row in table.to_dict("records"):
        text = str(row.pop(named[0])).strip()
        if text:  # a blank path cell is no file
            rows.append({"path": str(csv.parent / text), **{k: str(v) for k, v in row.items()}})
    return rows


# -- who the speaker of each file is ------------------------------------------------------------------


@dataclass(frozen=True)
class SpeakerFrom:
    """How ``--speaker-from`` names each file's speaker: ``kind`` is ``"regex"`` (the named group
    ``speaker`` of a match in the file name, else its first group) or ``"column"`` (a manifest
    column)."""

    kind: str
    value: str
    pattern: re.Pattern | None = field(default=None, compare=False)


def parse_speaker_from(spec: str | SpeakerFrom | None) -> SpeakerFrom | None:
    """``regex:PATTERN`` or ``column:NAME`` as a :class:`SpeakerFrom`; SerError otherwise."""
    if spec is None or isinstance(spec, SpeakerFrom):
        return spec
    kind, sep, value = str(spec).partition(":")
    if not sep or kind not in ("regex", "column") or not value.strip():
        raise SerError(f"--speaker-from {spec!r}: give regex:PATTERN (a group of the file name, e.g. "
                       r"'regex:^(\d+)_') or column:NAME (a manifest column)")
    if kind == "column":
        return SpeakerFrom("column", value.strip())
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise SerError(f"--speaker-from regex:{value}: not a regular expression ({exc})") from None
    if pattern.groups == 0:
        raise SerError(f"--speaker-from regex:{value}: the pattern needs a group, e.g. (?P<speaker>...), "
                       "that captures the speaker in the file name")
    return SpeakerFrom("regex", value, pattern)


def speaker_of(table: pd.DataFrame, how: SpeakerFrom | None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's speaker group and why it has none ("" where it has one), both ``(rows,)`` object.

    Without ``how`` every file is in one group.
    """
    n = len(table)
    speakers, errors = np.full(n, _ALL_FILES, dtype=object), np.full(n, "", dtype=object)
    if how is None:
        return speakers, errors
    if how.kind == "column":
        if how.value not in table.columns:
            raise SerError(f"--speaker-from column:{how.value}: no manifest given has that column "
                           f"(columns: {', '.join(c for c in table.columns if c != 'path') or 'none'})")
        speakers[:] = table[how.value].astype(str).str.strip().to_numpy()
        errors[speakers == ""] = f"no speaker: the row has no {how.value!r} value (--speaker-from column:{how.value})"
        return speakers, errors
    group = "speaker" if "speaker" in how.pattern.groupindex else 1
    for i, path in enumerate(table["path"]):
        match = how.pattern.search(Path(path).name)
        speakers[i] = (match.group(group) or "") if match else ""
        if not speakers[i]:
            errors[i] = f"no speaker: the file name does not match --speaker-from regex:{how.value}"
    return speakers, errors


# -- extraction, in the workers -----------------------------------------------------------------------


def _extract_chunk(paths: Sequence[str], features: FeatureConfig,
                   families: tuple[str, ...]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Decode and extract each file as featurize does (:func:`ser.featurize.worker.process_clip`).

    Returns each file's error ("" when it was read) and, per family and under "n_frames" (each
    clip's own frame count), the rows of the files read.
    """
    from ser.featurize.worker import TaskConfig, process_clip

    cfg = TaskConfig(features=features, augment=(), seed=0)
    errors: list[str] = []
    rows: dict[str, list[np.ndarray]] = {f: [] for f in (*families, "n_frames")}
    for path in paths:
        r = process_clip(path, Path(path).stem, "test", cfg)  # not a training clip: no augmentation
        errors.append(r.error or "")
        if r.error is None:
            for f in families:
                rows[f].append(getattr(r, f)[0])
            rows["n_frames"].append(np.int64(r.n_frames[0]))
    return errors, {f: np.stack(v) if v else np.zeros((0,)) for f, v in rows.items()}


_SET_UP_PID: int | None = None


def _worker_chunk(paths: Sequence[str], features: FeatureConfig,
                  families: tuple[str, ...]) -> tuple[list[str], dict[str, np.ndarray]]:
    """A pool worker's entry point: :func:`_extract_chunk`, the process limited to one thread and
    its malloc tuned on its first chunk (as featurize's workers are)."""
    global _SET_UP_PID
    if _SET_UP_PID != os.getpid():
        from ser.featurize.worker import limit_threads, tune_malloc

        limit_threads()
        tune_malloc()
        _SET_UP_PID = os.getpid()
    return _extract_chunk(paths, features, families)


def extraction_config(features: FeatureConfig, families: Sequence[str]) -> FeatureConfig:
    """The config to extract with: ``features`` itself, or, when no model reads the mel family,
    the same with one mel band. The descriptors do not depend on ``n_mels`` (their mel bands are
    ``n_desc_mels`` rows of their own; tests/evaluation/test_predict.py pins that they are equal,
    bit for bit), and the 2D mel spectrogram is about 40% of a 3 s clip's extraction."""
    if "mel" in families:
        return features
    return dataclasses.replace(features, n_mels=1)


def pool_workers(workers: int, n_files: int, min_files_per_worker: int = MIN_FILES_PER_WORKER) -> int:
    """How many processes extract ``n_files``: ``workers``, but no more than the files can pay
    for (:data:`MIN_FILES_PER_WORKER` each); 1 means this process does it."""
    return max(1, min(workers, n_files // max(1, min_files_per_worker)))


def feature_chunks(paths: Sequence[str], features: FeatureConfig, families: tuple[str, ...], *,
                   workers: int = 1) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
    """:func:`_extract_chunk` of successive chunks of ``paths``, in order, computed by ``workers``
    processes (featurize's loky pool; this process itself for one, limited to one thread while
    it extracts). Close the generator to stop the pool early."""
    size = CHUNK_FILES if workers <= 1 else max(1, min(CHUNK_FILES, math.ceil(len(paths) / (4 * workers))))
    chunks = [list(paths[lo:lo + size]) for lo in range(0, len(paths), size)]
    if workers <= 1:
        from ser.featurize.worker import limit_threads, tune_malloc

        tune_malloc()
        for chunk in chunks:
            restore = limit_threads()  # only while extracting: the model, between chunks, may use more
            try:
                result = _extract_chunk(chunk, features, families)
            finally:
                restore()
            yield result
        return
    from joblib import Parallel, delayed

    from ser.featurize.backends import compute_backend

    with compute_backend("loky", workers=workers):
        with Parallel(return_as="generator", pre_dispatch="4*n_jobs", batch_size=1) as pool:
            yield from pool(delayed(_worker_chunk)(chunk, features, families) for chunk in chunks)


# -- the model, in this process -----------------------------------------------------------------------


@dataclass
class _Scores:
    """Each member's probabilities for every row (NaN until known), and the rows' errors; the
    features of speaker-normalised members wait here until every file is read."""

    members: list
    errors: np.ndarray                                        # (rows,) "" or the reason
    probs: list[np.ndarray] = field(default_factory=list)     # per member, (rows, classes)
    held: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = len(self.errors), len(self.members[0].labels)
        self.probs = [np.full((n, k), np.nan) for _ in self.members]

    def add(self, index: np.ndarray, chunk_errors: list[str], feats: dict[str, np.ndarray], device: Any) -> None:
        """A chunk's results: ``index`` are its rows; the read ones are scored (or held)."""
        bad = np.array([bool(e) for e in chunk_errors], dtype=bool)
        self.errors[index[bad]] = np.array(chunk_errors, dtype=object)[bad]
        read = index[~bad]
        if not len(read):
            return
        for k, m in enumerate(self.members):
            if m.train_config.get("speaker_norm"):
                self.held.setdefault(k, []).append((read, feats[m.family], feats["n_frames"]))
            else:
                self.probs[k][read] = _model_probabilities(m, feats[m.family], device)

    def score_held(self, speakers: np.ndarray, device: Any) -> None:
        """Score the speaker-normalised members' rows, each speaker group by its own statistics;
        a group with too few readable files gets the reason in its rows' errors."""
        from ser.training.speakers import MIN_CLIPS, speaker_statistics, standardize

        for k, parts in self.held.items():
            rows = np.concatenate([r for r, _, _ in parts])
            x = np.concatenate([v for _, v, _ in parts])
            n_frames = np.concatenate([n for _, _, n in parts])
            groups = speakers[rows].astype(str)
            for spk in np.unique(groups):
                sel = groups == spk
                if sel.sum() < MIN_CLIPS:
                    self.errors[rows[sel]] = _too_few(spk, int(sel.sum()), MIN_CLIPS)
                    continue
                stats = speaker_statistics(x[sel], groups[sel], n_frames[sel])
                x_spk = standardize(x[sel], groups[sel], stats, n_frames[sel])
                self.probs[k][rows[sel]] = _model_probabilities(self.members[k], x_spk, device)


def _too_few(speaker: str, n: int, need: int) -> str:
    speaker = str(speaker)  # not numpy's str_, whose repr names its type
    if speaker == _ALL_FILES:
        return (f"per-speaker normalisation needs at least {need} readable clips of the speaker; only {n} of the "
                "files given could be read (give more, or --speaker-from to group the files by speaker)")
    return (f"speaker {speaker!r} has {n} readable clip(s); per-speaker normalisation needs at least {need} "
            "of each speaker")


# -- the whole run ----------------------------------------------------------------------------------------


def predict_paths(checkpoint: str | Path, sources: Iterable[str | Path], *, workers: int = 1,
                  speaker_from: str | SpeakerFrom | None = None, progress: bool = False, device: str = "cpu",
                  stdin: TextIO | None = None, min_files_per_worker: int = MIN_FILES_PER_WORKER) -> pd.DataFrame:
    """Predict every file that ``sources`` name (:func:`read_sources`), one row each, in order.

    Columns (:func:`predictions_columns`): ``path``, the manifests' other columns (renamed
    ``manifest_<name>`` where they would clash), ``speaker`` (with ``speaker_from="regex:..."``),
    ``emotion``, ``p_<label>`` per label, ``error`` ("" on success; else the reason, and
    ``emotion`` "" and the probabilities NaN). ``workers`` processes extract the features
    (:func:`pool_workers`), with a tqdm bar on stderr if ``progress``. A checkpoint or a fusion
    (each member fed its own family). ``speaker_from``: see :func:`parse_speaker_from`; only for
    checkpoints trained with per-speaker normalisation.

    Raises:
        SerError: no file named, a bad ``speaker_from``, or a checkpoint that cannot load.
    """
    from ser.training.device import pick_device
    from ser.training.fusion import Fusion, load_model

    ckpt = load_model(checkpoint)
    members = ckpt.members if isinstance(ckpt, Fusion) else [ckpt]
    how = _checked_speaker_from(speaker_from, members, checkpoint)
    table = read_sources(sources, stdin=stdin)
    if table.empty:
        raise SerError("no audio file to predict: the files, folders, manifests or stdin given list none")
    speakers, errors = speaker_of(table, how)
    scores, dev = _Scores(members, errors), pick_device(device)
    _run_chunks(table, scores, FeatureConfig.from_dict(ckpt.feature_config), workers=workers, progress=progress,
                device=dev, min_files_per_worker=min_files_per_worker)
    scores.score_held(speakers, dev)
    probs = ckpt.combine(scores.probs) if isinstance(ckpt, Fusion) else scores.probs[0]
    return _frame(table, ckpt.labels, probs, scores.errors, speakers if how and how.kind == "regex" else None)


def _checked_speaker_from(spec: str | SpeakerFrom | None, members: list, checkpoint: str | Path) -> SpeakerFrom | None:
    how = parse_speaker_from(spec)
    if how is not None and not any(m.train_config.get("speaker_norm") for m in members):
        raise SerError(f"--speaker-from is for checkpoints trained with per-speaker normalisation "
                       f"(--speaker-norm); {checkpoint} was not, so speakers do not change its predictions")
    return how


def _run_chunks(table: pd.DataFrame, scores: _Scores, features: FeatureConfig, *, workers: int, progress: bool,
                device: Any, min_files_per_worker: int) -> None:
    """Extract the rows not failed already, in chunks, scoring each chunk as it comes back."""
    from tqdm import tqdm

    todo = np.flatnonzero(scores.errors == "")
    paths = table["path"].astype(str).to_numpy()[todo].tolist()
    families = tuple(sorted({m.family for m in scores.members}))
    features = extraction_config(features, families)
    n_workers = pool_workers(workers, len(paths), min_files_per_worker)
    bar = tqdm(total=len(paths), unit="file", desc="predict", file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5, disable=not progress)
    done = 0
    with bar, contextlib.closing(feature_chunks(paths, features, families, workers=n_workers)) as chunks:
        try:
            for chunk_errors, feats in chunks:
                scores.add(todo[done:done + len(chunk_errors)], chunk_errors, feats, device)
                done += len(chunk_errors)
                bar.update(len(chunk_errors))
        except BrokenExecutor as exc:  # a worker process died: killed, or out of memory
            raise SerError(f"a predict worker died ({type(exc).__name__}: {str(exc).splitlines()[0]}) after "
                           f"{done} of {len(paths)} files; run again, with fewer --workers if memory ran out") from None


def predictions_columns(labels: Sequence[str]) -> list[str]:
    """The columns every predictions table ends with: emotion, one probability a label, error."""
    return ["emotion"] + [f"p_{lab}" for lab in labels] + ["error"]


def _frame(table: pd.DataFrame, labels: Sequence[str], probs: np.ndarray, errors: np.ndarray,
           speakers: np.ndarray | None) -> pd.DataFrame:
    """The predictions table (see :func:`predict_paths`)."""
    reserved = set(predictions_columns(labels)) | ({"speaker"} if speakers is not None else set())
    out = table.rename(columns={c: f"manifest_{c}" for c in table.columns if c in reserved}).copy()
    if speakers is not None:
        out["speaker"] = speakers
    ok = (errors == "") & np.isfinite(probs).all(axis=1)
    errors = np.where(ok | (errors != ""), errors, "no prediction")  # cannot happen; never a silent NaN row
    out["emotion"] = np.where(ok, np.asarray(labels, dtype=object)[np.nan_to_num(probs).argmax(1)], "")
    for k, lab in enumerate(labels):
        out[f"p_{lab}"] = np.where(ok, probs[:, k], np.nan)
    out["error"] = errors
    return out


# -- writing it out ---------------------------------------------------------------------------------------


def check_out(out: str | Path, sources: Iterable[str | Path]) -> None:
    """Refuse an ``--out`` that is an existing audio file or one of the manifests read."""
    from ser.audio.decode import refuse_audio_overwrite

    refuse_audio_overwrite(out)
    target = Path(out).resolve()
    for source in sources:
        if str(source) != "-" and is_manifest(source) and Path(source).resolve() == target:
            raise SerError(f"--out {out} is the manifest being read; choose another path")


def write_predictions(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write the table to ``out`` as CSV (atomically: a partial file never takes its place)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(out)
    return out


def labels_of(frame: pd.DataFrame) -> list[str]:
    """The labels of a predictions table, from its ``p_<label>`` columns, in order."""
    start = list(frame.columns).index("emotion") + 1
    return [c[2:] for c in frame.columns[start:] if c.startswith("p_")]


def json_record(row: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """One row as ``ser predict --json`` writes it: ``{"file", <manifest columns>, "emotion",
    "probabilities": {label: p}}``, or ``{"file", <manifest columns>, "error"}``."""
    record = {"file": row["path"]}
    record.update({k: v for k, v in row.items() if k not in set(predictions_columns(labels)) | {"path"}})
    if row["error"]:
        record["error"] = row["error"]
    else:
        record.update(emotion=row["emotion"], probabilities={lab: float(row[f"p_{lab}"]) for lab in labels})
    return record


def describe(row: dict[str, Any], labels: Sequence[str]) -> str:
    """One row as a readable line: ``file: EMOTION   (ANG 0.12  HAP 0.70 ...)`` or ``file: error: why``."""
    if row["error"]:
        reason = str(row["error"])
        reason = reason[len(str(row["path"])) + 2:] if reason.startswith(f"{row['path']}: ") else reason
        return f"{row['path']}: error: {reason}"
    probs = "  ".join(f"{lab} {float(row[f'p_{lab}']):.2f}" for lab in labels)
    return f"{row['path']}: {row['emotion']}   ({probs})"
