"""Look at a corpus before training on it: one folder with an offline HTML page.

``explore`` writes ``index.html`` plus PNGs beside it and short WAV copies of sample clips
under ``audio/``. The page needs no network, no JavaScript and only relative links, so the
folder can be zipped, mailed and opened from disk in any browser.

What it shows:

- clip counts per emotion (and per speaker, sex, intensity where the corpus knows them);
- a histogram of clip durations, read from file headers (``soundfile.info``, no decoding);
- per emotion, ``samples`` clips drawn with a seeded generator: a player, the waveform and
  the STFT in dB;
- with a feature store: per-emotion box plots of a few descriptors and the average mel-dB
  per emotion, from original (``augment == "none"``) rows only;
- a table of files that could not be used (unparseable names, unreadable headers, sample
  clips that failed to decode, and the store's own failures).
"""

from __future__ import annotations

import html
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from ser import __version__
from ser.audio.decode import load_audio
from ser.errors import AudioError, SerError
from ser.corpus.labels import EMOTION_NAMES, label_list

#: Player copies are cut to this length so every page stays small and loads fast.
MAX_PLAYER_SECONDS = 4.0
#: Descriptors plotted per emotion, in this order, when the store has them.
PREFERRED_DESCRIPTORS: tuple[str, ...] = ("rms_mean", "zcr_mean", "centroid_mean", "mfcc01_mean")
#: Units shown on the descriptor plots' y axes.
_DESCRIPTOR_UNITS = {
    "rms": "RMS amplitude (full scale = 1)",
    "zcr": "zero crossings per sample",
    "centroid": "spectral centroid (Hz)",
    "bandwidth": "spectral bandwidth (Hz)",
    "rolloff": "85% roll-off (Hz)",
    "flatness": "spectral flatness",
}
#: Clip-table columns that get a count plot when the corpus fills them in.
_GROUPINGS: tuple[str, ...] = ("emotion", "speaker", "sex", "intensity")
_UNREADABLE_COLUMNS = ["path", "reason", "found by"]
#: Files this module writes, so a rerun into the same folder can remove its own stale output.
_GENERATOR = f"ser explore {__version__}"
_OWN_PNG = re.compile(r"^(counts_\w+|durations|clip_\w+|descriptors|mel_by_emotion|mel_profiles)\.png$")
_MEL_CHUNK = 256  # store rows read per block when averaging mel images


@dataclass
class _Corpus:
    """The clips the page describes, wherever they came from."""

    clips: pd.DataFrame  # clip_id, path, emotion, speaker, sex, intensity, duration_s, sample_rate
    base: Path | None  # folder that ``clips.path`` is relative to; None: audio not available
    source: str  # one line for the page header
    audio_note: str = ""  # why the audio is not available, when base is None
    unreadable: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Sample:
    emotion: str
    clip_id: str
    speaker: str
    duration_s: float
    audio: str  # relative link, e.g. "audio/ANG_1_03a01Wa.wav"
    image: str  # relative link to the waveform + STFT PNG
    shown_s: float  # seconds in the player copy and plot (<= MAX_PLAYER_SECONDS)


# --------------------------------------------------------------------------- pure helpers


def stft_db(y: np.ndarray, sr: int, *, top_db: float = 80.0) -> tuple[np.ndarray, int]:
    """STFT magnitude in dB relative to the clip's peak, ``top_db`` dB of range.

    ``y`` is ``(n,)`` float audio at ``sr`` Hz. A periodic Hann window of about 32 ms (the next
    power of two at or above ``0.032 * sr`` samples), a hop of a quarter window, frames centred
    with reflect padding: the same framing as ``librosa.stft`` (numpy only, so the first call
    costs no JIT or import time). Returns ``(S_db, hop_length)``, ``S_db`` of shape
    ``(1 + n_fft // 2, 1 + n // hop_length)``.
    """
    n_fft = int(2 ** math.ceil(math.log2(max(64.0, 0.032 * sr))))
    hop = n_fft // 4
    x = np.asarray(y, dtype=np.float64)
    pad = n_fft // 2
    x = np.pad(x, pad, mode="reflect" if x.size > pad else "constant")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1]
    mag = np.abs(np.fft.rfft(frames * window, axis=1)).T
    db = 20.0 * np.log10(np.maximum(mag, 1e-10) / max(float(mag.max()), 1e-10))
    return np.maximum(db, -top_db).astype(np.float32), hop


def choose_descriptors(names: Sequence[str], k: int = 4) -> list[str]:
    """The descriptors to plot: those of :data:`PREFERRED_DESCRIPTORS` present, else the first ``k``."""
    chosen = [n for n in PREFERRED_DESCRIPTORS if n in names]
    return chosen or list(names[:k])


def sample_order(n_clips: int, emotion: str, seed: int) -> np.ndarray:
    """The order in which an emotion's clips are tried as samples: a permutation of ``n_clips``.

    Each emotion has its own generator, ``default_rng([seed, crc32(emotion)])``, so its picks
    do not depend on which other emotions the corpus holds.
    """
    return np.random.default_rng([seed, zlib.crc32(emotion.encode())]).permutation(n_clips)


def _safe_name(text: str) -> str:
    """A file-name-safe version of a clip id (clip ids may hold ``/`` or spaces)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "clip"


def _probe(path: Path) -> tuple[float, int]:
    """``(duration_s, sample_rate)`` from the file header only; :class:`AudioError` if unreadable.

    Headers are enough for the duration histogram and cost microseconds; decoding is left for
    the few sample clips (:func:`ser.audio.decode.load_audio`).
    """
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        if path.is_file() and path.stat().st_size == 0:
            raise AudioError(f"{path}: empty file (0 bytes)") from None
        raise AudioError(f"{path}: cannot read the audio header ({exc})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: no audio samples (empty clip)")
    return info.frames / info.samplerate, int(info.samplerate)


def _reason(exc: Exception, path: Path) -> str:
    """An :class:`AudioError` message without the leading path (the table has its own column)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


# --------------------------------------------------------------------------- sources


def _corpus_from_folder(data: Path, dataset: str, manifest: str | Path | None) -> _Corpus:
    from ser.corpus.scan import scan

    result = scan(data, dataset=dataset, manifest=manifest)
    base = Path(result.base)
    unreadable = [{"path": str(p), "reason": str(r), "found by": "scan (file name)"}
                  for p, r in zip(result.skipped["path"], result.skipped["reason"])]
    clips = result.clips.copy()
    durations, rates, ok = [], [], []
    for rel in clips["path"]:
        path = base / str(rel)
        try:
            duration, sr = _probe(path)
        except AudioError as exc:
            unreadable.append({"path": str(rel), "reason": _reason(exc, path), "found by": "header"})
            duration, sr = math.nan, 0
        durations.append(duration)
        rates.append(sr)
        ok.append(sr > 0)
    clips["duration_s"] = durations
    clips["sample_rate"] = rates
    clips = clips[np.asarray(ok, dtype=bool)].reset_index(drop=True)
    dataset_name = str(result.clips["dataset"].iloc[0]) if len(result.clips) else dataset
    where = f"manifest {manifest}" if manifest is not None else str(data)
    return _Corpus(clips=clips, base=base, unreadable=unreadable,
                   source=f"{where} (read as {dataset_name})")


def _store_base(info: dict[str, Any]) -> Path | None:
    """The folder a store's ``meta.path`` values are relative to, if the store says."""
    rc = info.get("run_config", {})
    if rc.get("manifest"):
        return Path(rc["manifest"]).parent
    return Path(rc["data"]) if rc.get("data") else None


def _corpus_from_store(store: Any) -> _Corpus:
    meta = store.meta()
    orig = meta[meta["augment"].astype(str) == "none"]
    clips = pd.DataFrame({c: orig[c].astype(str).to_numpy() if c in orig else ""
                          for c in ("clip_id", "path", "emotion", "speaker", "sex", "intensity")})
    clips["duration_s"] = orig["duration_s"].to_numpy(dtype=float)
    clips["sample_rate"] = 0  # the files' own rates are unknown until a sample is probed
    clips = clips.sort_values("path", kind="stable").reset_index(drop=True)  # as scan orders them
    base = _store_base(store.info)
    note = ""
    if base is None:
        note = f"the store {store.path} does not record its data folder"
    elif not base.is_dir():
        note = f"the store's data folder {base} does not exist on this machine"
        base = None
    return _Corpus(clips=clips, base=base, audio_note=note,
                   source=f"store {store.path} (dataset {store.info['run_config'].get('dataset', '?')})")


def _store_failures(store: Any) -> list[dict[str, str]]:
    failures = store.failures()
    return [{"path": str(p), "reason": str(r), "found by": "featurize (store failures)"}
            for p, r in zip(failures["path"], failures["reason"])]


# --------------------------------------------------------------------------- sections


def _count_plots(clips: pd.DataFrame, emotions: Sequence[str], out: Path) -> list[tuple[str, str]]:
    """``[(png, caption)]``: one bar plot per grouping the corpus knows."""
    from ser.report.plots import plot_counts

    made = []
    for column in _GROUPINGS:
        if column not in clips:
            continue
        values = clips[column].astype(str)
        if column != "emotion" and (values == "").all():
            continue  # the corpus does not know it
        counts = values.value_counts()
        order = list(emotions) if column == "emotion" else sorted(counts.index)
        labels = [v if v else "(unknown)" for v in order]
        png = f"counts_{column}.png"
        plot_counts(labels, [int(counts.get(v, 0)) for v in order], out / png,
                    title=f"clips per {column} ({len(clips)} clips)", xlabel=column)
        made.append((png, f"Clips per {column}."))
    return made


def _draw_samples(corpus: _Corpus, emotions: Sequence[str], out: Path, *, samples: int,
                  seed: int) -> dict[str, list[_Sample]]:
    """Pick, decode, copy and plot ``samples`` clips per emotion.

    Clips are tried in :func:`sample_order` (the clip table's rows of that emotion, by path); a
    clip that fails to decode is recorded in ``corpus.unreadable`` and the next one takes its place.
    """
    import soundfile as sf

    from ser.report.plots import plot_clip

    picked: dict[str, list[_Sample]] = {e: [] for e in emotions}
    if corpus.base is None or samples <= 0:
        return picked
    (out / "audio").mkdir(parents=True, exist_ok=True)
    for emotion in emotions:
        rows = corpus.clips[corpus.clips["emotion"] == emotion]
        for pos in sample_order(len(rows), emotion, seed):
            if len(picked[emotion]) >= samples:
                break
            row = rows.iloc[int(pos)]
            path = corpus.base / str(row["path"])
            try:
                sr = int(row["sample_rate"]) or _probe(path)[1]
                y, duration = load_audio(path, sr=sr, max_seconds=MAX_PLAYER_SECONDS)
            except AudioError as exc:
                corpus.unreadable.append({"path": str(row["path"]), "reason": _reason(exc, path),
                                          "found by": "decode (sample clip)"})
                continue
            k = len(picked[emotion]) + 1
            stem = f"{emotion}_{k}_{_safe_name(str(row['clip_id']))}"
            # 16-bit PCM WAV at the file's own rate: every browser plays it, whatever the source was
            sf.write(str(out / "audio" / f"{stem}.wav"), np.clip(y, -1.0, 1.0), sr,
                     subtype="PCM_16", format="WAV")
            spec, hop = stft_db(y, sr)
            shown = len(y) / sr
            cut = f", first {shown:.1f} s" if duration > shown + 1e-3 else ""
            plot_clip(y, sr, spec, out / f"clip_{stem}.png", hop_length=hop,
                      title=f"{emotion} - {row['clip_id']} ({duration:.2f} s{cut}, {sr} Hz)")
            picked[emotion].append(_Sample(
                emotion=emotion, clip_id=str(row["clip_id"]), speaker=str(row.get("speaker", "")),
                duration_s=float(duration), audio=f"audio/{stem}.wav", image=f"clip_{stem}.png",
                shown_s=shown))
    return picked


def _mean_mels(store: Any, rows: np.ndarray, emotions_of_rows: np.ndarray,
               true_frames: np.ndarray, emotions: Sequence[str]) -> tuple[dict[str, np.ndarray], int]:
    """Average mel-dB image per emotion over each clip's true frames (padding excluded).

    Returns ``({emotion: (n_mels, frames)}, frames)``, ``frames`` the longest clip's frame
    count; a frame no clip of an emotion reaches is NaN. Reads the store in blocks, so memory
    stays at one block whatever the corpus size.
    """
    n_mels, n_frames = store.info["shapes"]["mel"][1:]
    width = int(min(n_frames, max(1, int(true_frames.max(initial=1)))))
    sums = {e: np.zeros((n_mels, width)) for e in emotions}
    hits = {e: np.zeros(width) for e in emotions}
    for start in range(0, len(rows), _MEL_CHUNK):
        block = store.read("mel", rows[start:start + _MEL_CHUNK])[:, :, :width]
        for mel, emotion, frames in zip(block, emotions_of_rows[start:start + _MEL_CHUNK],
                                        true_frames[start:start + _MEL_CHUNK]):
            f = int(min(width, frames))
            sums[emotion][:, :f] += mel[:, :f]
            hits[emotion][:f] += 1
    means = {}
    for e in emotions:
        with np.errstate(invalid="ignore", divide="ignore"):
            means[e] = np.where(hits[e] > 0, sums[e] / np.maximum(hits[e], 1), np.nan)
    return means, width


def _store_section(store: Any, emotions: Sequence[str], out: Path) -> dict[str, Any]:
    """Descriptor box plots and average mel images from the store's original rows."""
    import librosa

    from ser.report.plots import plot_descriptor_boxes, plot_mean_mels, plot_mel_profiles

    meta = store.meta()
    orig = meta[meta["augment"].astype(str) == "none"]
    if len(orig) == 0:
        return {"note": "the store has no original (augment == 'none') rows yet"}
    rows = orig.index.to_numpy()
    emo = orig["emotion"].astype(str).to_numpy()
    present = [e for e in emotions if (emo == e).any()]
    names = choose_descriptors(store.descriptor_names)
    cols = [store.descriptor_names.index(n) for n in names]
    desc = store.read("descriptors", rows)[:, cols]
    values = {n: {e: desc[emo == e, j] for e in present} for j, n in enumerate(names)}
    ylabels = {n: _DESCRIPTOR_UNITS.get(n.rsplit("_", 1)[0], n) for n in names}
    plot_descriptor_boxes(values, out / "descriptors.png", ylabels=ylabels,
                          title=f"descriptors per emotion ({len(orig)} original clips)")

    fc = store.feature_config
    sr, hop = int(fc["sample_rate"]), int(fc["hop_length"])
    true_frames = (orig["n_frames"].to_numpy(dtype=np.int64) if "n_frames" in orig
                   else np.full(len(orig), store.info["shapes"]["mel"][2]))
    means, _ = _mean_mels(store, rows, emo, true_frames, present)
    counts = {e: int((emo == e).sum()) for e in present}
    plot_mean_mels(means, counts, out / "mel_by_emotion.png", sr=sr, hop_length=hop,
                   title="average mel spectrogram per emotion (dB)")
    n_mels = next(iter(means.values())).shape[0]
    band_hz = librosa.mel_frequencies(n_mels=n_mels, fmin=0.0, fmax=sr / 2.0, htk=True)
    profiles = {e: np.nanmean(m, axis=1) for e, m in means.items()}
    plot_mel_profiles(profiles, band_hz, out / "mel_profiles.png",
                      title="time-averaged mel spectrum per emotion")
    return {"n_rows": len(orig), "descriptors": names, "sr": sr, "hop": hop,
            "n_mels": n_mels, "complete": bool(store.info["complete"])}


# --------------------------------------------------------------------------- html

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .9em; } td, th { border: 1px solid #ccc; padding: .2em .5em; text-align: left; }
.plots img { max-width: 100%; margin: .3em .6em .3em 0; vertical-align: top; }
.clip { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; max-width: 520px; }
.clip img { max-width: 100%; } .clip audio { width: 100%; }
.note { color: #666; } nav a { margin-right: 1em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _href(rel: str) -> str:
    return quote(rel, safe="/")


def _img(rel: str, alt: str) -> str:
    return f'<img src="{_href(rel)}" alt="{_e(alt)}" loading="eager">'


def _table(rows: Iterable[dict[str, object]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c, ''))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class _Sections:
    """What the page shows besides the clip table: figures written under the report folder."""

    emotions: list[str]
    counts: list[tuple[str, str]]          # (png, caption) per grouping
    durations_png: str | None
    samples: dict[str, list[_Sample]]
    store_part: dict[str, Any] | None      # the store section's numbers, or {"note": why not}


def _page(corpus: _Corpus, sections: _Sections, *, n_samples: int, seed: int) -> str:
    """The whole ``index.html``: header, class balance, durations, samples, store, unreadable files."""
    p = _page_head(corpus, sections)
    p += _durations_html(corpus.clips, sections.durations_png)
    p += _samples_html(corpus, sections, n_samples=n_samples, seed=seed)
    if sections.store_part is not None:
        p += _store_html(sections.store_part)
    p.append('<h2 id="unreadable">Files that could not be used</h2>')
    if corpus.unreadable:
        p.append(_table(corpus.unreadable, _UNREADABLE_COLUMNS))
    else:
        p.append('<p class="note">None: every file found was read.</p>')
    p.append(f'<p class="note">Written by {_e(_GENERATOR)}.</p></body></html>')
    return "\n".join(p) + "\n"


def _page_head(corpus: _Corpus, sections: _Sections) -> list[str]:
    """The document head, the corpus summary line, the navigation and the class-balance plots."""
    clips, emotions = corpus.clips, sections.emotions
    rates = clips["sample_rate"].astype(int).value_counts().sort_index()
    rates_text = ", ".join(f"{r} Hz ({n})" for r, n in rates.items() if r > 0) or "not read"
    return [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{_e(_GENERATOR)}">',
        "<title>ser explore</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>Corpus exploration</h1>",
        f"<p>Source: {_e(corpus.source)}.<br>{len(clips)} readable clips, "
        f"{clips['speaker'].astype(str).replace('', np.nan).nunique()} speakers, "
        f"{len(emotions)} emotions ({_e(', '.join(emotions))}); sample rates: {_e(rates_text)}; "
        f"{len(corpus.unreadable)} file(s) could not be used (see <a href=\"#unreadable\">below</a>).</p>",
        '<nav><a href="#counts">class balance</a><a href="#durations">durations</a>'
        '<a href="#samples">samples</a>'
        + ('<a href="#store">features</a>' if sections.store_part is not None else "")
        + '<a href="#unreadable">unreadable files</a></nav>',
        '<h2 id="counts">Class balance</h2><div class="plots">',
        *(_img(png, caption) for png, caption in sections.counts), "</div>",
    ]


def _durations_html(clips: pd.DataFrame, durations_png: str | None) -> list[str]:
    """The durations histogram and its summary (seconds, from the file headers)."""
    d = clips["duration_s"].to_numpy(dtype=float)
    d = d[np.isfinite(d)]
    p = ['<h2 id="durations">Durations</h2>']
    if durations_png and d.size:
        p.append(f'<div class="plots">{_img(durations_png, "histogram of clip durations")}</div>'
                 f"<p>{d.size} clips: min {d.min():.2f} s, median {np.median(d):.2f} s, "
                 f"max {d.max():.2f} s, total {d.sum() / 60:.1f} min (from file headers).</p>")
    else:
        p.append('<p class="note">No durations known.</p>')
    return p


def _samples_html(corpus: _Corpus, sections: _Sections, *, n_samples: int, seed: int) -> list[str]:
    """One section per emotion: its clip count, then a player and a figure per sample clip."""
    p = [f'<h2 id="samples">Samples by emotion</h2><p class="note">Up to {n_samples} clips per '
         f"emotion, drawn with seed {seed}. Players hold 16-bit WAV copies cut to at most "
         f"{MAX_PLAYER_SECONDS:g} s; each figure shows the same audio: waveform above, STFT "
         "magnitude in dB (log-frequency axis) below.</p>"]
    if corpus.base is None:
        p.append(f'<p class="note">Audio is not available: {_e(corpus.audio_note)}; '
                 "pass --data DIR to listen to samples.</p>")
    for emotion in sections.emotions:
        n = int((corpus.clips["emotion"] == emotion).sum())
        name = EMOTION_NAMES.get(emotion, emotion.lower())
        p.append(f'<section class="emotion" id="emotion-{_e(emotion)}" data-emotion="{_e(emotion)}">'
                 f"<h3>{_e(emotion)} ({_e(name)}): {n} clips</h3>")
        chosen = sections.samples.get(emotion, [])
        if not chosen:
            p.append('<p class="note">No sample clip available.</p>')
        p += [_sample_html(s) for s in chosen]
        p.append("</section>")
    return p


def _sample_html(s: _Sample) -> str:
    cut = f", first {s.shown_s:.1f} s" if s.duration_s > s.shown_s + 1e-3 else ""
    speaker = f", speaker {_e(s.speaker)}" if s.speaker else ""
    return (f'<div class="clip"><div><b>{_e(s.clip_id)}</b>{speaker} '
            f"({s.duration_s:.2f} s{cut})</div>"
            f'<audio controls preload="metadata" src="{_href(s.audio)}"></audio>'
            f'{_img(s.image, f"waveform and STFT of {s.clip_id}")}</div>')


def _store_html(store_part: dict[str, Any]) -> list[str]:
    """The feature-store section: what the plots were made from, and the plots."""
    p = ['<h2 id="store">Features from the store</h2>']
    if "note" in store_part:
        p.append(f'<p class="note">{_e(store_part["note"])}.</p>')
        return p
    incomplete = "" if store_part["complete"] else " The store is incomplete (featurize is unfinished)."
    p.append(f"<p>{store_part['n_rows']} original clips (augmented copies left out); "
             f"descriptors {_e(', '.join(store_part['descriptors']))}; mel: "
             f"{store_part['n_mels']} bands at {store_part['sr']} Hz, hop "
             f"{store_part['hop']}; averages use each clip's true frames only.{_e(incomplete)}</p>"
             f'<div class="plots">{_img("descriptors.png", "descriptor box plots per emotion")}'
             f'{_img("mel_by_emotion.png", "average mel spectrogram per emotion")}'
             f'{_img("mel_profiles.png", "time-averaged mel spectrum per emotion")}</div>')
    return p


def _refuse_audio_folder(out: Path, corpus: _Corpus) -> None:
    """The report's ``audio/`` folder gets sample WAVs (and loses old ones): it must not be a
    folder that holds the corpus's own audio, nor may ``out`` be one of its files."""
    from ser.audio.decode import refuse_audio_overwrite

    refuse_audio_overwrite(out)
    if corpus.base is None:
        return
    players = (out / "audio").resolve()
    paths = [str(p) for p in corpus.clips["path"]] + [str(u["path"]) for u in corpus.unreadable]
    if any((corpus.base / p).resolve().parent == players for p in paths):
        raise SerError(f"--out {out}: its audio/ folder holds the corpus's own audio files, which the report "
                       "would overwrite or remove; choose a report folder elsewhere")


def _clear_own_output(out: Path) -> None:
    """Remove what an earlier ``explore`` wrote here (only if its index.html says it was us)."""
    index = out / "index.html"
    if not index.is_file():
        return
    if 'name="generator" content="ser explore' not in index.read_text(encoding="utf-8", errors="replace"):
        return
    for png in out.glob("*.png"):
        if _OWN_PNG.match(png.name):
            png.unlink()
    for wav in (out / "audio").glob("*.wav"):
        wav.unlink()


# --------------------------------------------------------------------------- entry point


def explore(out: str | Path, *, data: str | Path | None = None, store: str | Path | None = None,
            dataset: str = "auto", samples: int = 2, seed: int = 42,
            manifest: str | Path | None = None) -> Path:
    """Write an offline HTML report about a corpus (and optionally its feature store).

    Args:
        out: the report folder (created); gets ``index.html``, PNGs and ``audio/*.wav``.
        data: the audio folder (scanned like ``featurize`` does). With only ``store``, sample
            clips come from the store's data folder if it exists on this machine.
        store: a feature store: adds descriptor distributions and average mel-dB per emotion,
            from original rows; with no ``data``, also the counts and durations.
        dataset: corpus layout for ``data`` (``auto``, ``cremad``, ``emodb``, ...).
        samples: clips per emotion to play and plot (0: none).
        seed: seeds each emotion's pick (``default_rng([seed, crc32(emotion)])``).
        manifest: a CSV manifest (``path,emotion[,speaker]``) instead of a folder layout.

    Returns:
        The path of ``index.html``.

    Raises:
        SerError: neither ``data`` nor ``store`` given, ``samples < 0``; CorpusError or
            StoreError from reading them.
    """
    from ser.store import Store

    if data is None and store is None and manifest is None:
        raise SerError("nothing to explore: give a data folder (--data) or a feature store (--store)")
    if samples < 0:
        raise SerError(f"samples must be >= 0, got {samples}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SerError(f"--out {out} exists and is not a folder")
    st = Store(store, require_complete=False) if store is not None else None
    try:
        corpus = _open_corpus(out, st, data=data, dataset=dataset, manifest=manifest)
        sections = _draw_sections(corpus, st, out, samples=samples, seed=seed)
    finally:
        if st is not None:
            st.close()
    index = out / "index.html"
    index.write_text(_page(corpus, sections, n_samples=samples, seed=seed), encoding="utf-8")
    return index


def _open_corpus(out: Path, st: Any, *, data: str | Path | None, dataset: str,
                 manifest: str | Path | None) -> _Corpus:
    """The clips to describe (from the folder or manifest, else the store), with ``out`` made ready.

    ``out`` is checked before anything under it is written or removed, then created and
    cleared of an earlier report's own files.
    """
    if data is not None or manifest is not None:
        corpus = _corpus_from_folder(Path(data) if data is not None else Path("."), dataset, manifest)
    else:
        corpus = _corpus_from_store(st)
    _refuse_audio_folder(out, corpus)
    out.mkdir(parents=True, exist_ok=True)
    _clear_own_output(out)
    if st is not None:
        corpus.unreadable.extend(_store_failures(st))
    if len(corpus.clips) == 0:
        raise SerError(f"no readable clip in {corpus.source}; "
                       f"{len(corpus.unreadable)} file(s) could not be used")
    return corpus


def _draw_sections(corpus: _Corpus, st: Any, out: Path, *, samples: int, seed: int) -> _Sections:
    """Every figure of the page (counts, durations, sample clips, store plots), written to ``out``."""
    from ser.report.plots import plot_durations

    emotions = label_list(corpus.clips["emotion"].astype(str))
    counts = _count_plots(corpus.clips, emotions, out)
    d = corpus.clips["duration_s"].to_numpy(dtype=float)
    d = d[np.isfinite(d)]
    durations_png = None
    if d.size:
        durations_png = "durations.png"
        plot_durations(d, out / durations_png, title=f"clip durations ({d.size} clips)")
    picked = _draw_samples(corpus, emotions, out, samples=samples, seed=seed)
    store_part = _store_section(st, emotions, out) if st is not None else None
    return _Sections(emotions=list(emotions), counts=counts, durations_png=durations_png, samples=picked,
                     store_part=store_part)
