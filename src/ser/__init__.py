"""ser: speech emotion recognition from a precomputed HDF5 feature store.

The flow: corpus folder -> clip table (:mod:`ser.corpora`) -> clip-level split
(:mod:`ser.splits`) -> decode, augment train clips, extract features
(:mod:`ser.featurize`) -> one HDF5 store (:mod:`ser.store`) -> training
(:mod:`ser.train`) -> checkpoint -> :mod:`ser.evaluate` / :mod:`ser.predict`.
"""

__version__ = "0.1.0"
