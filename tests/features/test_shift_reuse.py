"""A time-shifted copy's STFT frames: computed once when the caller hands the shift over.

:func:`ser.features.extractor.extract_many` reuses the original's frames for a copy moved by a
whole number of hops (``shifts``), and computes everything when told nothing (``shifts=None``).
Either way the arrays are the same; only the chroma products, over blocks of other widths,
round differently (a few float32 ulps).
"""

from __future__ import annotations

import numpy as np
import pytest

import ser.features.extractor as features
from ser.audio.augment import AUGMENTATIONS, Variant, shifted, variants
from ser.corpus.synth import synth_voice
from ser.features.config import FeatureConfig
from ser.features.extractor import extract, extract_many, extract_variants

SR = 16000
DEFAULT = FeatureConfig()
RECIPE = FeatureConfig(stats=("mean", "std"), extras=("prosody", "dynamics"))


def voice(emotion: str, seconds: float, seed: int) -> np.ndarray:
    return synth_voice(emotion, duration_s=seconds, sr=SR, rng=np.random.default_rng(seed))


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many frames each call of the spectral step computes, from now on."""
    computed: list[int] = []
    spectral = features._spectral_frames
    monkeypatch.setattr(features, "_spectral_frames",
                        lambda frames, rows, *a: computed.append(rows.shape[0]) or spectral(frames, rows, *a))
    return computed


def assert_same(a: dict, b: dict, *, exact: bool) -> None:
    for key in ("descriptors", "mel", "n_frames"):
        if exact:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("cfg", [DEFAULT, RECIPE], ids=["default", "recipe"])
@pytest.mark.parametrize("k", [7 * 256, -9 * 256, 19 * 256, -18 * 256, 0, 300, -1])
def test_a_handed_over_shift_gives_the_arrays_of_computing_every_frame(
        k: int, cfg: FeatureConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    y = voice("ANG", 2.5, 7)
    waves = [y, (y * np.float32(0.5)).astype(np.float32), shifted(y, k)]
    computed = counting(monkeypatch)
    reused = extract_many(waves, cfg, shifts=[0, None, k])
    full = extract_many(waves, cfg)
    total = int(full["n_frames"].sum())
    if k and k % 256 == 0:  # whole hops: the copy's inner frames and its zero fill are computed once
        assert computed[0] < total - int(0.8 * full["n_frames"][2])
        assert_same(reused, full, exact=False)
    else:  # no whole hop (or no shift): nothing to reuse, the very same computation
        assert computed[0] == total
        assert_same(reused, full, exact=True)
    assert computed[1] == total  # shifts=None: every frame
    for i, w in enumerate(waves):
        one = extract(w, cfg)
        np.testing.assert_allclose(reused["descriptors"][i], one["descriptors"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(reused["mel"][i], one["mel"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("cfg", [DEFAULT, RECIPE], ids=["default", "recipe"])
def test_a_clip_shorter_than_a_step_reuses_nothing(cfg: FeatureConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    y = voice("SAD", 0.02, 3)  # 320 samples: time_shift moves it by whole samples, not hops
    out = variants(y, sr=SR, clip_id="1001_DFA_SAD_XX", augment=("noise", "shift"), seed=5)
    computed = counting(monkeypatch)
    assert_same(extract_variants(out, cfg), extract_many([v.wave for v in out], cfg), exact=True)
    assert computed[0] == computed[1]
    # and a copy shifted by whole hops that keeps too little of the clip: computed in full too
    z = voice("SAD", 0.15, 4)  # 2400 samples, 1376 kept: less than two frames
    assert_same(extract_many([z, shifted(z, 4 * 256)], cfg, shifts=[0, 4 * 256]),
                extract_many([z, shifted(z, 4 * 256)], cfg), exact=True)


@pytest.mark.parametrize("cfg", [DEFAULT, RECIPE], ids=["default", "recipe"])
def test_extract_variants_is_extract_many_with_the_variants_shifts(cfg: FeatureConfig) -> None:
    y = voice("FEA", 2.0, 4)
    out = variants(y, sr=SR, clip_id="1001_DFA_FEA_XX", augment=tuple(AUGMENTATIONS), seed=42)
    k = out[3].shift
    assert out[3].name == "shift" and k % 256 == 0 and k != 0
    assert_same(extract_variants(out, cfg), extract_many([v.wave for v in out], cfg, shifts=[v.shift for v in out]),
                exact=True)
    assert_same(extract_variants(out, cfg), extract_many([v.wave for v in out], cfg), exact=False)
    # a hand-made Variant list works the same
    assert_same(extract_variants([Variant("none", y, 0), Variant("shift", shifted(y, 512), 512)], cfg),
                extract_many([y, shifted(y, 512)], cfg, shifts=[0, 512]), exact=True)


def test_shifts_must_match_the_waveforms() -> None:
    y = voice("NEU", 0.5, 1)
    with pytest.raises(ValueError, match="2 shifts for 1 waveforms"):
        extract_many([y], DEFAULT, shifts=[0, 256])
