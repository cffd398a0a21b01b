"""Stable, vectorized 64-bit hashing.

Everything that must not depend on how rows are split into blocks — derived
event ids, user partitions, negative draws, shuffle order — is keyed by these
hashes of row identity, so the same input gives the same output on any cluster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hash of each string (nulls hash like the empty string)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if len(values) == 0:
        return np.zeros(0, dtype=np.uint64)
    # Hash each distinct string once: ids repeat a lot (users, items, types),
    # and Arrow's dictionary encoding is far cheaper than hashing Python objects.
    encoded = pc.dictionary_encode(pc.fill_null(values, ""))
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(distinct, categorize=False)[encoded.indices.to_numpy(zero_copy_only=False)]


def splitmix64(x: np.ndarray | int) -> np.ndarray:
    """The splitmix64 finaliser: a bijective mix of 64-bit integers."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def combine(*parts: np.ndarray | int) -> np.ndarray:
    """Hash several uint64 arrays/scalars (broadcast together) into one."""
    h = np.uint64(0)
    for part in parts:
        h = splitmix64(np.asarray(h, dtype=np.uint64) ^ np.asarray(part, dtype=np.uint64))
    return h


def to_unit_interval(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats uniform in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def to_hex_ids(h: np.ndarray, prefix: str = "") -> pa.Array:
    """Arrow strings `prefix` + 16 lower-case hex digits of each uint64 hash."""
    h = np.asarray(h, dtype=np.uint64)
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    width = len(head) + 16
    nibbles = np.ascontiguousarray(h.astype(">u8")).view(np.uint8).reshape(-1, 8)
    chars = np.empty((len(h), width), dtype=np.uint8)
    chars[:, : len(head)] = head
    chars[:, len(head)::2] = _HEX_DIGITS[nibbles >> 4]
    chars[:, len(head) + 1::2] = _HEX_DIGITS[nibbles & 15]
    offsets = np.arange(0, (len(h) + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(len(h), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))
