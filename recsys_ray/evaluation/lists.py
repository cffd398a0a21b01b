"""Per-user lists of vocabulary indices as flat NumPy arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

IndexLists = pa.Array | pa.ChunkedArray | Sequence[Sequence[int] | np.ndarray]


def flat_lists(lists: IndexLists) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row of each value, values, length of each list) of per-user integer lists.

    `lists` is an Arrow list array or a sequence of integer sequences. A null
    list counts as empty and a null value as 0 (padding); values come back as
    int64, in list order.
    """
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks() if lists.num_chunks != 1 else lists.chunk(0)
    if not isinstance(lists, pa.Array):
        arrays = [np.asarray(values, dtype=np.int64).ravel() for values in lists]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        values = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return np.repeat(np.arange(len(arrays)), lengths), values, lengths
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
        raise TypeError(f"expected a list array, got {lists.type}")
    offsets = lists.offsets.to_numpy().astype(np.int64)
    spans = np.diff(offsets)
    # The values behind the offsets (a null list may still span some), re-based for a slice.
    values = pc.fill_null(lists.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])), 0)
    values = values.to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(len(spans)), spans)
    if lists.null_count:
        is_null = lists.is_null().to_numpy(zero_copy_only=False)
        keep = ~is_null[rows]
        rows, values = rows[keep], values[keep]
        spans = np.where(is_null, 0, spans)
    return rows, values, spans


def sorted_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values ascending and, for each, the position of its first occurrence.

    One stable sort: far faster than np.unique on large integer arrays.
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered[first], order[first]
