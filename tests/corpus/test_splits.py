"""Clip-level and speaker-level splits: proportions, stratification, no leakage, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ser.errors import SerError
from ser.corpus.labels import CREMAD_EMOTIONS
from ser.corpus.splits import SplitConfig, assign_splits


def clip_table(counts: dict[str, int], n_speakers: int = 20, seed: int = 0) -> pd.DataFrame:
    """A clip table with ``counts[emotion]`` clips each, speakers assigned at random (seeded)."""
    rng = np.random.default_rng(seed)
    rows = []
    for emotion, n in counts.items():
        for i in range(n):
            speaker = f"{1001 + int(rng.integers(n_speakers))}"
            rows.append({"clip_id": f"{speaker}_{emotion}_{i:03d}", "speaker": speaker, "emotion": emotion})
    frame = pd.DataFrame(rows, columns=["clip_id", "speaker", "emotion"])
    return frame.sort_values("clip_id").reset_index(drop=True)


BALANCED = {e: 100 for e in CREMAD_EMOTIONS}                    # 600 clips
UNEVEN = dict(zip(CREMAD_EMOTIONS, (40, 80, 120, 60, 200, 100)))  # 600 clips, imbalanced


def test_random_split_is_70_30_then_5_percent_val_stratified() -> None:
    clips = clip_table(BALANCED)
    split = assign_splits(clips, SplitConfig())
    counts = pd.crosstab(clips["emotion"], split)
    assert set(split) == {"train", "val", "test"}
    assert (counts["test"] == 30).all()            # 30% of every emotion's 100 clips
    assert counts["test"].sum() == 180
    assert counts["val"].sum() == 21               # 5% of the 420 remaining clips
    assert counts["val"].between(3, 4).all()       # ... spread over emotions (21 / 6 = 3.5)
    assert (counts.sum(axis=1) == 100).all()       # every clip has exactly one split


def test_random_split_keeps_each_emotions_share_when_classes_are_imbalanced() -> None:
    clips = clip_table(UNEVEN)
    split = assign_splits(clips, SplitConfig(test_size=0.3, val_size=0.1))
    per_emotion = pd.crosstab(clips["emotion"], split)
    totals = clips["emotion"].value_counts()
    for emotion, n in UNEVEN.items():
        assert abs(per_emotion.loc[emotion, "test"] - 0.3 * n) <= 1
        assert abs(per_emotion.loc[emotion, "val"] - 0.1 * 0.7 * n) <= 1
    # the class balance of each split follows the corpus's
    share = per_emotion / per_emotion.sum(axis=0)
    np.testing.assert_allclose(share["test"], totals[share.index] / len(clips), atol=0.01)


def test_split_is_reproducible_from_the_seed_and_changes_with_it() -> None:
    clips = clip_table(BALANCED)
    a = assign_splits(clips, SplitConfig(seed=42))
    b = assign_splits(clips, SplitConfig(seed=42))
    c = assign_splits(clips, SplitConfig(seed=43))
    pd.testing.assert_series_equal(a, b)
    assert (a != c).any()
    assert (c == "test").sum() == 180  # another seed, same proportions


def test_split_is_aligned_with_the_clip_tables_index() -> None:
    clips = clip_table(BALANCED).set_index(pd.Index(np.arange(600) * 10 + 5))
    split = assign_splits(clips, SplitConfig())
    assert split.index.equals(clips.index)
    assert split.name == "split"


@pytest.mark.parametrize("test_size, expected", [(0.0, {"train", "val"}), (1.0, {"test"})])
def test_random_split_extremes(test_size: float, expected: set[str]) -> None:
    clips = clip_table(BALANCED)
    split = assign_splits(clips, SplitConfig(test_size=test_size))
    assert set(split) == expected
    if test_size == 0.0:
        assert (split == "val").sum() == 30  # 5% of all 600 clips


def test_zero_val_size_gives_no_validation_clips() -> None:
    split = assign_splits(clip_table(BALANCED), SplitConfig(val_size=0.0))
    assert set(split) == {"train", "test"}


def test_speaker_split_puts_no_speaker_in_two_splits() -> None:
    clips = clip_table(BALANCED, n_speakers=20)
    split = assign_splits(clips, SplitConfig(method="speaker"))
    per_speaker = clips.assign(split=split).groupby("speaker")["split"].nunique()
    assert (per_speaker == 1).all()
    speakers = clips.assign(split=split).groupby("split")["speaker"].nunique()
    assert speakers["test"] == 6    # 30% of 20 speakers
    assert speakers["val"] == 1     # 5% of the remaining 14, at least one
    assert speakers["train"] == 13


def test_speaker_split_with_few_speakers_keeps_a_training_speaker() -> None:
    clips = clip_table(BALANCED, n_speakers=3)
    split = assign_splits(clips, SplitConfig(method="speaker", test_size=0.9))
    by_split = clips.assign(split=split).groupby("split")["speaker"].nunique()
    assert by_split.get("train", 0) >= 1
    assert (clips.assign(split=split).groupby("speaker")["split"].nunique() == 1).all()


@pytest.mark.parametrize("test_size, expected", [(0.0, {"train", "val"}), (1.0, {"test"})])
def test_speaker_split_extremes(test_size: float, expected: set[str]) -> None:
    clips = clip_table(BALANCED, n_speakers=8)
    split = assign_splits(clips, SplitConfig(method="speaker", test_size=test_size))
    assert set(split) == expected


def test_speaker_split_is_seeded() -> None:
    clips = clip_table(BALANCED, n_speakers=20)
    a = assign_splits(clips, SplitConfig(method="speaker", seed=1))
    b = assign_splits(clips, SplitConfig(method="speaker", seed=1))
    c = assign_splits(clips, SplitConfig(method="speaker", seed=2))
    pd.testing.assert_series_equal(a, b)
    assert (a != c).any()


def test_speaker_split_needs_every_speaker() -> None:
    clips = clip_table(BALANCED)
    clips.loc[3, "speaker"] = ""
    with pytest.raises(SerError, match="speaker"):
        assign_splits(clips, SplitConfig(method="speaker"))


@pytest.mark.filterwarnings("ignore:split not stratified:UserWarning")
@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_handful_of_clips_still_splits_and_keeps_a_training_clip(n: int) -> None:
    # regression: sklearn refused to hold 5% of one clip out, and the error escaped
    clips = clip_table(dict(zip(CREMAD_EMOTIONS, [1] * n)))
    split = assign_splits(clips, SplitConfig())
    assert len(split) == n and (split == "train").sum() >= 1
    assert set(split) <= {"train", "val", "test"}


def test_empty_clip_table_is_refused() -> None:
    with pytest.raises(SerError, match="empty"):
        assign_splits(clip_table({}), SplitConfig())


@pytest.mark.parametrize("kwargs", [dict(method="stratified"), dict(test_size=1.5), dict(test_size=-0.1),
                                    dict(val_size=1.0)])
def test_bad_split_config_is_refused(kwargs: dict) -> None:
    with pytest.raises(SerError):
        SplitConfig(**kwargs)


def test_split_config_round_trips_through_a_dict() -> None:
    cfg = SplitConfig(method="speaker", test_size=0.25, val_size=0.1, seed=7)
    assert SplitConfig(**cfg.to_dict()) == cfg
