"""openSMILE's ComParE-2016 functionals as an optional descriptor group (``--extras compare``).

The 6,373 functionals of the INTERSPEECH 2016 Computational Paralinguistics Challenge feature
set (low-level contours of loudness, auditory spectrum, MFCCs, voicing, jitter, shimmer and
HNR, and their percentiles, ranges, slopes and moments), computed by audEERING's ``opensmile``
package on the same waveform the other descriptors see (decoded, augmented, cut to
``max_seconds``). They are appended to the descriptor vector under openSMILE's own names,
prefixed ``compare_``. The package is optional: ``pip install "ser-toolkit[opensmile]"``.

Cost: about 27 ms a waveform on one core of our VM (``docs/benchmarks.md``), several times the
rest of the descriptors; it is the classic anchor of speaker-independent SER, not a fast path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from ser.errors import SerError


@lru_cache(maxsize=1)
def _smile():
    try:
        import opensmile
    except ImportError:
        raise SerError("extras 'compare' needs the opensmile package: pip install \"ser-toolkit[opensmile]\"") from None
    return opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016,
                           feature_level=opensmile.FeatureLevel.Functionals)


def compare_names() -> list[str]:
    """The group's descriptor names, in openSMILE's order."""
    return [f"compare_{name}" for name in _smile().feature_names]


def compare(waves: Sequence[np.ndarray], sr: int) -> np.ndarray:
    """ComParE-2016 functionals of each waveform: ``(len(waves), 6373)`` float32."""
    smile = _smile()
    out = np.empty((len(waves), len(smile.feature_names)), dtype=np.float32)
    for k, y in enumerate(waves):
        out[k] = smile.process_signal(np.asarray(y, dtype=np.float32), sr).to_numpy()[0]
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
