"""Feature maths: pure ``(y, sr, config)`` to arrays, no I/O."""

from ser.features.config import FeatureConfig, descriptor_names
from ser.features.extractor import extract, extract_many, extract_variants

__all__ = ["FeatureConfig", "descriptor_names", "extract", "extract_many", "extract_variants"]
