"""The fast feature path against the notebook way, and the pieces that make it fast.

``benchmarks/naive_featurize.py`` computes every descriptor with its own librosa call and the
mel spectrogram with torchaudio, one waveform at a time; the project computes them from one
STFT in numpy, a clip's variants at once. On unaugmented clips they must agree:

- descriptors: ``|fast - naive| <= 1e-3 + 1e-4 |naive|`` for every entry (observed on these
  clips: at most 3.4e-5 relative, on spectral contrast; zero-crossing rate and RMS exact; over
  the 200 clips of ``benchmarks/featurize_speed.py`` at most 54% of this tolerance is used);
- mel power in dB: within 5e-3 dB on every unpadded frame (observed: 1.1e-3 dB).

Timing is not tested here (see ``benchmarks/featurize_speed.py``); only correctness is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from ser.audio.augment import (AUGMENTATIONS, PV_HOP, PV_N_FFT, pitch_shift, stretch, time_stretch,
                         variants)
from ser.features.config import FeatureConfig, descriptor_names
from ser.features.extractor import extract, extract_many
from ser.features.filterbanks import chroma_filters, contrast_bands, mel_filters
from ser.corpus.synth import synth_voice

SR = 16000
DEFAULT = FeatureConfig()
DESC_RTOL, DESC_ATOL = 1e-4, 1e-3
MEL_ATOL_DB = 5e-3


@pytest.fixture(scope="module")
def naive():
    """The benchmark's naive module (it is a script, not a package: loaded from its path)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "naive_featurize.py"
    spec = importlib.util.spec_from_file_location("naive_featurize", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("naive_featurize", module)
    spec.loader.exec_module(module)
    return module


def voice(emotion: str, seconds: float, seed: int) -> np.ndarray:
    return synth_voice(emotion, duration_s=seconds, sr=SR, rng=np.random.default_rng(seed))


# 2.3 s and 1.4 s are CREMA-D's typical lengths (padded mel); 4.6 s is cut at max_seconds
CLIPS = [("ANG", 2.3, 1), ("SAD", 1.4, 2), ("HAP", 4.6, 3)]


def test_the_naive_script_uses_the_feature_config_defaults(naive) -> None:
    assert (naive.SR, naive.N_FFT, naive.HOP, naive.MAX_SECONDS) == (
        DEFAULT.sample_rate, DEFAULT.n_fft, DEFAULT.hop_length, DEFAULT.max_seconds)
    assert (naive.N_MELS, naive.N_DESC_MELS, naive.N_MFCC, naive.TOP_DB, naive.N_BANDS) == (
        DEFAULT.n_mels, DEFAULT.n_desc_mels, DEFAULT.n_mfcc, DEFAULT.top_db, DEFAULT.n_contrast_bands)
    assert naive.N_FRAMES == DEFAULT.n_frames


@pytest.mark.parametrize("emotion,seconds,seed", CLIPS)
def test_descriptors_agree_with_the_naive_script(naive, emotion: str, seconds: float, seed: int) -> None:
    y = voice(emotion, seconds, seed)
    fast = extract(y, DEFAULT)["descriptors"]
    slow = naive.naive_descriptors(y[: DEFAULT.max_samples])
    names = descriptor_names(DEFAULT)
    assert slow.shape == fast.shape == (len(names),)
    bad = ~np.isclose(fast, slow, rtol=DESC_RTOL, atol=DESC_ATOL)
    assert not bad.any(), [(n, float(f), float(s)) for n, f, s in zip(np.array(names)[bad], fast[bad], slow[bad])]
    # the time-domain ones are exact up to float32 rounding (rolloff too, but for the odd frame
    # whose 85% point lies within rounding of a bin edge: over 200 CREMA-D-like clips, 0.13 Hz)
    for name in ("zcr_mean", "rms_mean"):
        i = names.index(name)
        assert fast[i] == pytest.approx(slow[i], rel=1e-6), name


@pytest.mark.parametrize("emotion,seconds,seed", CLIPS)
def test_mel_db_agrees_with_the_naive_script(naive, emotion: str, seconds: float, seed: int) -> None:
    y = voice(emotion, seconds, seed)
    out = extract(y, DEFAULT)
    ref, n = naive.naive_mel_db(y[: DEFAULT.max_samples])
    assert out["n_frames"] == n
    np.testing.assert_allclose(out["mel"][:, :n], ref[:, :n], rtol=0, atol=MEL_ATOL_DB)
    assert np.all(out["mel"][:, n:] == out["mel"][:, :n].min())


# -- the pieces -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sr,n_fft,n_mels", [(16000, 1024, 128), (16000, 1024, 64), (22050, 2048, 40)])
def test_filterbanks_equal_librosa_and_torchaudio(sr: int, n_fft: int, n_mels: int) -> None:
    import librosa
    import torchaudio.functional as AF

    np.testing.assert_allclose(mel_filters(sr, n_fft, n_mels), librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels),
                               rtol=1e-5, atol=1e-8)
    ta = AF.melscale_fbanks(1 + n_fft // 2, f_min=0.0, f_max=sr / 2.0, n_mels=n_mels, sample_rate=sr,
                            norm=None, mel_scale="htk").numpy().T
    # torchaudio builds its filters in float32, these in float64: a few 1e-6 apart
    np.testing.assert_allclose(mel_filters(sr, n_fft, n_mels, htk=True), ta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(chroma_filters(sr, n_fft, 12), librosa.filters.chroma(sr=sr, n_fft=n_fft),
                               rtol=1e-5, atol=1e-8)


def test_contrast_bands_are_librosas() -> None:
    # librosa's spectral_contrast bands for sr 16 kHz, n_fft 1024, 6 bands (fmin 200 Hz):
    # one bin below each octave joins it, the top band runs to Nyquist, k = max(1, rint(0.02 n))
    assert contrast_bands(16000, 1024, 6) == [(0, 12, 1), (12, 25, 1), (25, 51, 1), (51, 102, 1),
                                              (102, 204, 2), (204, 409, 4), (409, 513, 2)]


def test_a_batch_equals_its_rows_one_by_one() -> None:
    y = voice("FEA", 2.0, 4)
    waves = [v.wave for v in variants(y, sr=SR, clip_id="1001_DFA_FEA_XX", augment=tuple(AUGMENTATIONS), seed=42)]
    waves.append(y[:300])  # shorter than half a frame: zero-extended for its STFT
    cfg = FeatureConfig(stats=("mean", "std"))
    batch = extract_many(waves, cfg)
    assert batch["descriptors"].shape == (len(waves), len(descriptor_names(cfg)))
    assert batch["mel"].shape == (len(waves), cfg.n_mels, cfg.n_frames)
    for i, w in enumerate(waves):
        one = extract(w, cfg)
        assert one["n_frames"] == batch["n_frames"][i]
        # the same maths; only matrix products over blocks of other widths round differently
        np.testing.assert_allclose(batch["descriptors"][i], one["descriptors"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(batch["mel"][i], one["mel"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("n_fft,hop", [(1000, 256), (512, 160)])
def test_zcr_and_rms_follow_librosa_when_a_frame_is_not_whole_hops(n_fft: int, hop: int) -> None:
    import librosa

    y = voice("HAP", 1.1, 5)
    y[4000:6000] = 0.0  # digital silence: zeros count as positive, no crossings
    cfg = FeatureConfig(n_fft=n_fft, hop_length=hop, n_mels=32, n_desc_mels=64, n_mfcc=20)
    desc = extract(y, cfg)["descriptors"]
    names = descriptor_names(cfg)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop).mean()
    rms = librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop).mean()
    assert desc[names.index("zcr_mean")] == pytest.approx(zcr, rel=1e-6)
    assert desc[names.index("rms_mean")] == pytest.approx(rms, rel=1e-5)
    # flatness over silent frames too (1 there: every bin sits on the 1e-10 floor)
    flatness = librosa.feature.spectral_flatness(y=y, n_fft=n_fft, hop_length=hop, pad_mode="reflect").mean()
    assert desc[names.index("flatness_mean")] == pytest.approx(flatness, rel=1e-4)


def test_silence_inside_a_clip_keeps_every_feature_finite() -> None:
    y = voice("NEU", 1.5, 6)
    y[5000:15000] = 0.0
    out = extract(y, DEFAULT)
    assert np.all(np.isfinite(out["descriptors"])) and np.all(np.isfinite(out["mel"]))


@pytest.mark.parametrize("rate", [0.8, 0.93, 1.17, 1.25])
def test_stretch_is_librosas_time_stretch(rate: float) -> None:
    import librosa

    y = voice("ANG", 1.6, 7)
    ours = stretch(y, rate)
    ref = librosa.effects.time_stretch(y, rate=rate)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    # librosa accumulates the phase in float32, this in complex products: a little apart
    assert np.sqrt(np.mean((ours - ref) ** 2) / np.mean(ref ** 2)) < 1e-2


@pytest.mark.parametrize("steps", [-2.0, 1.3])
def test_pitch_shift_is_librosas(steps: float) -> None:
    import librosa

    y = voice("SAD", 1.6, 8)
    ours = pitch_shift(y, sr=SR, rng=np.random.default_rng(0), semitones=(steps, steps))
    ref = librosa.effects.pitch_shift(y, sr=SR, n_steps=steps)
    assert ours.shape == ref.shape == y.shape
    assert np.sqrt(np.mean((ours - ref) ** 2) / np.mean(ref ** 2)) < 1e-2


def test_stretch_keeps_the_pitch_of_a_tone() -> None:
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)

    def peak_hz(x: np.ndarray) -> float:
        seg = x[SR // 8: SR // 8 + SR // 2]
        return float(np.argmax(np.abs(np.fft.rfft(seg * np.hanning(seg.shape[0])))) * SR / seg.shape[0])

    for rate in (0.8, 1.25):
        out = stretch(tone, rate)
        assert out.shape[0] == round(SR / rate)
        assert peak_hz(out) == pytest.approx(300, abs=3)


def test_stretch_and_pitch_sharing_an_analysis_equal_separate_calls() -> None:
    y = voice("DIS", 1.3, 9)
    both = {v.name: v.wave for v in variants(y, sr=SR, clip_id="1002_IEO_DIS_XX", augment=("stretch", "pitch"), seed=3)}
    for name in ("stretch", "pitch"):
        alone = {v.name: v.wave for v in variants(y, sr=SR, clip_id="1002_IEO_DIS_XX", augment=(name,), seed=3)}
        assert alone[name].tobytes() == both[name].tobytes()
    # and outside variants() nothing is cached: a changed array is analysed afresh
    rng = np.random.default_rng(1)
    a = time_stretch(y, sr=SR, rng=np.random.default_rng(1))
    z = y.copy()
    z[:100] = 0
    assert not np.array_equal(time_stretch(z, sr=SR, rng=rng), a)


def test_the_pv_settings_are_librosas_defaults() -> None:
    assert (PV_N_FFT, PV_HOP) == (2048, 512)


# -- the job: bounded memory ------------------------------------------------------------------------


def test_rows_from_remote_workers_come_in_windows_not_all_at_once(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """Workers that cannot see the work folder return their rows: the parent never holds more
    than two tasks a worker of them, whatever the corpus size (receipts alone come all at once)."""
    import pandas as pd

    import ser.featurize.job as job
    import ser.featurize.worker as worker
    from ser.featurize.job import FeaturizeConfig
    from ser.store.parts import PartSpec, Receipt

    started: list[int] = []

    def fake_task(task, spec, cfg):
        started.append(task.seq)
        return Receipt(seq=task.seq, n_rows=0, n_failures=0, n_clips=len(task.clips))

    monkeypatch.setattr(worker, "worker_task", fake_task)
    monkeypatch.setattr(job, "worker_task", fake_task)
    cfg = FeaturizeConfig(data=tmp_path, out=tmp_path / "x.h5", workers=2, backend="threading")
    tasks = [worker.Task(seq, pd.DataFrame({"clip_id": [str(seq)]})) for seq in range(40)]
    remote = PartSpec(work=None, run="r", session="s", descriptor_names=("d",), mel_shape=(2, 3))
    results = job.receipts(tasks, remote, None, cfg, workers=2)
    assert next(results).seq == 0
    assert len(started) <= 4  # the first window alone
    assert [next(results).seq for _ in range(3)] == [1, 2, 3] and len(started) <= 4
    assert [r.seq for r in results] == list(range(4, 40))  # plan order, nothing lost
    assert sorted(started) == list(range(40))  # every task, once
