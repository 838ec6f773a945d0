"""The optional ComParE-2016 group: openSMILE's own functionals, appended under their names."""

from __future__ import annotations

import numpy as np
import pytest

from ser.features.config import FeatureConfig, descriptor_names, n_descriptors
from ser.features.extractor import extract, extract_many

opensmile = pytest.importorskip("opensmile")


def test_compare_appends_opensmiles_functionals_of_the_cut_waveform() -> None:
    from ser.corpus.synth import synth_voice

    cfg = FeatureConfig(max_seconds=1.0, extras=("compare",))
    plain = FeatureConfig(max_seconds=1.0)
    names = descriptor_names(cfg)
    assert len(names) == n_descriptors(plain) + 6373 and names[-6373].startswith("compare_")
    assert names[: n_descriptors(plain)] == descriptor_names(plain)
    y = synth_voice("ANG", duration_s=1.5, sr=16000, rng=np.random.default_rng(0)).astype(np.float32)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016,
                            feature_level=opensmile.FeatureLevel.Functionals)
    expected = smile.process_signal(y[:16000], 16000)
    got = extract(y, cfg)["descriptors"]
    np.testing.assert_allclose(got[-6373:], expected.to_numpy()[0].astype(np.float32), rtol=1e-6)
    assert names[-6373:] == [f"compare_{n}" for n in expected.columns]
    np.testing.assert_array_equal(got[: n_descriptors(plain)], extract(y, plain)["descriptors"])
    both = extract_many([y, y[:8000]], cfg)["descriptors"]
    np.testing.assert_array_equal(both[0, -6373:], got[-6373:])
