"""An evaluation a person can listen to: ``report.html`` beside ``metrics.json`` and ``predictions.csv``.

:func:`write_evaluation_page` reads what :func:`ser.evaluation.evaluator.evaluate` wrote into an
evaluation folder and adds ``report.html`` plus its assets under ``report_files/``:

- UAR, accuracy and macro-F1 at the top, then a per-class table (precision, recall, F1, support);
- the confusion matrix, counts and row-normalised, as an image;
- for each of the (top 5) most-confused pairs, a few of its clips, drawn with a seeded generator
  from the original (``augment == "none"``) rows only: a player (a 16-bit PCM WAV copy of at most
  :data:`~ser.report.explore.MAX_PLAYER_SECONDS` seconds), the true and predicted labels and the
  model's probabilities for that clip;
- the training curves, from the ``history.csv`` beside the checkpoint, when there is one.

Like ``ser explore``'s page it needs no network and no JavaScript and links only relative paths,
so the evaluation folder can be zipped and opened anywhere. The audio is found through the store
the evaluation names (its ``meta.path`` values, relative to the data folder the store records);
when the store or its data folder is not on this machine the page still builds and says so where
the players would be.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ser import __version__
from ser.audio.decode import load_audio
from ser.errors import AudioError, SerError, StoreError
from ser.report.explore import (_CSS, MAX_PLAYER_SECONDS, _e, _href, _img, _probe, _reason, _safe_name,
                                _store_base, _table)
from ser.report.plots import plot_confusion, plot_history
from ser.report.runs import confusion_title

#: The page's own folder beside report.html: figures, and player copies under ``audio/``.
ASSETS = "report_files"
#: How many of the most-confused pairs get clips.
TOP_PAIRS = 5
_GENERATOR = f"ser report {__version__}"
_PAGE_CSS = _CSS + """
.scores { display: flex; gap: 1.5em; margin: .6em 0 1em; }
.score { border: 1px solid #ccc; border-radius: 6px; padding: .4em 1em; text-align: center; }
.score b { display: block; font-size: 1.6em; }
.probs td { border: none; padding: .05em .4em; } .probs .bar { background: #4C72B0; height: .8em; }
.probs tr.true td:first-child { color: #2a7d2a; font-weight: bold; }
.probs tr.pred td:first-child { color: #b03030; font-weight: bold; }
.probs tr.true .bar { background: #2a7d2a; } .probs tr.pred .bar { background: #b03030; }
.clip { border: 1px solid #ddd; border-radius: 6px; padding: .5em; max-width: 340px; }
"""


@dataclass
class _Audio:
    """Where the evaluated clips' audio lies: ``base / paths[clip_id]``, or why it cannot be had."""

    base: Path | None
    paths: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class _Clip:
    clip_id: str
    speaker: str
    true: str
    predicted: str
    probs: dict[str, float]
    audio: str | None = None  # relative link to the player copy; None: no player
    duration_s: float = float("nan")
    shown_s: float = float("nan")


@dataclass
class _Pair:
    true: str
    predicted: str
    count: int
    rate: float
    clips: list[_Clip]
    n_original: int  # original rows of the pair the clips were drawn from


# --------------------------------------------------------------------------- picking clips


def clip_order(predictions: pd.DataFrame, true: str, predicted: str, seed: int) -> pd.DataFrame:
    """The original rows of ``predictions`` whose ``true`` class was ``predicted`` as another one,
    in the order they are tried as the pair's sample clips.

    Rows are sorted by store row, then permuted by ``default_rng([seed, crc32("TRUE>PRED")])``: each
    pair has its own generator, so its picks depend neither on the other pairs nor on their order.
    """
    mask = ((predictions["true"].astype(str) == true) & (predictions["predicted"].astype(str) == predicted)
            & (predictions["augment"].astype(str) == "none"))
    rows = predictions[mask].sort_values("row", kind="stable")
    order = np.random.default_rng([seed, zlib.crc32(f"{true}>{predicted}".encode())]).permutation(len(rows))
    return rows.iloc[order]


def _audio_source(store_path: str | Path | None) -> _Audio:
    """The data folder and each clip's path in it, from the evaluated store (if it is here)."""
    from ser.store import Store

    if not store_path:
        return _Audio(None, note="the evaluation does not name its store")
    path = Path(store_path)
    if not path.exists():
        return _Audio(None, note=f"the store {path} is not on this machine")
    try:
        with Store(path) as st:
            meta, info = st.meta(), st.info
    except StoreError as exc:
        return _Audio(None, note=f"the store {path} cannot be read ({exc})")
    base = _store_base(info)
    if base is None:
        return _Audio(None, note=f"the store {path} does not record its data folder")
    if not base.is_dir():
        return _Audio(None, note=f"the store's data folder {base} does not exist on this machine")
    orig = meta[meta["augment"].astype(str) == "none"]
    return _Audio(base, paths=dict(zip(orig["clip_id"].astype(str), orig["path"].astype(str))))


def _clip_of(row: pd.Series, labels: Sequence[str]) -> _Clip:
    return _Clip(clip_id=str(row["clip_id"]), speaker="" if pd.isna(row["speaker"]) else str(row["speaker"]),
                 true=str(row["true"]), predicted=str(row["predicted"]),
                 probs={lab: float(row[f"p_{lab}"]) for lab in labels})


def _player(clip: _Clip, audio: _Audio, assets: Path, k: int) -> str | None:
    """Write the clip's player copy (16-bit PCM WAV, its own rate, cut to MAX_PLAYER_SECONDS);
    the reason it could not be read, or None when it was written."""
    import soundfile as sf

    rel = audio.paths.get(clip.clip_id)
    if rel is None:
        return f"{clip.clip_id}: not in the store's original rows"
    path = audio.base / rel  # type: ignore[operator]
    try:
        sr = _probe(path)[1]
        y, duration = load_audio(path, sr=sr, max_seconds=MAX_PLAYER_SECONDS)
    except AudioError as exc:
        return f"{rel}: {_reason(exc, path)}"
    name = f"{clip.true}_as_{clip.predicted}_{k}_{_safe_name(clip.clip_id)}.wav"
    sf.write(str(assets / "audio" / name), np.clip(y, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
    clip.audio, clip.duration_s, clip.shown_s = f"{ASSETS}/audio/{name}", float(duration), len(y) / sr
    return None


def _pairs(metrics: dict[str, Any], predictions: pd.DataFrame, audio: _Audio, assets: Path, *,
           k: int, seed: int, problems: list[str]) -> list[_Pair]:
    """The top pairs with up to ``k`` clips each; clips whose audio fails are replaced by the next
    in :func:`clip_order` and their reasons added to ``problems``."""
    labels = metrics["labels"]
    out = []
    for p in metrics.get("most_confused", [])[:TOP_PAIRS]:
        order = clip_order(predictions, p["true"], p["predicted"], seed)
        clips: list[_Clip] = []
        for _, row in order.iterrows():
            if len(clips) >= k:
                break
            clip = _clip_of(row, labels)
            if audio.base is not None:
                problem = _player(clip, audio, assets, len(clips) + 1)
                if problem:
                    problems.append(problem)
                    continue
            clips.append(clip)
        out.append(_Pair(true=p["true"], predicted=p["predicted"], count=int(p["count"]),
                         rate=float(p.get("rate", p.get("share", 0.0))), clips=clips, n_original=len(order)))
    return out


# --------------------------------------------------------------------------- figures


def _history_of(eval_dir: Path, checkpoint: str | Path | None) -> Path | None:
    """``history.csv`` of the checkpoint's run folder: beside the checkpoint, or, when the recorded
    path does not resolve here, beside the evaluation folder if the checkpoint lies there too."""
    if not checkpoint:
        return None
    ckpt = Path(checkpoint)
    for candidate in (ckpt, eval_dir.parent / ckpt.name):
        if candidate.is_file() and (candidate.parent / "history.csv").is_file():
            return candidate.parent / "history.csv"
    return None


def _figures(metrics: dict[str, Any], history: Path | None, assets: Path) -> dict[str, Any]:
    """``confusion.png``, and ``curves.png`` when the history has two epochs or more (one epoch, a
    closed-form model's, would draw empty axes), under the assets folder; relative links, and the
    history's rows."""
    plot_confusion(np.array(metrics["confusion"]), metrics["labels"], assets / "confusion.png",
                   title=confusion_title(metrics))
    # "nan" (no validation rows) reads back as NaN
    rows = pd.read_csv(history).to_dict("records") if history is not None else []
    curves = None
    if len(rows) > 1:
        plot_history(rows, assets / "curves.png")
        curves = f"{ASSETS}/curves.png"
    return {"confusion": f"{ASSETS}/confusion.png", "curves": curves, "history": rows}


# --------------------------------------------------------------------------- html


def _head(metrics: dict[str, Any]) -> list[str]:
    """The document head, the title line, the headline scores and the navigation."""
    where = f"{metrics.get('model', '?')} on {Path(str(metrics.get('store', '?'))).name} [{metrics.get('split', '?')}]"
    scores = "".join(f'<div class="score" id="score-{key}">{label}<b>{metrics[key]:.3f}</b></div>'
                     for key, label in (("uar", "UAR"), ("accuracy", "accuracy"), ("f1_macro", "macro-F1")))
    excluded = metrics.get("excluded", 0)
    return [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{_e(_GENERATOR)}">',
        f"<title>ser report: {_e(where)}</title>", f"<style>{_PAGE_CSS}</style></head><body>",
        f"<h1>Evaluation: {_e(where)}</h1>", f'<div class="scores">{scores}</div>',
        f"<p>{metrics.get('n', '?')} clips scored"
        + (f" ({excluded} left out: emotions the model does not know)" if excluded else "")
        + (f"; store labels mapped: {_e(', '.join(f'{k} ({n})' for k, n in metrics['mapped'].items()))}"
           if metrics.get("mapped") else "")
        + f"; checkpoint {_e(metrics.get('checkpoint', '?'))}; store {_e(metrics.get('store', '?'))}. "
        "UAR (unweighted average recall) is the mean recall over the classes present; chance is "
        f"1/{len(metrics.get('labels_scored', metrics['labels']))}.</p>",
        '<nav><a href="#classes">per class</a><a href="#confusion">confusion</a>'
        '<a href="#confused">most-confused pairs</a><a href="#curves">training curves</a></nav>',
    ]


def _classes_html(metrics: dict[str, Any], confusion_png: str) -> list[str]:
    rows = [{"class": lab, "precision": f"{r['precision']:.3f}", "recall": f"{r['recall']:.3f}",
             "F1": f"{r['f1-score']:.3f}", "support": int(r["support"])}
            for lab, r in metrics["per_class"].items()]
    return ['<h2 id="classes">Per class</h2>',
            _table(rows, ["class", "precision", "recall", "F1", "support"]),
            '<h2 id="confusion">Confusion matrix</h2><p class="note">True class by row, predicted by '
            "column: counts on the left, each row divided by its total (recall) on the right.</p>",
            f'<div class="plots">{_img(confusion_png, "confusion matrix, counts and row-normalised")}</div>']


def _probs_html(clip: _Clip) -> str:
    rows = []
    for lab, p in sorted(clip.probs.items(), key=lambda kv: -kv[1]):
        cls = "true" if lab == clip.true else "pred" if lab == clip.predicted else ""
        rows.append(f'<tr class="{cls}" data-label="{_e(lab)}"><td>{_e(lab)}</td>'
                    f'<td style="width:160px"><div class="bar" style="width:{100 * p:.1f}%"></div></td>'
                    f'<td class="p">{p:.3f}</td></tr>')
    return f'<table class="probs">{"".join(rows)}</table>'


def _clip_html(clip: _Clip) -> str:
    speaker = f", speaker {_e(clip.speaker)}" if clip.speaker else ""
    player = ""
    if clip.audio is not None:
        cut = f", first {clip.shown_s:.1f} s" if clip.duration_s > clip.shown_s + 1e-3 else ""
        speaker += f" ({clip.duration_s:.2f} s{cut})"
        player = f'<audio controls preload="metadata" src="{_href(clip.audio)}"></audio>'
    return (f'<div class="clip" data-clip="{_e(clip.clip_id)}"><div><b>{_e(clip.clip_id)}</b>{speaker}</div>'
            f"<div>true <b>{_e(clip.true)}</b>, predicted <b>{_e(clip.predicted)}</b></div>"
            f"{player}{_probs_html(clip)}</div>")


def _pairs_html(pairs: list[_Pair], audio: _Audio, *, k: int, seed: int, problems: list[str]) -> list[str]:
    p = [f'<h2 id="confused">Most-confused pairs</h2><p class="note">The top {TOP_PAIRS} off-diagonal '
         f"cells; for each, up to {k} of its original clips (augmented copies left out), drawn with seed "
         f"{seed}. Players hold 16-bit WAV copies cut to at most {MAX_PLAYER_SECONDS:g} s; bars are the "
         "model's probabilities (green: the true class, red: the predicted one).</p>"]
    if audio.base is None:
        p.append(f'<p class="note" id="no-audio">Audio is not available: {_e(audio.note)}; '
                 "the clips are listed without players.</p>")
    if not pairs:
        p.append('<p class="note">No confusions: every clip was predicted as its true class.</p>')
    for pair in pairs:
        p.append(f'<section class="pair" data-pair="{_e(pair.true)}&gt;{_e(pair.predicted)}">'
                 f"<h3>{_e(pair.true)} predicted as {_e(pair.predicted)}: {pair.count} clip{'s' * (pair.count != 1)} "
                 f"({pair.rate:.0%} of {_e(pair.true)})</h3>")
        if not pair.clips:
            p.append(f'<p class="note">No original clip of this pair to show ({pair.n_original} found).</p>')
        p += [_clip_html(c) for c in pair.clips]
        p.append("</section>")
    if problems:
        p.append("<p>Clips whose audio could not be read (the next clip took their place):</p>"
                 "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in problems) + "</ul>")
    return p


def _curves_html(curves_png: str | None, history: list[dict[str, Any]]) -> list[str]:
    p = ['<h2 id="curves">Training curves</h2>']
    if curves_png:
        p.append(f'<div class="plots">{_img(curves_png, "loss and accuracy per epoch")}</div>')
    elif history:
        keys = [k for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "val_uar")
                if k in history[0] and np.isfinite(float(history[0][k]))]
        p.append('<p class="note">One epoch only (a model fitted in one step, such as logreg or svm): '
                 "no curves to draw. Its scores:</p>"
                 + _table([{k: f"{float(history[0][k]):.3f}" for k in keys}], keys))
    else:
        p.append('<p class="note">No training history: no history.csv beside the checkpoint.</p>')
    return p


# --------------------------------------------------------------------------- entry point


def _prepare_assets(eval_dir: Path, audio: _Audio) -> Path:
    """``eval_dir/report_files`` (and its ``audio/``), emptied of an earlier report's own files;
    refused when its ``audio/`` folder would be the one holding the corpus's audio."""
    assets = eval_dir / ASSETS
    players = (assets / "audio").resolve()
    if audio.base is not None and any((audio.base / p).resolve().parent == players for p in audio.paths.values()):
        raise SerError(f"{eval_dir}: {ASSETS}/audio holds the corpus's own audio files, which the report "
                       "would overwrite; evaluate into another folder")
    report = eval_dir / "report.html"
    if report.is_file() and 'content="ser report' in report.read_text(
            encoding="utf-8", errors="replace"):
        for old in list(assets.glob("*.png")) + list((assets / "audio").glob("*.wav")):
            old.unlink()
    (assets / "audio").mkdir(parents=True, exist_ok=True)
    return assets


def _read_evaluation(eval_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    metrics_path, preds_path = eval_dir / "metrics.json", eval_dir / "predictions.csv"
    for path in (metrics_path, preds_path):
        if not path.is_file():
            raise SerError(f"{path} not found: is {eval_dir} an evaluation folder (ser evaluate --out)?")
    metrics = json.loads(metrics_path.read_text())
    if "fold_accuracy_mean" in metrics:
        raise SerError(f"{eval_dir} is a cross-validation folder; the report page reads one evaluation")
    preds = pd.read_csv(preds_path, dtype={"clip_id": str, "speaker": str, "augment": str})
    return metrics, preds


def write_evaluation_page(eval_dir: str | Path, *, checkpoint: str | Path | None = None,
                          clips_per_pair: int = 3, seed: int = 42) -> Path:
    """Write ``eval_dir/report.html`` (assets under ``eval_dir/report_files``); returns its path.

    Args:
        eval_dir: a folder :func:`ser.evaluation.evaluator.evaluate` wrote (``metrics.json``,
            ``predictions.csv``).
        checkpoint: the evaluated checkpoint, whose folder's ``history.csv`` gives the training
            curves [default: the one ``metrics.json`` names].
        clips_per_pair: clips shown per most-confused pair (0: none).
        seed: seeds each pair's pick (:func:`clip_order`).

    Raises:
        SerError: ``eval_dir`` lacks metrics.json or predictions.csv, or ``clips_per_pair < 0``.
    """
    if clips_per_pair < 0:
        raise SerError(f"clips_per_pair must be >= 0, got {clips_per_pair}")
    eval_dir = Path(eval_dir)
    metrics, preds = _read_evaluation(eval_dir)
    audio = _audio_source(metrics.get("store"))
    assets = _prepare_assets(eval_dir, audio)
    figures = _figures(metrics, _history_of(eval_dir, checkpoint or metrics.get("checkpoint")), assets)
    problems: list[str] = []
    pairs = _pairs(metrics, preds, audio, assets, k=clips_per_pair, seed=seed, problems=problems)
    page = _head(metrics) + _classes_html(metrics, str(figures["confusion"]))
    page += _pairs_html(pairs, audio, k=clips_per_pair, seed=seed, problems=problems)
    page += _curves_html(figures["curves"], figures["history"])
    page.append(f'<p class="note">Written by {_e(_GENERATOR)}.</p></body></html>')
    out = eval_dir / "report.html"
    out.write_text("\n".join(page) + "\n", encoding="utf-8")
    return out


def evaluation_dirs(run_dir: str | Path) -> list[Path]:
    """The evaluation folders ``ser report RUN_DIR`` writes pages for: ``run_dir`` itself when it
    holds ``metrics.json``, else its ``eval-*`` subfolders that do (``ser evaluate``'s default)."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return [run_dir]
    found = sorted(p.parent for p in run_dir.glob("*/metrics.json") if (p.parent / "predictions.csv").is_file())
    if not found:
        raise SerError(f"{run_dir}: no evaluation found (no metrics.json there or in a subfolder); "
                       "run ser evaluate first")
    return found
