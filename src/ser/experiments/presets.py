"""Named training recipes: ``train --preset NAME`` (and ``crossval --preset NAME``).

A preset fixes the model and its settings, and names what the store must hold; a store
featurized otherwise is refused with the featurize options that would fix it. A fused preset
names members instead: each is trained (or cross-validated) as its member preset says, with
the run's seed plus the member's offset and the member's hyper-parameter updates, and their
class probabilities are averaged (:mod:`ser.experiments.fusion`). The same preset twice with
other seeds is an ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ser.errors import SerError


@dataclass(frozen=True)
class Member:
    """One model of a fused preset: ``preset`` trained with the run's seed plus ``seed_offset``,
    its hyper-parameters updated by ``hparams``."""

    preset: str
    seed_offset: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Its folder in the fused run: the preset's name, then ``-2``, ``-3`` for its other draws."""
        return self.preset if self.seed_offset == 0 else f"{self.preset}-{self.seed_offset + 1}"


@dataclass(frozen=True)
class Preset:
    description: str
    train: dict[str, Any]                                   # TrainConfig fields (hparams inside)
    requires: dict[str, list[str]] = field(default_factory=dict)   # FeatureConfig field -> values needed
    featurize_hint: str = ""
    members: tuple[Member, ...] = ()                        # a fused preset: its models
    weights: tuple[float, ...] | None = None                # their weights (equal when None)


PRESETS: dict[str, Preset] = {
    "best": Preset(
        description="RBF SVM on per-speaker standardised descriptors (frame means and stds, pitch and "
                    "spectral-dynamics functionals), fitted on the original clips: the best recipe measured "
                    "on EmoDB, and on CREMA-D without openSMILE",
        train={"model": "svm", "hparams": {"C": 10.0}, "speaker_norm": True, "variants": "original"},
        requires={"stats": ["mean", "std"], "extras": ["prosody", "dynamics"]},
        featurize_hint="--stats mean,std --extras prosody,dynamics",
    ),
    "compare": Preset(
        description="RBF SVM (C=10) on per-speaker standardised descriptors with openSMILE's ComParE-2016 "
                    "functionals, fitted on the original clips: the best single model measured on CREMA-D "
                    "(docs/results.md)",
        train={"model": "svm", "hparams": {"C": 10.0}, "speaker_norm": True, "variants": "original"},
        requires={"stats": ["mean", "std"], "extras": ["prosody", "dynamics", "compare"]},
        featurize_hint="--stats mean,std --extras prosody,dynamics,compare",
    ),
    "cnn": Preset(
        description="a small 2D CNN over per-speaker standardised mel-dB, fast enough for a CPU: frames "
                    "averaged by 3, four 3x3 blocks (16-32-64-128), statistics pooling; one random variant "
                    "of each clip per epoch, SpecAugment, mixup, label smoothing, a cosine schedule",
        train={"model": "cnn2d", "optimizer": "adam", "lr": 2e-3, "epochs": 30, "batch_size": 64,
               "weight_decay": 1e-4, "speaker_norm": True, "spec_augment": True, "mixup": 0.2,
               "label_smoothing": 0.1, "schedule": "cosine", "variants": "one", "patience": 0,
               "hparams": {"filters": [16, 32, 64, 128], "kernels": [[3, 3]] * 4, "pooling": "stats",
                           "dropout": 0.3, "batch_norm": True, "time_pool": 3}},
    ),
    "tdnn": Preset(
        description="a time-delay CNN over per-speaker standardised mel-dB (the bands as channels, dilated 1D "
                    "convolutions along time, attentive statistics pooling; 257 k parameters), fast enough for a "
                    "CPU; trained on the original clips (with the augmented copies its validation UAR was 2 to 4 "
                    "points lower), with SpecAugment, mixup, label smoothing and a cosine schedule",
        train={"model": "tdnn", "optimizer": "adam", "lr": 2e-3, "epochs": 30, "batch_size": 64,
               "weight_decay": 1e-4, "speaker_norm": True, "spec_augment": True, "mixup": 0.2,
               "label_smoothing": 0.1, "schedule": "cosine", "variants": "original", "patience": 0,
               "hparams": {"channels": 128, "time_pool": 2, "dropout": 0.3}},
    ),
    "tdnn-pair": Preset(
        description="two draws of 'tdnn' (the run's seed and the next), their class probabilities averaged: "
                    "CNNs alone, at twice the training time of one",
        train={}, members=(Member("tdnn"), Member("tdnn", 1)),
    ),
    "compare-tdnn": Preset(
        description="the late fusion of 'compare' (weight 0.6), scored by its summed pairwise confidences "
                    "over a temperature of 2, and two draws of 'tdnn' (0.2 each): their class probabilities "
                    "averaged, the temperature and the SVM's weight chosen on an inner validation split of "
                    "training actors",
        train={}, weights=(0.6, 0.2, 0.2),
        members=(Member("compare", hparams={"scores": "confidence", "temperature": 2.0}),
                 Member("tdnn"), Member("tdnn", 1)),
        requires={"stats": ["mean", "std"], "extras": ["prosody", "dynamics", "compare"]},
        featurize_hint="--stats mean,std --extras prosody,dynamics,compare",
    ),
    "study-cnn1d": Preset(
        description="the study's 1D CNN as it trained it: Adam, lr 0.001, 100 epochs",
        train={"model": "cnn1d", "optimizer": "adam", "lr": 1e-3, "epochs": 100},
    ),
    "study-cnn2d": Preset(
        description="the study's 2D CNN: filters 128,128,64,64,32, kernels 1x3,3x5,3x5,3x3,3x3, flattened head",
        train={"model": "cnn2d", "optimizer": "adam", "lr": 1e-3, "epochs": 100,
               "hparams": {"filters": [128, 128, 64, 64, 32], "kernels": [[1, 3], [3, 5], [3, 5], [3, 3], [3, 3]],
                           "pooling": "flatten", "batch_norm": True, "dropout": 0.0}},
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise SerError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_config(name: str, **overrides: Any):
    """The TrainConfig a (single-model) preset describes, with ``overrides`` of its fields."""
    from ser.training.loop import TrainConfig

    preset = get_preset(name)
    if preset.members:
        names = ", ".join(m.name for m in preset.members)
        raise SerError(f"preset {name!r} fuses {names}: it has no single config")
    return TrainConfig(**{**preset.train, **overrides})


def member_config(member: Member, seed: int | None = None):
    """The TrainConfig of a fused preset's ``member``: its preset's, seeded with ``seed`` (the
    preset's own when None) plus the member's offset, with the member's hyper-parameters."""
    base = preset_config(member.preset)
    return replace(base, seed=(base.seed if seed is None else seed) + member.seed_offset,
                   hparams={**base.hparams, **member.hparams})


def check_store(preset_name: str, feature_config: dict[str, Any], store_path: str) -> None:
    """Refuse a store that lacks what the preset needs, saying how to featurize it."""
    preset = get_preset(preset_name)
    missing = []
    for key, needed in preset.requires.items():
        have = set(feature_config.get(key) or [])
        lacking = [v for v in needed if v not in have]
        if lacking:
            missing.append(f"{key} {','.join(lacking)}")
    if missing:
        raise SerError(f"preset {preset_name!r} needs a store with {'; '.join(missing)}; {store_path} lacks it. "
                       f"Featurize with {preset.featurize_hint}")
