"""What the features are: :class:`FeatureConfig` (saved in the store and every checkpoint) and
the names of the descriptor vector's entries, in order."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ser.errors import SerError

STATS = ("mean", "std")
EXTRAS = ("prosody", "dynamics", "compare")  # optional clip-level functionals (prosody.py, compare.py)


@dataclass(frozen=True)
class FeatureConfig:
    """What the features are; saved in the store and in every checkpoint."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    max_seconds: float = 4.0
    n_mels: int = 64          # mel bands of the 2D spectrogram
    top_db: float = 80.0      # dynamic range kept below each spectrogram's peak
    n_mfcc: int = 40
    n_desc_mels: int = 128    # mel bands averaged into the descriptor vector
    n_chroma: int = 12
    n_contrast_bands: int = 6
    stats: tuple[str, ...] = ("mean",)
    extras: tuple[str, ...] = ()  # "prosody" (pitch, loudness), "dynamics" (MFCC deltas, flux),
                                  # "compare" (openSMILE's ComParE-2016 functionals)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0:
            raise SerError("sample_rate, n_fft and hop_length must be positive")
        if self.max_seconds <= 0:
            raise SerError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.n_mels <= 0 or self.n_mfcc <= 0 or self.n_desc_mels < self.n_mfcc:
            raise SerError("n_mels and n_mfcc must be positive and n_desc_mels >= n_mfcc")
        bad = [s for s in self.stats if s not in STATS]
        if bad or not self.stats:
            raise SerError(f"stats must be a non-empty subset of {STATS}, got {self.stats}")
        object.__setattr__(self, "stats", tuple(self.stats))
        bad = [e for e in self.extras if e not in EXTRAS]
        if bad:
            raise SerError(f"extras must be a subset of {EXTRAS}, got {tuple(self.extras)}")
        if "dynamics" in self.extras and self.n_mfcc < 20:
            raise SerError("extras 'dynamics' needs n_mfcc >= 20")
        object.__setattr__(self, "extras", tuple(e for e in EXTRAS if e in self.extras))

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames of the fixed-size mel spectrogram (centred STFT)."""
        return 1 + self.max_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stats"] = list(self.stats)
        d["extras"] = list(self.extras)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SerError(f"unknown feature config key(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("stats", "extras"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def frame_feature_names(cfg: FeatureConfig) -> list[str]:
    """Names of the per-frame features, in the order of the rows :mod:`ser.features.extractor` fills."""
    names = ["zcr", "rms", "centroid", "bandwidth", "rolloff", "flatness"]
    names += [f"mfcc{i:02d}" for i in range(cfg.n_mfcc)]
    names += [f"chroma{i:02d}" for i in range(cfg.n_chroma)]
    names += [f"mel{i:03d}" for i in range(cfg.n_desc_mels)]
    names += [f"contrast{i}" for i in range(cfg.n_contrast_bands + 1)]
    return names


def descriptor_names(cfg: FeatureConfig) -> list[str]:
    """Names of the descriptor vector's entries, ``<feature>_<stat>``, in order."""
    from ser.features.prosody import dynamics_names, prosody_names

    base = frame_feature_names(cfg)
    names = [f"{name}_{stat}" for stat in cfg.stats for name in base]
    if "prosody" in cfg.extras:
        names += prosody_names()
    if "dynamics" in cfg.extras:
        names += dynamics_names()
    if "compare" in cfg.extras:
        from ser.features.compare import compare_names

        names += compare_names()
    return names


@lru_cache(maxsize=8)
def n_descriptors(cfg: FeatureConfig) -> int:
    """``len(descriptor_names(cfg))``, built once per config, not per clip (~200 f-strings)."""
    return len(descriptor_names(cfg))
