"""The store's layout: the one place that knows what a ``feats.h5`` (and a part of one) holds.

Layout (schema version :data:`SCHEMA_VERSION`):

- ``/descriptors``: ``(rows, D)`` float32, h5py; ``attrs["names"]`` is the JSON list of names.
- ``/mel``: ``(rows, n_mels, frames)`` float32 mel power in dB, h5py, one chunk per row.
- ``/meta``: a pandas table (PyTables ``format="table"``), one row per array row, its index
  the row number: ``pd.read_hdf(path, "meta")`` works.
- ``/failures``: a pandas table of files that could not be used (``path``, ``clip_id``, ``reason``).
- root attributes: ``ser_schema_version``, ``feature_config``, ``split_config``, ``run_config``,
  ``labels`` (JSON), ``package_version``, ``complete``, ``n_rows``, ``session`` (the id of the
  run that wrote it) and ``plan_digest`` (a hash of the clip list and its split).

Every array chunk and both tables carry HDF5's Fletcher-32 filter (the tables are also
zlib-compressed, level 1) and the file's own metadata is checksummed (HDF5 1.10 format), so a
flipped byte is a read error, never a silently wrong number. Version 1 stores are refused.

A part (``feats.h5.partial/part-NNNNNN.h5``, see :mod:`ser.store.parts`) holds the same arrays,
with the same mel chunks (so they are copied into the store as stored), and its meta and
failures as plain h5py columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

SCHEMA_VERSION = 2

#: Every meta column, in the order the store keeps them.
META_COLUMNS = ("clip_id", "path", "dataset", "speaker", "emotion", "label", "split", "augment",
                "duration_s", "n_frames", "sentence", "intensity", "sex", "age")
#: The meta columns each variant of a clip adds.
VARIANT_COLUMNS = ("augment", "duration_s", "n_frames")
#: The meta columns a clip carries from the corpus scan and split (the clip table's), in order.
CLIP_COLUMNS = tuple(c for c in META_COLUMNS if c not in VARIANT_COLUMNS)
NUMERIC = {"label": np.int64, "n_frames": np.int64, "duration_s": np.float64, "age": np.float64}
META_STRING_COLUMNS = tuple(c for c in META_COLUMNS if c not in NUMERIC)
FAILURE_COLUMNS = ("clip_id", "path", "reason")
FAMILIES = ("descriptors", "mel")
SPLITS = ("train", "val", "test")

REASON_BYTES = 240
DATA_COLUMNS = ["split", "emotion", "speaker", "augment"]
TABLE_FILTERS: dict[str, Any] = dict(complevel=1, complib="zlib", fletcher32=True)
LIBVER = ("v110", "latest")  # superblock v3 and v2 object headers: checksummed metadata
DESCRIPTOR_CHUNK_ROWS = 256
# what h5py, PyTables and pandas raise on damaged files (tables' errors derive from these)
READ_ERRORS = (OSError, LookupError, ValueError, RuntimeError, TypeError, AttributeError, SystemError,
               ArithmeticError, MemoryError, EOFError)


def mel_shape(feature_config: Mapping[str, Any]) -> tuple[int, int]:
    """``(n_mels, frames)`` of every stored mel row: the frame count of ``max_seconds`` of audio
    (``1 + samples // hop``, centred frames), from the feature config the store records."""
    samples = int(round(feature_config["max_seconds"] * feature_config["sample_rate"]))
    return int(feature_config["n_mels"]), 1 + samples // int(feature_config["hop_length"])


def json_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def itemsizes(table: pd.DataFrame, columns: Iterable[str], floor: int = 8) -> dict[str, int]:
    """PyTables string widths (UTF-8 bytes) wide enough for every value in ``table``."""
    sizes = {}
    for col in columns:
        values = plain_strings(table[col]).unique() if col in table else [""]
        longest = max((len(v.encode("utf-8")) for v in values), default=0)
        sizes[col] = max(floor, longest)
    return sizes


def plain_strings(values: pd.Series) -> pd.Series:
    """Values as plain ``str`` objects, missing ones as ``""``.

    pandas 3's ``astype(str)`` keeps NaN as NaN, and a concatenated clip table (clips plus
    skipped files) has NaN where a frame lacked a column. Values that are all ``str`` already
    come back as they are: a batch's string columns pass through here three times.
    """
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    return values.map(lambda v: "" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v),
                      na_action=None).astype(object)


def as_plain(frame: pd.DataFrame, string_columns: Iterable[str]) -> pd.DataFrame:
    """Plain object strings (PyTables does not take pandas' newer string dtypes)."""
    frame = frame.copy()
    for col in string_columns:
        if col in frame:
            frame[col] = plain_strings(frame[col])
    return frame


def clip_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[: limit - 3].decode("utf-8", "ignore") + "..."


def write_columns(group: Any, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    import h5py

    for col in columns:
        if col in NUMERIC:
            group.create_dataset(col, data=frame[col].to_numpy(dtype=NUMERIC[col]))
        else:
            values = np.array(list(plain_strings(frame[col])), dtype=object)
            group.create_dataset(col, data=values, dtype=h5py.string_dtype("utf-8"))


def read_columns(path: Path, key: str, columns: Sequence[str], *, only: Sequence[str] | None = None) -> pd.DataFrame:
    """A part's ``meta`` or ``failures`` rows as a frame (plain object strings); ``only``: these columns."""
    import h5py

    wanted = list(only or columns)
    with h5py.File(path, "r") as f:
        if key not in f:
            return pd.DataFrame({c: pd.Series([], dtype=NUMERIC.get(c, object)) for c in wanted})
        group = f[key]
        data = {}
        for col in wanted:
            if col in NUMERIC:
                data[col] = group[col][:].astype(NUMERIC[col])
            else:
                data[col] = pd.Series(list(group[col].asstr()[:]), dtype=object)
    return pd.DataFrame(data)


def filters(ds: Any) -> list[tuple]:
    plist = ds.id.get_create_plist()
    return [plist.get_filter(i) for i in range(plist.get_nfilters())]


def create_arrays(f: Any, n: int, descriptor_names: Sequence[str], mel_rows: tuple[int, int]) -> tuple[Any, Any]:
    """Create a store's (or a part's) ``descriptors`` ``(n, D)`` and ``mel`` ``(n, n_mels, frames)``:
    float32, Fletcher-32 on every chunk, one mel row per chunk (so parts' chunks copy as stored)."""
    d_cols = len(descriptor_names)
    d = f.create_dataset("descriptors", shape=(n, d_cols), maxshape=(None, d_cols), dtype="float32",
                         chunks=(DESCRIPTOR_CHUNK_ROWS, d_cols), fletcher32=True)
    d.attrs["names"] = json_attr(list(descriptor_names))
    m = f.create_dataset("mel", shape=(n,) + tuple(mel_rows), maxshape=(None,) + tuple(mel_rows), dtype="<f4",
                         chunks=(1,) + tuple(mel_rows), fletcher32=True)
    return d, m


def same_chunks(src: Any, dst: Any) -> bool:
    """Whether ``src``'s stored chunks are valid chunks of ``dst`` as they are: one row per chunk
    on both sides, the same dtype, row shape and filter pipeline (Fletcher-32 and its settings)."""
    if not (hasattr(src.id, "read_direct_chunk") and hasattr(dst.id, "write_direct_chunk")):
        return False
    one_row = (1,) + tuple(dst.shape[1:])
    return (src.chunks == dst.chunks == one_row and src.dtype == dst.dtype
            and tuple(src.shape[1:]) == tuple(dst.shape[1:]) and filters(src) == filters(dst))


def copy_rows(src: Any, dst: Any, rows: int, at: int, *, block: int = 256) -> None:
    """Copy the first ``rows`` rows of ``src`` to ``dst`` from row ``at``: chunk for chunk as stored
    where the layouts agree (:func:`same_chunks`: nothing decoded or re-encoded, and each chunk's
    checksum travels with it, so a chunk damaged in ``src`` fails its check whenever ``dst`` is
    read), else decoded, ``block`` rows at a time."""
    if not same_chunks(src, dst):
        for lo in range(0, rows, block):
            hi = min(lo + block, rows)
            dst[at + lo:at + hi] = src[lo:hi]
        return
    read, write = src.id.read_direct_chunk, dst.id.write_direct_chunk
    rest = (0,) * (len(dst.shape) - 1)
    for i in range(rows):
        mask, chunk = read((i,) + rest)
        write((at + i,) + rest, chunk, mask)
