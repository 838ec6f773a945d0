"""Waveforms: decoding and augmentation (pure functions taking a ``np.random.Generator``)."""

from ser.audio.decode import load_audio

__all__ = ["load_audio"]
