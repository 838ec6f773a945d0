"""Metrics, evaluation of a checkpoint on a store, prediction on new audio."""
