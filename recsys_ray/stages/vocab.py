"""Vocabularies: categorical values to dense int32 indices, counted on the training window.

Index 0 is padding and null, index 1 is out-of-vocabulary (a value not counted
in the training window, or counted fewer than `min_frequency` times), and the
kept values take indices from 2 in order of count descending, then value
ascending (Arrow's string order: UTF-8 bytes). Counts are training-window
events; for an item attribute (category, brand) they are the training-window
events of items that have that attribute in the catalog.

Counting is exact across batches: `vocab_partials` counts one batch's events,
`combine_vocab_partials` sums the counts of the same value, so any partition of
the events gives the same vocabularies. The build counts only user_id per partition
(its partitions hold disjoint users, so those counts are final), takes each item's count
from the summed item partials it has already made (an item's training-window events) and
adds the attributes' counts from those (`vocabularies_from_partitions`: an attribute's count
is the sum of its items' counts), so no partition looks its items up in the whole catalog
and no item is counted twice. A vocabulary table stores only the kept
values (rows for the reserved indices 0 and 1 are not stored); its cardinality,
what an embedding table needs, is `vocabulary_cardinality` = rows + 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray.hashing import ValuePositions

PADDING_INDEX = 0
OOV_INDEX = 1
RESERVED_INDICES = 2

EVENT_COLUMNS: tuple[str, ...] = ("user_id", "item_id")
ATTRIBUTE_COLUMNS: tuple[str, ...] = ("item_category", "item_brand")
VOCABULARY_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, *ATTRIBUTE_COLUMNS)
# Catalog column each item attribute comes from.
CATALOG_ATTRIBUTES: dict[str, str] = {"item_category": "category", "item_brand": "brand"}

VOCAB_PARTIALS = pa.schema([
    pa.field("column", pa.string()),
    pa.field("value", pa.string()),
    pa.field("count", pa.int64()),
])
VOCABULARY = pa.schema([
    pa.field("value", pa.string()),
    pa.field("index", pa.int32()),
    pa.field("count", pa.int64()),
])


def item_attributes(catalog: pa.Table | None) -> pa.Table:
    """The catalog as the attribute lookup of `vocab_partials`: item_id, item_category, item_brand.

    `catalog` holds one row per item (validated, de-duplicated); a missing
    catalog or column gives null attributes, which are not counted.
    """
    fields = [pa.field("item_id", pa.string())] + [pa.field(c, pa.string()) for c in ATTRIBUTE_COLUMNS]
    if catalog is None:
        return pa.schema(fields).empty_table()
    columns = {"item_id": catalog.column("item_id")}
    for name, source in CATALOG_ATTRIBUTES.items():
        columns[name] = (catalog.column(source) if source in catalog.column_names
                         else pa.nulls(catalog.num_rows, pa.string()))
    return pa.table(columns).cast(pa.schema(fields))


def vocab_partials(train_events: pa.Table, attributes: pa.Table,
                   columns: Sequence[str] = VOCABULARY_COLUMNS) -> pa.Table:
    """Event counts per value of each of `columns` in this batch (`VOCAB_PARTIALS` rows).

    `train_events` are training-window events (any partition of them: a batch
    of whole users works); `attributes` (from `item_attributes`) is the same
    catalog lookup for every batch. An event counts once for its user_id, its
    item_id and each non-null attribute of its item; events of items outside
    the catalog count for no attribute. Rows are sorted by (column, value).
    """
    unknown = [c for c in columns if c not in VOCABULARY_COLUMNS]
    if unknown:
        raise ValueError(f"no vocabulary for {unknown}; expected some of {list(VOCABULARY_COLUMNS)}")
    parts = []
    item_rows = None
    for column in columns:
        if column in EVENT_COLUMNS:
            values = train_events.column(column)
        else:
            if item_rows is None:
                item_rows = pc.index_in(train_events.column("item_id"),
                                        value_set=_single_chunk(attributes.column("item_id")))
            values = _single_chunk(attributes.column(column)).take(item_rows)
        parts.append(_value_counts(column, values))
    return combine_vocab_partials(parts)


def attribute_counts(item_counts: pa.Table, attributes: pa.Table) -> dict[str, pa.Table]:
    """The (value, count) rows of each item attribute (`ATTRIBUTE_COLUMNS`): for each
    attribute value, the summed counts of the items that have it in `attributes`
    (`item_attributes`), from `item_counts` (value: item_id, count; one row per item).
    Items outside the catalog and null attributes count for no value."""
    rows = pc.index_in(item_counts.column("value"), value_set=_single_chunk(attributes.column("item_id")))
    out = {}
    for column in ATTRIBUTE_COLUMNS:
        values = pa.table({"value": _single_chunk(attributes.column(column)).take(rows),
                           "count": item_counts.column("count")})
        values = values.filter(pc.is_valid(values.column("value")))
        summed = values.group_by("value", use_threads=False).aggregate([("count", "sum")])
        out[column] = pa.table({"value": summed.column("value"), "count": summed.column("count_sum")})
    return out


def with_attribute_counts(combined: pa.Table, attributes: pa.Table) -> pa.Table:
    """Combined partials of user_id and item_id plus the counts of each item attribute
    (`attribute_counts`). Equal to `vocab_partials` with attributes over the same events;
    rows sorted by (column, value)."""
    parts = [combined.filter(pc.invert(pc.is_in(combined.column("column"), value_set=pa.array(ATTRIBUTE_COLUMNS))))]
    for column, counts in attribute_counts(column_counts(combined, "item_id"), attributes).items():
        parts.append(pa.table({"column": pa.repeat(pa.scalar(column, pa.string()), counts.num_rows),
                               "value": counts.column("value"), "count": counts.column("count")},
                              schema=VOCAB_PARTIALS))
    return combine_vocab_partials(parts)


def vocabularies_from_partitions(user_counts: Iterable[pa.Table], item_totals: pa.Table, attributes: pa.Table,
                                 min_frequency: int = 1) -> dict[str, pa.Table]:
    """Every vocabulary (`VOCABULARY_COLUMNS`) of a snapshot held in partitions of whole users,
    from what the build has already counted: each partition's training-window user counts
    (`vocab_partials_for_partition` with columns ("user_id",)) and the snapshot's summed item
    partials (`features.sum_item_partials`: item_id and `total`, its training-window events).

    Equal to `make_vocabulary` over `with_attribute_counts` of the combined partials, without
    summing the item counts of every partition a second time or combining the users' counts
    (they are disjoint: a user counted in two partitions raises in `make_vocabulary`)."""
    users = pa.concat_tables([VOCAB_PARTIALS.empty_table(),
                              *(p.select(VOCAB_PARTIALS.names).cast(VOCAB_PARTIALS) for p in user_counts)])
    items = pa.table({"value": item_totals.column("item_id"), "count": item_totals.column("total")})
    items = items.filter(pc.greater(items.column("count"), 0))
    counts = {"user_id": users.filter(pc.equal(users.column("column"), "user_id")).select(["value", "count"]),
              "item_id": items, **attribute_counts(items, attributes)}
    return {column: make_vocabulary(counts[column], min_frequency) for column in VOCABULARY_COLUMNS}


def combine_vocab_partials(partials: pa.Table | Iterable[pa.Table]) -> pa.Table:
    """Sum the counts of each (column, value) over partials; rows sorted by (column, value)."""
    table = partials if isinstance(partials, pa.Table) else pa.concat_tables(
        [VOCAB_PARTIALS.empty_table(), *(p.select(VOCAB_PARTIALS.names).cast(VOCAB_PARTIALS) for p in partials)])
    table = table.select(VOCAB_PARTIALS.names).cast(VOCAB_PARTIALS)
    if table.num_rows == 0:
        return VOCAB_PARTIALS.empty_table()
    summed = table.group_by(["column", "value"], use_threads=False).aggregate([("count", "sum")])
    return pa.table({"column": summed.column("column"), "value": summed.column("value"),
                     "count": summed.column("count_sum")}, schema=VOCAB_PARTIALS).sort_by(
        [("column", "ascending"), ("value", "ascending")])


def column_counts(combined: pa.Table, column: str) -> pa.Table:
    """The (value, count) rows of one column in combined partials."""
    return combined.filter(pc.equal(combined.column("column"), column)).select(["value", "count"])


def make_vocabulary(counts: pa.Table, min_frequency: int = 1) -> pa.Table:
    """The vocabulary (`VOCABULARY`) of values counted `counts` (value, count; one row per value).

    Values with count < `min_frequency` are left out (they look up as 1); the
    rest get indices 2, 3, ... by count descending, then value ascending.
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
    table = counts.select(["value", "count"]).cast(pa.schema([VOCABULARY.field("value"), VOCABULARY.field("count")]))
    table = table.filter(pc.and_(pc.is_valid(table.column("value")),
                                 pc.greater_equal(table.column("count"), min_frequency)))
    # Sorted by value, then stably by count: the same order as sorting on both keys in
    # about half the time (10M users: 6 s against 11 s), and repeated values become
    # neighbours, which is the check for one row per value.
    values = _single_chunk(table.column("value"))
    by_value = pc.sort_indices(values).to_numpy()
    if len(by_value) > 1:
        ordered = values.take(pa.array(by_value))
        if pc.any(pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))).as_py():
            raise ValueError("counts must hold one row per value (combine partials first)")
    counts = _single_chunk(table.column("count")).to_numpy(zero_copy_only=False)
    order = by_value[np.argsort(-counts[by_value], kind="stable")]
    index = pa.array(np.arange(RESERVED_INDICES, RESERVED_INDICES + table.num_rows, dtype=np.int32))
    return pa.table({"value": values.take(pa.array(order)), "index": index,
                     "count": pa.array(counts[order], pa.int64())}, schema=VOCABULARY)


def vocabulary_cardinality(vocabulary: pa.Table) -> int:
    """Size of an embedding table for the vocabulary: largest index + 1, reserved indices included."""
    if vocabulary.num_rows == 0:
        return RESERVED_INDICES
    return int(pc.max(vocabulary.column("index")).as_py()) + 1


@dataclass(frozen=True)
class VocabularyLookup:
    """A vocabulary ready for looking up many batches (`lookup_indices`): built once from its
    table on the driver and passed to every task as a frozen value, so that no task
    rebuilds a hash table of the whole vocabulary (`hashing.ValuePositions`)."""

    positions: ValuePositions
    indices: np.ndarray

    @classmethod
    def of(cls, vocabulary: pa.Table) -> "VocabularyLookup":
        return cls(ValuePositions.of(vocabulary.column("value")),
                   vocabulary.column("index").to_numpy().astype(np.int32))


def lookups(vocabularies: Mapping[str, pa.Table]) -> dict[str, VocabularyLookup]:
    """`VocabularyLookup` of each vocabulary."""
    return {column: VocabularyLookup.of(table) for column, table in vocabularies.items()}


def lookup_indices(values: pa.Array | pa.ChunkedArray, vocabulary: pa.Table | VocabularyLookup) -> pa.Array:
    """int32 index of each value: its vocabulary index, 0 for null, 1 for a value not in the vocabulary.

    `vocabulary` is a vocabulary table (one lookup) or its `VocabularyLookup` (many)."""
    values = _single_chunk(values)
    if len(values) == 0:
        return pa.array([], pa.int32())
    if isinstance(vocabulary, VocabularyLookup):
        position = vocabulary.positions.positions(values)
        index = np.where(position >= 0, vocabulary.indices[np.maximum(position, 0)] if len(vocabulary.indices)
                         else OOV_INDEX, OOV_INDEX).astype(np.int32)
        null = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
        if null is not None:
            index[null] = PADDING_INDEX
        return pa.array(index, pa.int32())
    position = pc.index_in(values, value_set=_single_chunk(vocabulary.column("value")))
    found = _single_chunk(vocabulary.column("index")).take(position)
    index = pc.fill_null(found, pa.scalar(OOV_INDEX, pa.int32()))
    return pc.if_else(pc.is_null(values), pa.scalar(PADDING_INDEX, pa.int32()), index).cast(pa.int32())


def lookup_list_indices(lists: pa.Array | pa.ChunkedArray, vocabulary: pa.Table | VocabularyLookup) -> pa.Array:
    """`lookup_indices` inside each list: list<string> to list<int32> (large_list stays large).

    A null element becomes 0; a null list stays null; list lengths are kept.
    Vectorised: the flattened values are looked up once and put back on the
    original offsets.
    """
    lists = _single_chunk(lists)
    large = pa.types.is_large_list(lists.type)
    if not (large or pa.types.is_list(lists.type)):
        raise TypeError(f"expected a list column, got {lists.type}")
    offsets = lists.offsets.to_numpy()
    # The values behind the offsets, null lists' included (flatten() would skip
    # those), re-based to 0 for a sliced array.
    values = lists.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    offsets = offsets - offsets[0]
    flat = lookup_indices(values, vocabulary)
    array_type = pa.LargeListArray if large else pa.ListArray
    offset_type = pa.int64() if large else pa.int32()
    mask = lists.is_null() if lists.null_count else None
    return array_type.from_arrays(pa.array(offsets, offset_type), flat, mask=mask)


def _value_counts(column: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    values = pc.drop_null(_single_chunk(values))
    if len(values) == 0:
        return VOCAB_PARTIALS.empty_table()
    counts = pc.value_counts(values)
    return pa.table({
        "column": pa.repeat(pa.scalar(column, pa.string()), len(counts)),
        "value": counts.field("values"),
        "count": pc.cast(counts.field("counts"), pa.int64()),
    }, schema=VOCAB_PARTIALS)


def _single_chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def vocab_partials_for_partition(events: pa.Table, *, cutoff_us: int, strategy: str,
                                 positive_types: tuple[str, ...],
                                 columns: tuple[str, ...] = EVENT_COLUMNS) -> pa.Table:
    """`vocab_partials` of `columns` (user_id and item_id, or some of them) over the
    training-window events of a batch holding whole users (the attributes come after
    combining: `with_attribute_counts`)."""
    from recsys_ray.stages.split import train_events

    return vocab_partials(train_events(events, cutoff_us, strategy, positive_types), item_attributes(None),
                          columns=columns)
