"""Tests for ser.report.evaluation_page: the evaluation page a person can listen to.

A logistic regression is fitted on the session's ``small_store`` (48 synthetic clips, seed 7) and
evaluated on its test split (15 clips; the tiny model confuses several pairs). The browser test
runs headless Chromium when it is installed (``.ci/install-chromium.sh``) and is skipped with its
reason otherwise; it reuses test_explore's check script.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser.errors import SerError
from ser.evaluation.evaluator import evaluate
from ser.featurize.job import featurize
from ser.report.evaluation_page import (ASSETS, TOP_PAIRS, clip_order, evaluation_dirs,
                                        write_evaluation_page)
from ser.report.explore import MAX_PLAYER_SECONDS
from ser.store import Store
from ser.training.loop import TrainConfig, train, write_history
from test_explore import CHROMIUM, _browser_check, _duration

SEED = 42
CLIPS = 3
QUIET = dict(log=lambda m: None)


class _Page(HTMLParser):
    """Links, images, pair sections and, per clip, its player and the probabilities shown."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.img: list[str] = []
        self.pairs: list[str] = []  # data-pair of each section, in page order
        self.clips: list[dict] = []  # {pair, clip, audio: [src], probs: {label: text}}
        self.scripts = 0
        self._label: str | None = None
        self._in_p = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.links += [str(a[k]) for k in ("src", "href") if a.get(k) is not None]
        if tag == "section" and a.get("data-pair"):
            self.pairs.append(str(a["data-pair"]))
        elif tag == "div" and a.get("data-clip"):
            self.clips.append({"pair": self.pairs[-1], "clip": a["data-clip"], "audio": [], "probs": {}})
        elif tag == "audio":
            assert self.clips, "a player outside a clip"
            self.clips[-1]["audio"].append(str(a.get("src")))
        elif tag == "img":
            self.img.append(str(a.get("src")))
        elif tag == "script":
            self.scripts += 1
        elif tag == "tr" and a.get("data-label"):
            self._label = str(a["data-label"])
        elif tag == "td" and a.get("class") == "p":
            self._in_p = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_p = False

    def handle_data(self, data: str) -> None:
        if self._in_p and self._label is not None:
            self.clips[-1]["probs"][self._label] = data.strip()


def _parse(page: Path) -> _Page:
    parsed = _Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    return parsed


def _train_and_evaluate(store: Path, run: Path) -> Path:
    train(store, TrainConfig(model="logreg"), run, device="cpu", **QUIET)
    ev = evaluate(run / "best.pt", out_dir=run / "eval-test", device="cpu", **QUIET)
    assert ev.metrics["most_confused"], "the tiny model confuses nothing: the pair tests would check nothing"
    return run / "eval-test"


@pytest.fixture(scope="module")
def evaluation(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run/eval-test`` of a logistic regression trained on ``small_store`` (``run/history.csv`` too)."""
    return _train_and_evaluate(small_store, tmp_path_factory.mktemp("evalpage") / "run")


@pytest.fixture(scope="module")
def page(evaluation: Path) -> Path:
    out = write_evaluation_page(evaluation, clips_per_pair=CLIPS, seed=SEED)
    assert out == evaluation / "report.html"
    return out


def _metrics(eval_dir: Path) -> dict:
    return json.loads((eval_dir / "metrics.json").read_text())


def _predictions(eval_dir: Path) -> pd.DataFrame:
    return pd.read_csv(eval_dir / "predictions.csv", dtype={"clip_id": str})


def _copy_evaluation(evaluation: Path, to: Path) -> Path:
    """The evaluation's numbers only (no page), in another folder: the stored paths are absolute."""
    to.mkdir(parents=True)
    for name in ("metrics.json", "predictions.csv"):
        shutil.copy(evaluation / name, to / name)
    return to


# --------------------------------------------------------------------------- the page


def test_page_links_are_relative_and_exist(page: Path) -> None:
    root = page.parent.resolve()
    parsed = _parse(page)
    assert parsed.links and parsed.scripts == 0
    for link in parsed.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, f"not a relative link: {link}"
        if not parts.path:  # "#anchor"
            assert parts.fragment and f'id="{parts.fragment}"' in page.read_text(encoding="utf-8"), link
            continue
        assert not parts.path.startswith("/"), f"absolute path: {link}"
        target = (page.parent / unquote(parts.path)).resolve()
        assert target.is_relative_to(root / ASSETS), f"{link} is not in {ASSETS}/"
        assert target.is_file(), f"{link} does not exist"
    assert parsed.img == [f"{ASSETS}/confusion.png"]  # logreg is fitted in one epoch: no curves
    assert "One epoch only" in page.read_text(encoding="utf-8")
    for png in parsed.img:
        data = (page.parent / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, png


def test_scores_and_per_class_table(page: Path, evaluation: Path) -> None:
    m = _metrics(evaluation)
    text = page.read_text(encoding="utf-8")
    for key, label in (("uar", "UAR"), ("accuracy", "accuracy"), ("f1_macro", "macro-F1")):
        assert f'id="score-{key}">{label}<b>{m[key]:.3f}</b>' in text, key
    assert text.index("score-uar") < text.index('id="classes"') < text.index('id="confused"')
    for label in m["labels"]:
        r = m["per_class"][label]
        row = (f"<tr><td>{label}</td><td>{r['precision']:.3f}</td><td>{r['recall']:.3f}</td>"
               f"<td>{r['f1-score']:.3f}</td><td>{int(r['support'])}</td></tr>")
        assert row in text, label


def test_players_hold_the_confused_pairs_clips(page: Path, evaluation: Path, cremad_corpus: Path,
                                               small_store: Path) -> None:
    m, preds, parsed = _metrics(evaluation), _predictions(evaluation), _parse(page)
    top = m["most_confused"][:TOP_PAIRS]
    assert parsed.pairs == [f"{p['true']}>{p['predicted']}" for p in top]
    with Store(small_store) as st:
        meta = st.meta()
    source_of = dict(zip(meta["clip_id"], meta["path"]))
    for pair in top:
        key = f"{pair['true']}>{pair['predicted']}"
        shown = [c for c in parsed.clips if c["pair"] == key]
        expected = list(clip_order(preds, pair["true"], pair["predicted"], SEED)["clip_id"][:CLIPS])
        assert [c["clip"] for c in shown] == expected and expected, key
        for c in shown:
            row = preds[(preds["clip_id"] == c["clip"]) & (preds["augment"] == "none")].iloc[0]
            assert (row["true"], row["predicted"]) == (pair["true"], pair["predicted"])
            assert c["probs"] == {lab: f"{row[f'p_{lab}']:.3f}" for lab in m["labels"]}
            (src,) = c["audio"]
            copy = page.parent / unquote(src)
            info = sf.info(str(copy))
            assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
            assert 0 < info.duration <= MAX_PLAYER_SECONDS
            heard, _ = sf.read(str(copy), dtype="int16")
            original, _ = sf.read(str(cremad_corpus / source_of[c["clip"]]), dtype="int16")
            assert np.array_equal(heard, original[: len(heard)]), f"{src} is not {c['clip']}"
    n_players = sum(len(c["audio"]) for c in parsed.clips)
    assert n_players == len(list((page.parent / ASSETS / "audio").glob("*.wav"))) > 0


def test_clip_order_uses_original_rows_and_the_seed() -> None:
    rows = [(i, f"c{i % 12}", "ANG" if i % 3 else "SAD", "HAP", "none" if i < 12 else "noise") for i in range(36)]
    preds = pd.DataFrame(rows, columns=["row", "clip_id", "true", "predicted", "augment"]).sample(frac=1, random_state=0)
    order = clip_order(preds, "ANG", "HAP", SEED)
    assert set(order["augment"]) == {"none"} and sorted(order["row"]) == [i for i in range(12) if i % 3]
    assert list(order["row"]) == list(clip_order(preds.sort_values("row"), "ANG", "HAP", SEED)["row"])
    assert any(list(clip_order(preds, "ANG", "HAP", s)["row"]) != list(order["row"]) for s in range(1, 5))
    assert clip_order(preds, "HAP", "ANG", SEED).empty


def test_training_curves_come_from_the_checkpoint_folder(evaluation: Path, tmp_path: Path) -> None:
    no_history = _copy_evaluation(evaluation, tmp_path / "a")
    page = write_evaluation_page(no_history, checkpoint=tmp_path / "elsewhere" / "best.pt", clips_per_pair=0)
    parsed = _parse(page)
    assert parsed.img == [f"{ASSETS}/confusion.png"] and parsed.clips == []
    assert "No training history" in page.read_text(encoding="utf-8")
    # a run of several epochs, moved: the recorded checkpoint path does not resolve here, but the
    # run folder holds the evaluation folder, the checkpoint and its history
    run = tmp_path / "moved_run"
    shutil.copytree(evaluation.parent, run, ignore=shutil.ignore_patterns("report*"))
    nan = float("nan")
    write_history(run, [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.3 * e, "val_loss": nan,
                         "val_accuracy": 0.25 * e, "val_macro_f1": 0.2 * e, "seconds": 0.1} for e in (1, 2, 3)])
    metrics = _metrics(run / "eval-test")
    (run / "eval-test" / "metrics.json").write_text(json.dumps({**metrics, "checkpoint": "gone/best.pt"}))
    page = write_evaluation_page(run / "eval-test")
    assert _parse(page).img == [f"{ASSETS}/confusion.png", f"{ASSETS}/curves.png"]
    assert (run / "eval-test" / ASSETS / "curves.png").stat().st_size > 5_000
    assert "One epoch only" not in page.read_text(encoding="utf-8")
    assert evaluation_dirs(run) == [run / "eval-test"] and evaluation_dirs(run / "eval-test") == [run / "eval-test"]


def test_rerun_replaces_its_own_assets(evaluation: Path, tmp_path: Path) -> None:
    folder = _copy_evaluation(evaluation, tmp_path / "ev")
    write_evaluation_page(folder, clips_per_pair=CLIPS, seed=SEED)
    page = write_evaluation_page(folder, clips_per_pair=1, seed=SEED)
    parsed = _parse(page)
    wavs = sorted(p.name for p in (folder / ASSETS / "audio").glob("*.wav"))
    assert len(wavs) == len(parsed.pairs) and all(len(c["audio"]) == 1 for c in parsed.clips)
    assert sorted(Path(unquote(c["audio"][0])).name for c in parsed.clips) == wavs


def test_bad_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SerError, match="metrics.json not found"):
        write_evaluation_page(tmp_path)
    with pytest.raises(SerError, match="no evaluation found"):
        evaluation_dirs(tmp_path)
    with pytest.raises(SerError, match="clips_per_pair"):
        write_evaluation_page(tmp_path, clips_per_pair=-1)


def test_missing_audio_folder_degrades_gracefully(cremad_corpus: Path, small_store_config,
                                                  tmp_path: Path) -> None:
    audio = tmp_path / "AudioWAV"
    shutil.copytree(cremad_corpus, audio)
    cfg = replace(small_store_config, data=audio, out=tmp_path / "feats.h5", augment=())
    with warnings.catch_warnings():  # 48 clips are too few to stratify a 5% validation split
        warnings.filterwarnings("ignore", "split not stratified", UserWarning)
        featurize(cfg, progress=False, **QUIET)
    evaluation = _train_and_evaluate(cfg.out, tmp_path / "run")
    shutil.rmtree(audio)
    for gone, why in ((audio, "does not exist on this machine"), (cfg.out, "is not on this machine")):
        if gone == cfg.out:
            cfg.out.unlink()
        page = write_evaluation_page(evaluation, clips_per_pair=CLIPS, seed=SEED)
        parsed, text = _parse(page), page.read_text(encoding="utf-8")
        assert "Audio is not available" in text and why in text, why
        assert parsed.clips and all(c["audio"] == [] and c["probs"] for c in parsed.clips)
        assert len(parsed.pairs) == min(TOP_PAIRS, len(_metrics(evaluation)["most_confused"]))
        assert not list((evaluation / ASSETS / "audio").glob("*.wav"))
        assert parsed.img == [f"{ASSETS}/confusion.png"] and (page.parent / parsed.img[0]).is_file()


# --------------------------------------------------------------------------- a real browser


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (run .ci/install-chromium.sh)")
def test_page_plays_in_a_real_browser(page: Path, tmp_path: Path) -> None:
    seen = _browser_check(page, tmp_path / "profile")
    parsed = _parse(page)
    assert seen["settled"], seen
    assert [a["src"] for a in seen["audio"]] == [src for c in parsed.clips for src in c["audio"]]
    assert seen["audio"], "no player on the page"
    for a in seen["audio"]:
        d = _duration(a)
        assert a["error"] is None and math.isfinite(d) and d > 0, a
        assert abs(d - sf.info(str(page.parent / unquote(a["src"]))).duration) < 0.05, a
    assert [i["src"] for i in seen["img"]] == parsed.img
    for i in seen["img"]:
        assert i["naturalWidth"] > 0, i
