"""Feature maths: pure ``(y, sr, config)`` to arrays, no I/O."""

from ser.features.extractor import FeatureConfig, descriptor_names, extract, extract_many

__all__ = ["FeatureConfig", "descriptor_names", "extract", "extract_many"]
