"""The featurize job: scan, split, then workers decode, augment, extract and write their own parts."""

from ser.featurize.job import FeaturizeConfig, featurize, plan

__all__ = ["FeaturizeConfig", "featurize", "plan"]
