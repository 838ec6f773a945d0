"""Pitch and dynamics functionals against librosa, bit for bit.

``ser.features.pitch`` restates ``librosa.yin`` for chosen frames of a batch, and
``ser.features.prosody.delta`` restates ``librosa.feature.delta``; both must give librosa's
numbers exactly, and the functionals must be what the per-waveform librosa calls gave
(:func:`reference_prosody` / :func:`reference_dynamics`: the code they replaced).
"""

from __future__ import annotations

import numpy as np
import pytest

from ser.audio.augment import AUGMENTATIONS, shifted, variants
from ser.corpus.synth import synth_voice
from ser.features.config import FeatureConfig
from ser.features.extractor import extract_many
from ser.features.pitch import Yin, f0_at, shared_frames, yin_f0
from ser.features.prosody import F0_MAX_HZ, F0_MIN_HZ, _PCTS, delta, dynamics, prosody

SR = 16000
YIN = Yin(sr=SR, frame=1024, hop=256, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ)


def voice(emotion: str, seconds: float, seed: int) -> np.ndarray:
    return synth_voice(emotion, duration_s=seconds, sr=SR, rng=np.random.default_rng(seed))


def librosa_yin(y: np.ndarray, frame: int = 1024, hop: int = 256) -> np.ndarray:
    import librosa

    return librosa.yin(y, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=SR, frame_length=frame, hop_length=hop)


def reference_prosody(y: np.ndarray, rms: np.ndarray, *, sr: int, n_fft: int, hop_length: int) -> np.ndarray:
    """The per-waveform prosody this package computed before (librosa.yin on every frame)."""
    frame = max(n_fft, int(np.ceil(2 * sr / F0_MIN_HZ)))
    if y.shape[0] < frame:
        y = np.pad(y, (0, frame - y.shape[0]))
    f0 = librosa_yin(y, frame, hop_length)
    n = min(f0.shape[0], rms.shape[0])
    f0, rms = f0[:n], rms[:n]
    rms_db = 20.0 * np.log10(np.maximum(rms, 1e-8))
    voiced = rms_db > rms_db.max() - 20.0
    lf = np.log(f0[voiced] if voiced.sum() >= 3 else f0)
    pct = np.percentile(lf, _PCTS)
    d = np.diff(lf).std() if lf.shape[0] > 2 else 0.0
    return np.concatenate([[lf.mean(), lf.std()], pct, [pct[-1] - pct[0], voiced.mean(), d],
                           np.percentile(rms_db, (10, 50, 90))]).astype(np.float32)


def reference_dynamics(mfcc: np.ndarray, mel_db: np.ndarray) -> np.ndarray:
    """The dynamics this package computed before (librosa.feature.delta)."""
    import librosa

    m = mfcc[:20]
    width = min(9, m.shape[1] if m.shape[1] % 2 else m.shape[1] - 1)
    if width < 3:
        d = d2 = np.zeros_like(m)
    else:
        d = librosa.feature.delta(m, width=width)
        d2 = librosa.feature.delta(m, order=2, width=width)
    flux = np.sqrt((np.diff(mel_db, axis=1) ** 2).mean(axis=0)) if mel_db.shape[1] > 1 else np.zeros(1)
    return np.concatenate([d.std(1), d2.std(1), np.abs(d).mean(1), [flux.mean(), flux.std()]]).astype(np.float32)


@pytest.mark.parametrize("emotion,seconds,seed", [("ANG", 2.3, 1), ("SAD", 1.4, 2), ("NEU", 0.07, 3)])
def test_yin_is_librosas_to_the_bit(emotion: str, seconds: float, seed: int) -> None:
    y = voice(emotion, seconds, seed)
    y = np.pad(y, (0, max(0, 1024 - y.shape[0])))  # librosa frames need a frame's samples
    ref = librosa_yin(y)
    np.testing.assert_array_equal(yin_f0(y, YIN), ref)
    some = np.array([0, 3, ref.shape[0] - 1])
    np.testing.assert_array_equal(yin_f0(y, YIN, some), ref[some])  # any frames, alone


@pytest.mark.parametrize("k", [7 * 256, -9 * 256, 300, -1, 0])
def test_a_shifted_copys_pitch_shares_the_originals_frames_and_is_librosas(k: int) -> None:
    y = voice("HAP", 2.0, 4)
    y[:3000] = 0.0  # leading digital silence, as in a recording
    copy = shifted(y, k)
    every = [np.arange(YIN.n_frames(w.shape[0])) for w in (y, copy)]
    f0 = f0_at([y, copy], every, [0, k], YIN)
    np.testing.assert_array_equal(f0[0], librosa_yin(y))
    np.testing.assert_array_equal(f0[1], librosa_yin(copy))
    shared = shared_frames(every[1], k, copy.shape[0], y.shape[0], YIN)
    if k and k % 256 == 0:
        assert shared.sum() > 0.8 * shared.shape[0]
    else:
        assert not shared.any() or k == 0


def test_prosody_of_a_clips_variants_is_the_per_waveform_librosa_one() -> None:
    y = voice("FEA", 2.2, 5)
    out = variants(y, sr=SR, clip_id="1001_DFA_FEA_XX", augment=tuple(AUGMENTATIONS), seed=42)
    waves = [v.wave for v in out] + [y[:700], np.zeros(2000, np.float32)]  # short; all silent
    shifts = [v.shift for v in out] + [None, None]
    cfg = FeatureConfig()
    rms = []
    for w in waves:  # the extractor's RMS frames (librosa's rms, zero padding)
        import librosa

        rms.append(librosa.feature.rms(y=w, frame_length=cfg.n_fft, hop_length=cfg.hop_length)[0])
    ours = prosody(waves, rms, shifts=shifts, sr=SR, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
    for i, (w, r) in enumerate(zip(waves, rms)):
        ref = reference_prosody(w, r, sr=SR, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
        np.testing.assert_array_equal(ours[i], ref, err_msg=f"wave {i}")


@pytest.mark.parametrize("frames,width", [(120, 9), (9, 9), (7, 7), (4, 3)])
@pytest.mark.parametrize("order", [1, 2])
def test_delta_is_librosas_to_the_bit(frames: int, width: int, order: int) -> None:
    import librosa

    m = (np.random.default_rng(frames).standard_normal((20, frames)) * 30).astype(np.float32)
    np.testing.assert_array_equal(delta(m, width=width, order=order),
                                  librosa.feature.delta(m, width=width, order=order))


def test_dynamics_in_the_extractor_are_the_librosa_ones() -> None:
    y = voice("DIS", 1.7, 6)
    cfg = FeatureConfig(extras=("dynamics",))
    per = {}
    import ser.features.extractor as features

    original = features._per_frame

    def keep(*a):
        per["frames"], _ = out = original(*a)
        return out

    features._per_frame = keep
    try:
        desc = extract_many([y, y[:900]], cfg)["descriptors"]  # 900 samples: 4 frames, width 3
    finally:
        features._per_frame = original
    bounds = np.cumsum([0, 1 + y.shape[0] // 256, 1 + 900 // 256])
    mfcc, mel = 6, 6 + cfg.n_mfcc + cfg.n_chroma
    for k in range(2):
        f = per["frames"][:, bounds[k]:bounds[k + 1]]
        ref = reference_dynamics(f[mfcc:mfcc + cfg.n_mfcc], f[mel:mel + cfg.n_desc_mels])
        np.testing.assert_array_equal(desc[k, -ref.shape[0]:], ref)
        np.testing.assert_array_equal(dynamics(f[mfcc:mfcc + cfg.n_mfcc], f[mel:mel + cfg.n_desc_mels]), ref)
