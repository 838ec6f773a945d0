"""Corpora as folders of audio: adapters, the scan into a clip table, splits, synthetic corpora."""
