"""Training rows: labelled rows with the user and item columns of `schemas.training_schema`.

A row is made where its user's events are (a batch of whole users): label,
negatives, shard, and the user columns, computed there. Its item columns come
from where the item's events are:

- feature time "event": `item_queries` names the (item, time) pairs the rows
  need; a batch of whole items' events and those queries gives `item_rows`,
  each item's features as of each queried time, tagged with the shard that
  needs it; the shard's writer joins them by (item_id, timestamp);
- feature time "cutoff": one frozen table of each item's features as of the
  cutoff (`item_side_at_cutoff`), joined by item_id.

`finish_shard_chunks` puts one shard's rows in their final order with every
column. `one_batch_rows` composes all of it over a single batch holding the
whole snapshot: the reference the distributed build must equal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import schemas
from recsys_ray.hashing import ValuePositions
from recsys_ray.stages import asof, features, heavy, vocab
from recsys_ray.stages.examples import Candidates, assign_shards, by_shard, label_examples, order_shard, shard_groups
from recsys_ray.stages.split import timestamp_micros, train_events

EVENT_COLUMNS = ("user_id", "item_id", "interaction_type", "timestamp", "rating")
SHARD_KEYS = pa.schema([pa.field("_shard", pa.int32()), pa.field("_order", pa.int64())])
ITEM_QUERY = pa.schema([pa.field("item_id", pa.string()), pa.field("timestamp", schemas.TIMESTAMP),
                        pa.field("split", pa.string()), pa.field("_shard", pa.int32())])
# Events and item queries travel to the item batches as `ITEM_SHUFFLE` rows (one schema for
# both, each with the other kind's columns null), routed by (item_id, `_slice`): a heavy
# item's slices go their own ways
# (`recsys_ray.stages.heavy`). `_window` is 0 for a row's query, N for the query at
# t − N days that a heavy item's earlier slice answers. Events carry no user_id: the item
# side counts distinct users by `asof.FIRST_USER_EVENT`.
ITEM_ROUTING = pa.schema([pa.field("_slice", pa.int32()), pa.field("_window", pa.int32())])
ITEM_SHUFFLE = pa.schema([*ITEM_QUERY, *ITEM_ROUTING,
                          *[schemas.INTERACTIONS.field(n).with_nullable(True)
                            for n in EVENT_COLUMNS if n not in ITEM_QUERY.names and n != "user_id"],
                          pa.field(asof.FIRST_USER_EVENT, pa.bool_())])
SHARD_CHUNK_ROWS = 262_144
# Vocabulary indices are computed where their source columns are made: the user side's
# in the user partitions, the item attributes' where the item columns are.
USER_SIDE_INDICES = ("user_idx", "item_idx")
ITEM_SIDE_INDICES = ("item_category_idx", "item_brand_idx")


def item_rows_schema(windows: tuple[int, ...]) -> pa.Schema:
    """Columns of `item_rows`: the query, the item columns and their attribute indices."""
    return pa.schema([*ITEM_QUERY, *schemas.item_row_features(windows),
                      *[pa.field(name, pa.int32()) for name in ITEM_SIDE_INDICES]])


@dataclass(frozen=True)
class RowOptions:
    """Everything a batch needs to make its rows; one frozen value for the whole build.

    `vocabularies` (`vocab.lookups` of every vocabulary) gives the rows their indices."""

    cutoff_us: int
    strategy: str
    positive_types: tuple[str, ...]
    candidates: Candidates
    negatives: int
    seed: int
    shards_per_split: dict[str, int] = field(default_factory=lambda: {"train": 1, "test": 1})
    feature_time: str = "event"
    windows: tuple[int, ...] = (7, 30)
    history: int = 20
    heavy_items: heavy.HeavyItems = heavy.NO_HEAVY_ITEMS
    vocabularies: Mapping[str, vocab.VocabularyLookup] = field(default_factory=dict)

    @property
    def split_kwargs(self) -> dict:
        return {"cutoff_us": self.cutoff_us, "strategy": self.strategy, "positive_types": self.positive_types}

    @property
    def schema(self) -> pa.Schema:
        return schemas.training_schema(self.windows, self.history)

    @property
    def user_rows_schema(self) -> pa.Schema:
        history_index = [pa.field(asof.HISTORY_INDEX, pa.list_(pa.int32()))] if self.history else []
        return pa.schema([*schemas.ROW_KEYS, *SHARD_KEYS, *schemas.user_row_features(self.windows, self.history),
                          *[pa.field(name, pa.int32()) for name in USER_SIDE_INDICES], *history_index])

    @property
    def item_rows_schema(self) -> pa.Schema:
        return item_rows_schema(self.windows)

    @property
    def history_vocabulary(self) -> vocab.VocabularyLookup | None:
        return self.vocabularies["item_id"] if self.history else None


def padded(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` as `schema`: its own columns, every other column of `schema` null."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def labelled_rows(events: pa.Table, options: RowOptions) -> pa.Table:
    """The labelled rows (positives and their negatives) of a batch holding whole users, with
    their shard keys, sorted by shard (`by_shard`) while still narrow: what `user_rows` and
    `item_queries` start from, made once per batch."""
    rows = label_examples(events, candidates=options.candidates, negatives=options.negatives, seed=options.seed,
                          **options.split_kwargs)
    return by_shard(assign_shards(rows, options.shards_per_split, options.seed))


def user_features_at_cutoff(events: pa.Table, *, cutoff_us: int, strategy: str, positive_types: tuple[str, ...],
                            windows: tuple[int, ...] = (7, 30), history: int = 20,
                            item_vocabulary: vocab.VocabularyLookup | None = None) -> pa.Table:
    """One row per user with training events: `features.user_features`, then the window
    counts and history as of the cutoff, from the training window only (`features/users`);
    with `item_vocabulary`, the history's indices too (`asof.user_features_as_of`)."""
    train = train_events(events, cutoff_us, strategy, positive_types)
    base = features.user_features(train, cutoff_us)
    extra = schemas.user_row_features(windows, history).names[len(schemas.USER_FEATURES) - 1:]
    if not extra:
        return base
    at_cutoff = pa.table({"user_id": base.column("user_id"),
                          "timestamp": pa.array(np.full(base.num_rows, cutoff_us), pa.timestamp("us"))
                          .cast(schemas.TIMESTAMP)})
    more = asof.user_features_as_of(train.select(list(EVENT_COLUMNS)), at_cutoff, windows_days=windows,
                                    history=history, item_vocabulary=item_vocabulary)
    if item_vocabulary is not None and history:
        extra = [*extra, asof.HISTORY_INDEX]
    for name in extra:
        base = base.append_column(more.schema.field(name), more.column(name))
    return base


def user_rows(events: pa.Table, options: RowOptions, labelled: pa.Table | None = None) -> pa.Table:
    """Labelled rows of a batch holding whole users (every event, every split), with their
    shard keys, user columns and user-side indices (`RowOptions.user_rows_schema`); `labelled`
    is the batch's `labelled_rows` when already made."""
    if events.num_rows == 0:
        return options.user_rows_schema.empty_table()
    rows = labelled if labelled is not None else labelled_rows(events, options)
    if options.feature_time == "event":
        user = asof.user_features_as_of(events.select(list(EVENT_COLUMNS)), rows.select(["user_id", "timestamp"]),
                                        windows_days=options.windows, history=options.history,
                                        item_vocabulary=options.history_vocabulary)
    else:
        per_user = user_features_at_cutoff(events, windows=options.windows, history=options.history,
                                           item_vocabulary=options.history_vocabulary, **options.split_kwargs)
        positions = features.feature_positions(rows.column("user_id"), per_user, "user_id")
        user = per_user.drop_columns(["user_id"]).take(positions)
    for name in user.column_names:
        rows = rows.append_column(user.schema.field(name), user.column(name))
    rows = with_indices(rows, options.vocabularies, USER_SIDE_INDICES)
    return rows.select(options.user_rows_schema.names).cast(options.user_rows_schema)


def item_queries(events: pa.Table, options: RowOptions, labelled: pa.Table | None = None) -> pa.Table:
    """The distinct (item_id, timestamp, split, _shard) of a batch's rows: the item features
    as of each row's time that each shard needs (feature time "event"), as `ITEM_SHUFFLE`,
    with a heavy item's queries at t − N days (`heavy.window_queries`); `labelled` is the
    batch's `labelled_rows` when already made."""
    if events.num_rows == 0:
        return ITEM_SHUFFLE.empty_table()
    rows = (labelled if labelled is not None else labelled_rows(events, options)).select(ITEM_QUERY.names)
    distinct = rows.group_by(ITEM_QUERY.names, use_threads=False).aggregate([]).select(ITEM_QUERY.names)
    distinct = distinct.append_column(
        "_slice", pa.array(options.heavy_items.slices(distinct.column("item_id"), timestamp_micros(distinct))))
    own = distinct.append_column("_window", pa.array(np.zeros(distinct.num_rows, np.int32)))
    earlier = heavy.window_queries(distinct, options.heavy_items, options.windows)
    return padded(pa.concat_tables([own, earlier]), ITEM_SHUFFLE)


def item_events(events: pa.Table, heavy_items: heavy.HeavyItems = heavy.NO_HEAVY_ITEMS) -> pa.Table:
    """The event columns the item side needs, for a batch holding whole users, as
    `ITEM_SHUFFLE`: no user_id, but whether each event is its (user, item) pair's first."""
    table = events.select([n for n in EVENT_COLUMNS if n != "user_id"])
    table = table.append_column(asof.FIRST_USER_EVENT, pa.array(asof.pair_firsts(events)))
    table = table.append_column("_slice", pa.array(heavy_items.slices(table.column("item_id"),
                                                                      timestamp_micros(table))))
    return padded(table, ITEM_SHUFFLE)


def item_rows(batch: pa.Table, *, windows: tuple[int, ...], catalog: pa.Table | None,
              user_first_seen: np.ndarray, vocabularies: Mapping[str, vocab.VocabularyLookup],
              carry: pa.Table | None = None) -> pa.Table:
    """Item columns as of each queried time, for a batch holding whole items or whole slices
    of heavy items.

    `batch` holds events (`_shard` null) and queries (`_shard` set) of the same
    items as `ITEM_SHUFFLE` rows, as the shuffle by (item_id, `_slice`)
    delivers them. `user_first_seen` is every user's first event time in
    microseconds, sorted: a query's `users_before` is how many lie before its
    time. `carry` (`heavy.carry_table`) is the state each heavy item's slice
    starts from. Returns `item_rows_schema(windows)`: `ITEM_QUERY` columns,
    `schemas.item_row_features(windows)` and the attributes' indices
    (`ITEM_SIDE_INDICES`, from `vocabularies`); a
    query at t − N days gives a row with only `item_events_{N}d` set, the
    negated events before t − N days, which `combine_item_parts` adds to the
    row's own.
    """
    schema = pa.schema([*ITEM_QUERY, *schemas.item_row_features(windows)])
    if "_shard" not in batch.column_names or batch.num_rows == 0:
        return item_rows_schema(windows).empty_table()
    parts = []
    slices = batch.column("_slice") if "_slice" in batch.column_names else pa.nulls(batch.num_rows, pa.int32())
    for slice_index in pc.unique(pc.fill_null(slices, 0)).to_pylist():
        mine = batch.filter(pc.equal(pc.fill_null(slices, 0), slice_index))
        own_carry = None
        if carry is not None and slice_index:
            own_carry = carry.filter(pc.equal(carry.column("slice"), slice_index)).drop_columns(["slice"])
        parts.append(_slice_item_rows(mine, windows, catalog, user_first_seen, own_carry, schema))
    rows = pa.concat_tables(parts) if parts else schema.empty_table()
    return with_indices(rows, vocabularies, ITEM_SIDE_INDICES).cast(item_rows_schema(windows))


def _slice_item_rows(batch: pa.Table, windows: tuple[int, ...], catalog: pa.Table | None,
                     user_first_seen: np.ndarray, carry: pa.Table | None, schema: pa.Schema) -> pa.Table:
    is_query = pc.is_valid(batch.column("_shard"))
    events = batch.filter(pc.invert(is_query)).drop_columns(["_shard", "split"])
    queries = batch.filter(is_query)
    window = (pc.fill_null(queries.column("_window"), 0) if "_window" in queries.column_names
              else pa.array(np.zeros(queries.num_rows, np.int32)))
    own = queries.filter(pc.equal(window, 0)).select(ITEM_QUERY.names).cast(ITEM_QUERY)
    own = own.group_by(ITEM_QUERY.names, use_threads=False).aggregate([]).select(ITEM_QUERY.names)
    parts = []
    if own.num_rows:
        users_before = asof.count_before(user_first_seen, timestamp_micros(own))
        item = asof.item_features_as_of(events, own.append_column("users_before", pa.array(users_before)),
                                        windows_days=windows, catalog=catalog, carry=carry)
        for name in item.column_names:
            own = own.append_column(item.schema.field(name), item.column(name))
        parts.append(own.select(schema.names).cast(schema))
    for days in windows:
        earlier = queries.filter(pc.equal(window, days)).select(ITEM_QUERY.names).cast(ITEM_QUERY)
        earlier = earlier.group_by(ITEM_QUERY.names, use_threads=False).aggregate([]).select(ITEM_QUERY.names)
        if earlier.num_rows == 0:
            continue
        at = pa.array(timestamp_micros(earlier) - days * features.MICROS_PER_DAY, pa.timestamp("us"))
        before = asof.item_features_as_of(
            events, pa.table({"item_id": earlier.column("item_id"), "timestamp": at.cast(schemas.TIMESTAMP),
                              "users_before": pa.array(np.zeros(earlier.num_rows, np.int64))}),
            windows_days=(), carry=carry).column("item_total_interactions")
        negated = pc.negate(before)
        parts.append(padded(earlier.append_column(f"item_events_{days}d", negated), schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def combine_item_parts(item_side: pa.Table, windows: tuple[int, ...]) -> pa.Table:
    """One row per (item_id, timestamp, split, _shard): a heavy item's row plus the rows
    of its queries at t − N days (`item_rows`), whose window counts it adds."""
    partial = pc.is_null(item_side.column("item_total_interactions"))
    if not pc.any(partial).as_py():
        return item_side
    own, parts = item_side.filter(pc.invert(partial)), item_side.filter(partial)
    names = schemas.window_columns("item", windows)
    keys = ITEM_QUERY.names
    summed = parts.select([*keys, *names]).group_by(keys, use_threads=False).aggregate(
        [(n, "sum") for n in names])
    joined = own.append_column("_row", pa.array(np.arange(own.num_rows, dtype=np.int64))).join(
        summed, keys, join_type="left outer", use_threads=False).sort_by("_row")
    for name in names:
        added = pc.add(joined.column(name), pc.fill_null(joined.column(f"{name}_sum"), 0))
        own = own.set_column(own.schema.get_field_index(name), own.schema.field(name), added.cast(pa.int64()))
    return own


def item_window_counts(train: pa.Table, cutoff_us: int, windows: tuple[int, ...]) -> pa.Table:
    """Per item: training events in [cutoff − N days, cutoff) for each window (`item_events_{N}d`)."""
    names = schemas.window_columns("item", windows)
    if train.num_rows == 0:
        return pa.table({"item_id": pa.array([], pa.string()), **{n: pa.array([], pa.int64()) for n in names}})
    ts = timestamp_micros(train)
    table = pa.table({"item_id": train.column("item_id"),
                      **{name: pa.array((ts >= cutoff_us - days * features.MICROS_PER_DAY).astype(np.int64))
                         for name, days in zip(names, windows)}})
    summed = table.group_by("item_id", use_threads=False).aggregate([(n, "sum") for n in names])
    return summed.rename_columns([c.removesuffix("_sum") for c in summed.column_names])


def item_partials_for_partition(events: pa.Table, *, cutoff_us: int, strategy: str,
                                positive_types: tuple[str, ...], windows: tuple[int, ...] = ()) -> pa.Table:
    """`features.item_partials_for_partition` plus each item's window counts as of the cutoff."""
    partials = features.item_partials_for_partition(events, cutoff_us, strategy, positive_types)
    if not windows:
        return partials
    counts = item_window_counts(train_events(events, cutoff_us, strategy, positive_types), cutoff_us, windows)
    positions = features.feature_positions(partials.column("item_id"), counts, "item_id")
    for name in counts.column_names[1:]:
        partials = partials.append_column(name, pc.fill_null(counts.column(name).take(positions), 0))
    return partials


def item_side_at_cutoff(summed_partials: pa.Table, train_users: int, catalog: pa.Table | None,
                        windows: tuple[int, ...]) -> pa.Table:
    """One row per known item (of the snapshot or the catalog): item_id and
    `schemas.item_row_features(windows)` as of the cutoff; features null for an
    item without training events."""
    trained = summed_partials.filter(pc.greater(summed_partials.column("total"), 0))
    # Rows in the partials' order: only the known ids below are sorted (at 5M items each
    # sort of the features would cost about 3.5 s).
    table = features.item_feature_columns(trained, train_users)
    for name in schemas.window_columns("item", windows):
        table = table.append_column(name, trained.column(name))
    known = summed_partials.column("item_id").chunks
    if catalog is not None:
        known += catalog.column("item_id").chunks
    ids = pc.unique(pa.chunked_array(known, pa.string()))
    ids = pc.take(ids, pc.sort_indices(ids))
    positions = features.feature_positions(ids, table, "item_id")
    columns = table.drop_columns(["item_id"]).take(positions)
    attributes = features.catalog_attributes(catalog, ids)
    schema = pa.schema([pa.field("item_id", pa.string()), *schemas.item_row_features(windows)])
    merged = pa.table({"item_id": ids, **{n: columns.column(n) for n in columns.column_names},
                       **{n: attributes.column(n) for n in attributes.column_names}})
    return merged.select(schema.names).cast(schema)


def item_feature_table(item_side: pa.Table) -> pa.Table:
    """`features/items.parquet`: the items with training events, their features as of the cutoff."""
    return item_side.filter(pc.is_valid(item_side.column("item_total_interactions"))).drop_columns(
        list(schemas.CATALOG_ATTRIBUTES.names))


@dataclass(frozen=True)
class ItemsAtCutoff:
    """The frozen item columns of a cutoff-mode build (`indexed_item_side`): one row per known
    item, and where each item_id is (`hashing.ValuePositions`, built once for every shard)."""

    table: pa.Table
    positions: ValuePositions


def item_positions(rows: pa.Table, item_side: pa.Table | ItemsAtCutoff) -> pa.Array:
    """Row of `item_side` for each row: by item_id in the items at the cutoff, else by
    (item_id, timestamp) in a shard's item rows."""
    if isinstance(item_side, ItemsAtCutoff):
        at = item_side.positions.positions(rows.column("item_id"))
        return pa.array(at, mask=at < 0)
    left = pa.table({"item_id": rows.column("item_id"), "timestamp": rows.column("timestamp"),
                     "_row": pa.array(np.arange(rows.num_rows, dtype=np.int64))})
    right = pa.table({"item_id": item_side.column("item_id"), "timestamp": item_side.column("timestamp"),
                      "_at": pa.array(np.arange(item_side.num_rows, dtype=np.int64))})
    joined = left.join(right, ["item_id", "timestamp"], join_type="left outer", use_threads=False)
    if joined.num_rows != rows.num_rows:
        raise ValueError("item rows repeat an (item_id, timestamp) of the shard")
    at = np.empty(rows.num_rows, dtype=np.int64)
    at[joined.column("_row").to_numpy()] = pc.fill_null(joined.column("_at"), -1).to_numpy()
    return pa.array(at, mask=at < 0)


def with_indices(rows: pa.Table, vocabularies: Mapping[str, pa.Table | vocab.VocabularyLookup],
                 names: tuple[str, ...]) -> pa.Table:
    """`rows` with the vocabulary index columns `names` (of `schemas.INDEXED_COLUMNS`) appended,
    looked up from their source columns."""
    for name in names:
        vocabulary, source = schemas.INDEXED_COLUMNS[name]
        rows = rows.append_column(name, vocab.lookup_indices(rows.column(source), vocabularies[vocabulary]))
    return rows


def finish_shard_chunks(rows: pa.Table, item_side: pa.Table | ItemsAtCutoff, options: RowOptions,
                        chunk_rows: int = SHARD_CHUNK_ROWS) -> Iterator[pa.Table]:
    """One shard's user rows (`RowOptions.user_rows_schema`) in their final order, with the
    item columns and their indices joined (`item_rows`, or in cutoff mode
    `indexed_item_side`), as consecutive `options.schema` tables of at most `chunk_rows` rows.

    Item positions are found once for the shard and the columns joined a slice
    at a time, so a writer never holds the whole wide shard; it looks nothing up
    in a vocabulary. Always yields at least one table (empty for an empty
    shard), so the schema reaches the writer.
    """
    schema = options.schema
    ordered = order_shard(rows)
    if options.feature_time == "event":
        item_side = combine_item_parts(item_side, options.windows)
    positions = item_positions(ordered, item_side)
    if isinstance(item_side, ItemsAtCutoff):
        item_side = item_side.table
    items = item_side.select([*schemas.item_row_features(options.windows).names, *ITEM_SIDE_INDICES])
    for start in range(0, max(ordered.num_rows, 1), chunk_rows):
        length = min(chunk_rows, ordered.num_rows - start)
        chunk = ordered.slice(start, length)
        looked_up = items.take(positions.slice(start, length))
        for name in looked_up.column_names:
            chunk = chunk.append_column(looked_up.schema.field(name), looked_up.column(name))
        yield chunk.select(schema.names).cast(schema)


def indexed_item_side(item_side: pa.Table,
                      vocabularies: Mapping[str, pa.Table | vocab.VocabularyLookup]) -> ItemsAtCutoff:
    """`item_side_at_cutoff` with its attributes' indices (`ITEM_SIDE_INDICES`) and positions:
    the frozen item columns of a cutoff-mode build, made once for every shard."""
    return ItemsAtCutoff(with_indices(item_side, vocabularies, ITEM_SIDE_INDICES),
                         ValuePositions.of(item_side.column("item_id")))


def vocabularies_of(events: pa.Table, catalog: pa.Table | None, options: RowOptions,
                    min_frequency: int = 1) -> dict[str, pa.Table]:
    """Every vocabulary of a snapshot held in one batch (training-window counts)."""
    partials = vocab.vocab_partials(train_events(events, **options.split_kwargs), vocab.item_attributes(catalog))
    combined = vocab.combine_vocab_partials(partials)
    return {column: vocab.make_vocabulary(vocab.column_counts(combined, column), min_frequency)
            for column in vocab.VOCABULARY_COLUMNS}


def one_batch_rows(events: pa.Table, catalog: pa.Table | None, options: RowOptions) -> pa.Table:
    """Every training row of a snapshot held in one batch (all events of every user and item),
    sorted by split, shard and shard order: what the distributed build writes, concatenated."""
    # One batch holds every item whole; its vocabularies are its own.
    options = replace(options, heavy_items=heavy.NO_HEAVY_ITEMS)
    vocabularies = vocab.lookups(vocabularies_of(events, catalog, options))
    options = replace(options, vocabularies=vocabularies)
    users = user_rows(events, options)
    if options.feature_time == "event":
        first_seen = np.sort(timestamp_micros(asof.user_first_seen(events).rename_columns(["user_id", "timestamp"])))
        item_side = item_rows(pa.concat_tables([item_events(events), item_queries(events, options)]),
                              windows=options.windows, catalog=catalog, user_first_seen=first_seen,
                              vocabularies=vocabularies)
        item_side = combine_item_parts(item_side, options.windows)
    else:
        partials = item_partials_for_partition(events, windows=options.windows, **options.split_kwargs)
        train_users = len(pc.unique(train_events(events, **options.split_kwargs).column("user_id")))
        item_side = indexed_item_side(item_side_at_cutoff(features.sum_item_partials(partials), train_users, catalog,
                                                          options.windows), vocabularies)
    parts = []
    for _, _, shard in shard_groups(users):
        shard_items = item_side
        if options.feature_time == "event":
            first = shard.slice(0, 1).to_pylist()[0]
            shard_items = item_side.filter(pc.and_(pc.equal(item_side.column("split"), first["split"]),
                                                   pc.equal(item_side.column("_shard"), first["_shard"])))
        parts.extend(finish_shard_chunks(shard, shard_items, options))
    return pa.concat_tables(parts) if parts else options.schema.empty_table()
