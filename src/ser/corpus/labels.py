"""Emotion label codes. CREMA-D's codes are the project's label names."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from ser.errors import SerError

#: CREMA-D's six emotions, in the order used for class indices by default.
CREMAD_EMOTIONS: tuple[str, ...] = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
#: Codes other corpora add that have no CREMA-D twin.
EXTRA_EMOTIONS: tuple[str, ...] = ("BOR", "CAL", "SUR")
ALL_EMOTIONS: tuple[str, ...] = CREMAD_EMOTIONS + EXTRA_EMOTIONS

EMOTION_NAMES: dict[str, str] = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
    "BOR": "boredom",
    "CAL": "calm",
    "SUR": "surprise",
}

#: Emotion words and codes -> the project's code: how emotion-named folders and manifests spell
#: an emotion. Keys are lower case with words joined by "_" (see :func:`normalize_word`).
EMOTION_WORDS: dict[str, str] = {
    **{code.lower(): code for code in ALL_EMOTIONS},
    **{name: code for code, name in EMOTION_NAMES.items()},
    "angry": "ANG",
    "disgusted": "DIS",
    "fearful": "FEA",
    "afraid": "FEA",
    "happiness": "HAP",
    "sadness": "SAD",
    "bored": "BOR",
    "surprised": "SUR",
    "pleasant_surprise": "SUR",
    "pleasant_surprised": "SUR",
    "ps": "SUR",  # TESS's short form of pleasant surprise
}


def normalize_word(text: str) -> str:
    """``" Pleasant Surprise"`` -> ``"pleasant_surprise"``: lower case, spaces, hyphens and
    underscores between words as one ``"_"``."""
    return re.sub(r"[\s_\-]+", "_", text.strip().lower()).strip("_")


def emotion_word(text: str) -> str | None:
    """The project's code for an emotion word or code in any case (``Angry``, ``anger``,
    ``ANG``, ``Pleasant_surprise``, ``ps``), or None when ``text`` names no emotion."""
    return EMOTION_WORDS.get(normalize_word(text))


def parse_emotions(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Parse ``"ANG,DIS"`` (or a sequence) into validated codes; ``None``/empty means all."""
    if text is None:
        return None
    items = [t.strip().upper() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    if not items:
        return None
    unknown = [t for t in items if t not in ALL_EMOTIONS]
    if unknown:
        raise SerError(
            f"unknown emotion code(s) {', '.join(unknown)}; known: {', '.join(ALL_EMOTIONS)}"
        )
    return tuple(dict.fromkeys(items))


def label_list(emotions: Iterable[str]) -> list[str]:
    """The class list for a set of present emotions: CREMA-D order first, then extras."""
    present = set(emotions)
    return [e for e in ALL_EMOTIONS if e in present]
