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
_HEX = np.array([f"{i:02x}" for i in range(256)])


def hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hash of each string (nulls hash like the empty string)."""
    objects = pc.fill_null(values, "").to_numpy(zero_copy_only=False)
    return pd.util.hash_array(objects, categorize=True)


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


def to_hex(h: np.ndarray) -> np.ndarray:
    """16-character lower-case hex strings of uint64 hashes."""
    as_bytes = np.ascontiguousarray(h.astype(">u8")).view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(_HEX[as_bytes]).view("<U16").reshape(-1)
