"""The feature store: the only code that knows its HDF5 layout (:mod:`ser.store.layout`).

:mod:`~ser.store.files` (work folder, fsync, the writer's lock), :mod:`~ser.store.parts` (what
one task writes), :mod:`~ser.store.writer` (commit and merge), :mod:`~ser.store.reader`.
"""

from ser.store.files import work_dir
from ser.store.layout import SCHEMA_VERSION
from ser.store.reader import Store, StoreChanged, describe_differences, read_attrs
from ser.store.writer import StoreWriter

__all__ = ["SCHEMA_VERSION", "Store", "StoreChanged", "StoreWriter", "describe_differences", "read_attrs",
           "work_dir"]
