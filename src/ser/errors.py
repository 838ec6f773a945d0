"""The project's domain errors: one clear message each, raised early."""


class SerError(Exception):
    """Base class: a problem a user can act on (bad input, mismatched files)."""


class AudioError(SerError):
    """An audio file cannot be used; the message names the file and the reason."""


class CorpusError(SerError):
    """A folder or manifest cannot be turned into a clip table."""


class StoreError(SerError):
    """A feature store is missing, incomplete, corrupt, or does not match what is asked."""


class CheckpointError(SerError):
    """A checkpoint cannot be loaded, or does not match the store it is used with."""
