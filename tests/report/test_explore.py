"""Tests for ser.report.explore: the offline HTML report, and a real browser that opens it.

The corpus is tiny and synthetic (2 actors x 2 sentences x 6 emotions = 24 clips, seed 0)
plus two bad files: one whose name no corpus layout knows, one with a valid name and a
garbage header. The browser test runs headless Chromium when it is installed
(``.ci/install-chromium.sh``) and is skipped with its reason otherwise.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.cli import main
from ser.errors import SerError
from ser.report.explore import MAX_PLAYER_SECONDS, explore, sample_order
from ser.corpus.synth import EMOTIONS, make_cremad_corpus, synth_voice

SEED = 42
SAMPLES = 2
CHROMIUM = shutil.which("chromium")


class _Page(HTMLParser):
    """Collects the links, media and emotion sections of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []  # every src/href
        self.audio: list[tuple[str | None, str]] = []  # (section emotion, src)
        self.img: list[tuple[str | None, str]] = []
        self.sections: list[str] = []
        self.scripts = 0
        self.cells: list[str] = []
        self._section: str | None = None
        self._in_td = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) is not None:
                self.links.append(str(a[key]))
        if tag == "section" and a.get("data-emotion"):
            self._section = str(a["data-emotion"])
            self.sections.append(self._section)
        elif tag == "audio":
            self.audio.append((self._section, str(a.get("src"))))
        elif tag == "img":
            self.img.append((self._section, str(a.get("src"))))
        elif tag == "script":
            self.scripts += 1
        elif tag == "td":
            self._in_td = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag == "td":
            self._in_td = False

    def handle_data(self, data: str) -> None:
        if self._in_td:
            self.cells[-1] += data


def _parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AudioWAV folder: 24 synthetic clips (4 per emotion) plus two unusable files."""
    root = tmp_path_factory.mktemp("explore_corpus")
    make_cremad_corpus(root, n_actors=2, sentences=("DFA", "IEO"), duration_s=(0.8, 1.0), seed=0)
    wav = root / "AudioWAV"
    (wav / "notes.wav").write_bytes(b"RIFF")  # a name no layout knows: skipped by scan
    (wav / "1002_ITH_SAD_XX.wav").write_bytes(b"this is not a wav file" * 8)  # header fails
    return wav


@pytest.fixture(scope="module")
def report(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explore_report") / "report"
    index = explore(out, data=corpus, samples=SAMPLES, seed=SEED)
    assert index == out / "index.html"
    return out


# --------------------------------------------------------------------------- the page


def test_page_links_are_relative_and_exist(report: Path) -> None:
    page = _parse(report / "index.html")
    assert page.links, "the page links nothing"
    for link in page.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, f"not a relative link: {link}"
        if not parts.path:  # "#anchor"
            continue
        assert not parts.path.startswith("/"), f"absolute path: {link}"
        target = (report / unquote(parts.path)).resolve()
        assert target.is_relative_to(report.resolve()), f"{link} leaves the report folder"
        assert target.is_file(), f"{link} does not exist"
    assert page.scripts == 0, "the page should need no JavaScript"
    for png in report.glob("*.png"):  # every PNG written is a real, non-trivial image
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5_000, f"{png.name} looks empty"


def test_every_emotion_has_a_section_with_players_and_plots(report: Path) -> None:
    page = _parse(report / "index.html")
    assert sorted(page.sections) == sorted(EMOTIONS)
    for emotion in EMOTIONS:
        audio = [src for sec, src in page.audio if sec == emotion]
        img = [src for sec, src in page.img if sec == emotion]
        assert len(audio) == SAMPLES and len(img) == SAMPLES, emotion
        assert all(src.startswith(f"audio/{emotion}_") for src in audio)
    assert all(sec is not None for sec, _ in page.audio), "a player outside the emotion sections"
    for png in ("counts_emotion.png", "counts_speaker.png", "counts_sex.png",
                "counts_intensity.png", "durations.png"):
        assert png in page.links, f"{png} missing from the page"


def test_player_copies_are_pcm16_wav(report: Path, corpus: Path) -> None:
    copies = sorted((report / "audio").glob("*.wav"))
    assert len(copies) == SAMPLES * len(EMOTIONS)
    for copy in copies:
        info = sf.info(str(copy))
        assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
        assert 0 < info.duration <= MAX_PLAYER_SECONDS
        source = corpus / (copy.stem.split("_", 2)[2] + ".wav")  # ANG_1_<clip id>.wav
        assert info.samplerate == sf.info(str(source)).samplerate
        assert info.frames == sf.info(str(source)).frames  # synthetic clips are < 4 s: uncut


def test_unreadable_files_are_listed_with_reasons(report: Path) -> None:
    cells = _parse(report / "index.html").cells
    assert "notes.wav" in cells
    assert "1002_ITH_SAD_XX.wav" in cells
    reason = cells[cells.index("1002_ITH_SAD_XX.wav") + 1]
    assert "header" in reason or "decode" in reason, reason
    assert "scan (file name)" in cells and "header" in cells
    html = (report / "index.html").read_text(encoding="utf-8")
    # the bad SAD file is not counted as a clip: 4 readable SAD clips
    assert "SAD (sad): 4 clips" in html


def test_picks_follow_the_seeded_order(report: Path, corpus: Path) -> None:
    html = (report / "index.html").read_text(encoding="utf-8")
    for emotion in EMOTIONS:
        readable = sorted(p.name for p in corpus.glob(f"*_{emotion}_XX.wav")
                          if p.name != "1002_ITH_SAD_XX.wav")
        order = sample_order(len(readable), emotion, SEED)
        for k in range(SAMPLES):
            expected = f"audio/{emotion}_{k + 1}_{Path(readable[order[k]]).stem}.wav"
            assert expected in html, expected
    # the order is seeded: same seed same order, another seed another order somewhere
    assert np.array_equal(sample_order(10, "ANG", SEED), sample_order(10, "ANG", SEED))
    assert any(not np.array_equal(sample_order(10, e, SEED), sample_order(10, e, SEED + 1))
               for e in EMOTIONS)


def test_long_clip_is_cut_and_decode_failure_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "AudioWAV"
    folder.mkdir()
    y = synth_voice("ANG", duration_s=5.0, sr=16000, rng=np.random.default_rng(0))
    sf.write(str(folder / "1001_DFA_ANG_XX.wav"), y, 16000, subtype="PCM_16")
    sf.write(str(folder / "1001_IEO_ANG_XX.wav"), np.zeros(8000), 16000, subtype="PCM_16")
    index = explore(tmp_path / "out", data=folder, samples=2, seed=SEED)
    copies = list((tmp_path / "out" / "audio").glob("*.wav"))
    assert [c.name for c in copies] == ["ANG_1_1001_DFA_ANG_XX.wav"]
    assert sf.info(str(copies[0])).frames == int(MAX_PLAYER_SECONDS * 16000)
    page = _parse(index)
    assert "1001_IEO_ANG_XX.wav" in page.cells
    assert "decode (sample clip)" in page.cells
    assert "silent" in page.cells[page.cells.index("1001_IEO_ANG_XX.wav") + 1]
    assert "first 4.0 s" in index.read_text(encoding="utf-8")


def _store_with_audio(folder: Path, per_class: int = 3) -> Path:
    """A small complete store (``array_store``: ANG, HAP, SAD) whose data folder holds a
    synthetic WAV for every clip, plus augmented copies with absurd descriptors (1e6) that
    explore must leave out."""
    from array_store import make_array_store

    from ser.store import StoreWriter, read_attrs
    from ser.store.parts import PartData

    store = make_array_store(folder / "feats.h5", per_class=per_class, n_mels=16, max_seconds=0.5)
    meta = pd.read_hdf(store, "meta")
    for i, (path, emotion) in enumerate(zip(meta["path"], meta["emotion"])):
        y = synth_voice(emotion, duration_s=0.5, sr=16000, rng=np.random.default_rng([SEED, i]))
        sf.write(str(folder / path), y, 16000, subtype="PCM_16")
    info = read_attrs(store)
    n, (n_mels, frames) = len(meta), info["shapes"]["mel"][1:]
    copies = meta.assign(augment="noise", split="train")
    # the complete store, resumed with the same run config, gets the copies added after its rows
    with StoreWriter(store, run_config=info["run_config"], descriptor_names=info["descriptor_names"]) as writer:
        writer.write(PartData(np.full((n, len(info["descriptor_names"])), 1e6, dtype=np.float32),
                              np.full((n, n_mels, frames), 1e6, dtype=np.float32), copies))
        writer.finish()
    return store


def test_store_adds_feature_plots_from_original_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ser.report.plots

    store = _store_with_audio(tmp_path)
    seen: dict = {}
    boxes, mels = ser.report.plots.plot_descriptor_boxes, ser.report.plots.plot_mean_mels
    monkeypatch.setattr(ser.report.plots, "plot_descriptor_boxes",
                        lambda values, path, **kw: seen.update(desc=values) or boxes(values, path, **kw))
    monkeypatch.setattr(ser.report.plots, "plot_mean_mels",
                        lambda means, counts, path, **kw: seen.update(mel=means) or mels(means, counts, path, **kw))
    out = tmp_path / "report"
    index = explore(out, store=store, samples=1, seed=SEED)
    page = _parse(index)
    for png in ("descriptors.png", "mel_by_emotion.png", "mel_profiles.png", "counts_emotion.png"):
        assert png in page.links and (out / png).is_file()
    assert sorted(page.sections) == ["ANG", "HAP", "SAD"]
    assert len(page.audio) == 3  # from the store's data folder
    assert "9 original clips" in index.read_text(encoding="utf-8")
    assert list(seen["desc"]) == ["rms_mean", "zcr_mean", "centroid_mean", "mfcc01_mean"]
    for per_emotion in seen["desc"].values():  # augmented rows (1e6) left out
        assert {e: len(v) for e, v in per_emotion.items()} == {"ANG": 3, "HAP": 3, "SAD": 3}
        assert max(float(np.max(v)) for v in per_emotion.values()) < 1e5
    assert all(np.nanmax(m) < 1e5 and m.shape[0] == 16 for m in seen["mel"].values())


def test_store_without_its_audio_still_builds(tmp_path: Path) -> None:
    store = _store_with_audio(tmp_path / "made_here")
    moved = shutil.copy(store, tmp_path / "feats.h5")
    shutil.rmtree(tmp_path / "made_here")  # the store's data folder is gone
    index = explore(tmp_path / "report", store=moved, samples=1, seed=SEED)
    page = _parse(index)
    assert page.audio == [] and sorted(page.sections) == ["ANG", "HAP", "SAD"]
    assert "Audio is not available" in index.read_text(encoding="utf-8")
    assert "descriptors.png" in page.links and "mel_by_emotion.png" in page.links


def test_cli_explore(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    out = tmp_path / "cli_report"
    result = runner.invoke(main, ["explore", "--data", str(corpus), "--out", str(out), "--samples", "0"])
    assert result.exit_code == 0, result.output
    assert str(out / "index.html") in result.output
    assert (out / "index.html").is_file() and not list(out.glob("clip_*.png"))
    monkeypatch.chdir(tmp_path)  # no ./AudioWAV here
    result = runner.invoke(main, ["explore", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--data" in result.output
    result = runner.invoke(main, ["explore", "--data", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "no such folder" in result.output
    with pytest.raises(SerError, match="nothing to explore"):
        explore(tmp_path / "y")


# --------------------------------------------------------------------------- a real browser

#: Appended to a copy of the page (check.html, beside index.html so every relative link is the
#: same): waits until every <audio> has metadata (or an error) and every <img> is complete,
#: then writes what the browser saw into the DOM for --dump-dom.
_CHECK_SCRIPT = """<script>
(function () {
  var audios = document.getElementsByTagName('audio'), tries = 0;
  function settled() {
    for (var k = 0; k < audios.length; k++)
      if (audios[k].readyState < 1 && !audios[k].error) return false;
    for (var k = 0; k < document.images.length; k++)
      if (!document.images[k].complete) return false;
    return true;
  }
  function report() {
    var out = {audio: [], img: [], settled: settled()};
    for (var k = 0; k < audios.length; k++) {
      var a = audios[k];
      out.audio.push({src: a.getAttribute('src'), duration: String(a.duration),
                      error: a.error ? a.error.code : null});
    }
    for (var k = 0; k < document.images.length; k++) {
      var i = document.images[k];
      out.img.push({src: i.getAttribute('src'), naturalWidth: i.naturalWidth});
    }
    var pre = document.createElement('pre');
    pre.id = 'ser-check';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  (function poll() {
    if (settled() || ++tries > 400) { report(); return; }
    setTimeout(poll, 25);
  })();
})();
</script>"""


def _browser_check(page: Path, profile: Path) -> dict:
    """Open ``page`` (a file:// URL) in headless Chromium; return what the check script saw."""
    check = page.with_name("check.html")
    check.write_text(page.read_text(encoding="utf-8").replace("</body>", _CHECK_SCRIPT + "</body>"),
                     encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
           f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", check.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    found = re.search(r'<pre id="ser-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no check result in the dumped DOM (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _duration(entry: dict) -> float:
    try:
        return float(entry["duration"])
    except ValueError:
        return math.nan


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (run .ci/install-chromium.sh)")
def test_page_plays_in_a_real_browser(report: Path, tmp_path: Path) -> None:
    seen = _browser_check(report / "index.html", tmp_path / "profile")
    assert seen["settled"], seen
    assert len(seen["audio"]) == SAMPLES * len(EMOTIONS)
    for a in seen["audio"]:
        d = _duration(a)
        assert a["error"] is None and math.isfinite(d) and d > 0, a
        expected = sf.info(str(report / a["src"])).duration
        assert abs(d - expected) < 0.05, (a, expected)
    assert len(seen["img"]) == len(_parse(report / "index.html").img) > 0
    for i in seen["img"]:
        assert i["naturalWidth"] > 0, i

    # the same check catches what is broken: a WAV that is not one, a PNG that is not one
    broken = tmp_path / "broken"
    (broken / "audio").mkdir(parents=True)
    (broken / "audio" / "x.wav").write_bytes(b"RIFF0000WAVEjunk" * 4)
    (broken / "x.png").write_bytes(b"not a png")
    (broken / "index.html").write_text('<!DOCTYPE html><html><body><audio controls preload="metadata" '
                                       'src="audio/x.wav"></audio><img src="x.png"></body></html>')
    seen = _browser_check(broken / "index.html", tmp_path / "profile2")
    assert seen["audio"][0]["error"] is not None or not math.isfinite(_duration(seen["audio"][0]))
    assert seen["img"][0]["naturalWidth"] == 0
