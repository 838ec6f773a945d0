"""The feature store: the only code that knows its HDF5 layout."""

from ser.store.writer import SCHEMA_VERSION, Store, StoreWriter, read_attrs, work_dir

__all__ = ["SCHEMA_VERSION", "Store", "StoreWriter", "read_attrs", "work_dir"]
