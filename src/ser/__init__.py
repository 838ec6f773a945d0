"""ser: speech emotion recognition from a precomputed HDF5 feature store.

The flow: corpus folder -> clip table (:mod:`ser.corpus.scan`) -> clip-level split
(:mod:`ser.corpus.splits`) -> decode, augment train clips, extract features
(:mod:`ser.featurize.job`) -> one HDF5 store (:mod:`ser.store.writer`) -> training
(:mod:`ser.training.loop`) -> checkpoint -> :mod:`ser.evaluation.evaluator` / :mod:`ser.evaluation.predict`.
"""

__version__ = "0.1.0"
