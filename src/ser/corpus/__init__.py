"""Corpora as folders of audio: adapters (each corpus's file names), the scan into a clip table,
splits, synthetic corpora."""
