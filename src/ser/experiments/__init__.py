"""Sweeps, speaker cross-validation, presets and the demo, built on training and evaluation."""
