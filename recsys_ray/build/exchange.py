"""How training rows reach their shard: through files under the version's `_exchange/`,
not through a shuffle in the object store.

Each producer task (a partition of whole users, or in event mode of whole
items) writes its rows of each (split, shard) as row groups of a compressed
Parquet file that holds a run of consecutive shards (`shards_per_file`; the
evaluation set's rows likewise, per user_id range) and returns one small row
per shard; each shard's writer then reads only its own row groups. Nothing wide
waits in the object store, no task holds more than its partition or its shard,
and a producer writes a few files however many shards there are (at scale,
producers x shards pieces of some hundred rows each would be millions of
objects). A file is deleted as soon as every shard that reads it has been
written (`ShardFiles`; a retried writer still finds it). A producer's file names
come from its smallest key, which no other partition holds, so a retried task
overwrites its own files instead of adding rows. Storage every worker can read
is all this needs, as for the shards themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import hashing, schemas
from recsys_ray.build.writer import eval_file_path, exchange_path, shard_path
from recsys_ray.io import storage
from recsys_ray.stages import column_stats, eval_set, heavy, training_rows, vocab
from recsys_ray.stages.examples import shard_groups

# Fast to write and read back; these files live only until the shards are written.
EXCHANGE_COMPRESSION = "lz4"
PARTS = pa.schema([("kind", pa.string()), ("split", pa.string()), ("shard", pa.int32()),
                   ("path", pa.string()), ("rows", pa.int64()), ("row_group", pa.int32()),
                   ("row_groups", pa.int32())])
# A piece's rows are written in row groups of at most this many rows (pyarrow's default
# row group length, so each table handed to the writer is exactly one row group).
ROW_GROUP_ROWS = 1024 * 1024
# A producer's file should hold about this many rows: with P producers feeding each shard evenly,
# ceil(EXCHANGE_FILE_ROWS * P / rows per shard) consecutive shards share one file.
EXCHANGE_FILE_ROWS = 250_000


def producer_name(keys: pa.Table) -> str:
    """A name for the task whose rows have these keys (one or more columns): a hash of the
    smallest key, which no other task's rows have."""
    if keys.num_columns == 1:
        text = str(pc.min(keys.column(0)).as_py())
    else:
        first = keys.take(pc.sort_indices(keys, sort_keys=[(n, "ascending") for n in keys.column_names])[:1])
        text = "\x1f".join(str(first.column(n)[0].as_py()) for n in keys.column_names)
    return f"{int(hashing.hash_strings(pa.array([text], pa.string()))[0]):016x}"


def shards_per_file(rows_per_shard: float, producers: int) -> int:
    """How many consecutive shards of a split share one exchange file of a producer, so that
    a file holds about `EXCHANGE_FILE_ROWS` rows when `producers` tasks feed each shard of
    `rows_per_shard` rows evenly (at least 1)."""
    per_piece = max(1.0, rows_per_shard / max(1, producers))
    return max(1, int(np.ceil(EXCHANGE_FILE_ROWS / per_piece)))


def write_pieces(pieces, *, kind: str, producer: str, out: str, options: storage.StorageOptions,
                 shards_per_file: int = 0) -> pa.Table:
    """Write one producer's (split, shard, rows) pieces, in (split, shard) order: the pieces of
    `shards_per_file` consecutive shards of a split (0: all its shards) share one file,
    named for `producer`, each piece its own row groups. Returns one `PARTS` row per piece,
    its path relative to `out` and its row groups."""
    files: dict[tuple[str, int], list[tuple[int, pa.Table]]] = {}
    for split_name, shard, table in pieces:
        index = shard // shards_per_file if shards_per_file else 0
        files.setdefault((split_name, index), []).append((shard, table))
    meta: dict[str, list] = {name: [] for name in PARTS.names}
    for (split_name, index), group in files.items():
        relative = exchange_path(kind, split_name, index, producer)
        tables: list[pa.Table] = []
        for shard, table in group:
            chunks = [table.slice(start, ROW_GROUP_ROWS) for start in range(0, table.num_rows, ROW_GROUP_ROWS)]
            for name, value in zip(PARTS.names, (kind, split_name, shard, relative, table.num_rows, len(tables),
                                                 len(chunks))):
                meta[name].append(value)
            tables.extend(chunks)
        storage.write_tables(storage.join(out, relative), tables, tables[0].schema, options,
                             compression=EXCHANGE_COMPRESSION, transient=True)
    return pa.table(meta, schema=PARTS)


def write_parts(rows: pa.Table, *, kind: str, producer: str, out: str, options: storage.StorageOptions,
                shards_per_file: int = 0) -> pa.Table:
    """Write each (split, shard) group of `rows` (which carry `split` and `_shard`) into the
    exchange (`write_pieces`); returns one `PARTS` row per shard."""
    if rows.num_rows == 0:
        return PARTS.empty_table()
    return write_pieces(shard_groups(rows), kind=kind, producer=producer, out=out, options=options,
                        shards_per_file=shards_per_file)


# Item events and queries on their way from the user partitions to the item partitions.
ITEM_INPUTS = "item_inputs"


def user_row_parts(events: pa.Table, *, options: training_rows.RowOptions, out: str,
                   storage_options: storage.StorageOptions, item_partitions: int = 0,
                   shards_per_file: int = 0) -> pa.Table:
    """`training_rows.user_rows` of a batch of whole users, left for their shards
    (`shards_per_file` as in `write_pieces`); in event mode with `item_partitions`, also the
    batch's item events and its rows' item queries (`training_rows.item_events`,
    `item_queries`; the rows labelled once for both), left for their item partitions
    (`item_partition_of`) as kind `ITEM_INPUTS`, all in one file."""
    if events.num_rows == 0:
        return PARTS.empty_table()
    producer = producer_name(events.select(["user_id"]))
    labelled = training_rows.labelled_rows(events, options)
    rows = training_rows.user_rows(events, options, labelled=labelled)
    parts = [write_parts(rows, kind="users", producer=producer, out=out, options=storage_options,
                         shards_per_file=shards_per_file)]
    if options.feature_time == "event" and item_partitions:
        inputs = pa.concat_tables([training_rows.item_events(events, options.heavy_items),
                                   training_rows.item_queries(events, options, labelled=labelled)])
        parts.append(write_item_inputs(inputs, item_partitions, producer, out, storage_options))
    return pa.concat_tables(parts)


def item_partition_of(item_ids: pa.Array | pa.ChunkedArray, slices: pa.Array | pa.ChunkedArray,
                      partitions: int) -> np.ndarray:
    """The item partition of each (item_id, `_slice`), from a stable hash: all of an item's
    rows (of a heavy item, all of one slice's rows) meet in one partition, on any cluster."""
    slice_codes = pc.fill_null(slices, 0).to_numpy(zero_copy_only=False).astype(np.uint64)
    mixed = hashing.combine(hashing.hash_strings(item_ids), slice_codes)
    return (mixed % np.uint64(partitions)).astype(np.int32)


def write_item_inputs(rows: pa.Table, partitions: int, producer: str, out: str,
                      options: storage.StorageOptions) -> pa.Table:
    """Write the `training_rows.ITEM_SHUFFLE` rows of one producer as one file, the rows of
    each item partition (split "items", the partition as shard) their own row groups;
    returns their `PARTS` rows."""
    if rows.num_rows == 0:
        return PARTS.empty_table()
    which = item_partition_of(rows.column("item_id"), rows.column("_slice"), partitions)
    order = np.argsort(which, kind="stable")
    ordered, which = rows.take(pa.array(order)), which[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(which)) + 1])
    ends = np.concatenate([starts[1:], [len(which)]])
    pieces = (("items", int(which[start]), ordered.slice(start, end - start))
              for start, end in zip(starts.tolist(), ends.tolist()))
    return write_pieces(pieces, kind=ITEM_INPUTS, producer=producer, out=out, options=options)


# The catalog rows of each item partition (`write_catalog_parts`): the columns the item side reads.
CATALOG = "catalog"
CATALOG_COLUMNS = pa.schema([schemas.ITEMS.field(name) for name in ("item_id", "category", "brand", "price")])


def write_catalog_parts(catalog: pa.Table | None, partitions: int, heavy_items: heavy.HeavyItems, out: str,
                        options: storage.StorageOptions) -> pa.Table:
    """Write the catalog as one file whose row groups are the catalog rows of each item
    partition (`item_partition_of`; a heavy item's row in the partition of each of its
    slices, once per partition), so that an item partition reads only its own items'
    attributes instead of every task holding the whole catalog. Returns their `PARTS`
    rows (split "items", the partition as shard)."""
    if catalog is None or catalog.num_rows == 0 or partitions == 0:
        return PARTS.empty_table()
    catalog = training_rows.padded(catalog, CATALOG_COLUMNS)
    slices = pa.array(np.zeros(catalog.num_rows, np.int32))
    which = item_partition_of(catalog.column("item_id"), slices, partitions)
    rows = np.arange(catalog.num_rows)
    if heavy_items:
        position = pc.index_in(catalog.column("item_id"), value_set=pa.array(heavy_items.item_ids, pa.string()))
        extra_rows, extra_parts = [], []
        for row in np.flatnonzero(pc.is_valid(position).to_numpy(zero_copy_only=False)):
            item = catalog.column("item_id")[int(row)]
            count = len(heavy_items.starts[position[int(row)].as_py()]) + 1
            homes = item_partition_of(pa.array([item.as_py()] * count, pa.string()),
                                      pa.array(np.arange(count, dtype=np.int32)), partitions)
            homes = np.setdiff1d(np.unique(homes), [which[row]])
            extra_rows.append(np.full(len(homes), row))
            extra_parts.append(homes.astype(np.int32))
        if extra_rows:
            rows = np.concatenate([rows, *extra_rows])
            which = np.concatenate([which, *extra_parts])
    order = np.argsort(which, kind="stable")
    ordered, which = catalog.take(pa.array(rows[order])), which[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(which)) + 1])
    ends = np.concatenate([starts[1:], [len(which)]])
    pieces = (("items", int(which[start]), ordered.slice(start, end - start))
              for start, end in zip(starts.tolist(), ends.tolist()))
    return write_pieces(pieces, kind=CATALOG, producer=CATALOG, out=out, options=options)


def item_partition_parts(batch: pa.Table, *, windows: tuple[int, ...], user_first_seen: np.ndarray,
                         vocabularies: Mapping[str, vocab.VocabularyLookup], carry: pa.Table | None, out: str,
                         storage_options: storage.StorageOptions, shards_per_file: int = 0) -> pa.Table:
    """`item_row_parts` of one item partition (a one-row `batch` of `shard_plan` over the
    `ITEM_INPUTS` and `CATALOG` files): its events, queries and catalog rows read from the
    exchange (no catalog rows: attributes null, as for items outside the catalog)."""
    entry = batch.to_pylist()[0]
    inputs = read_parts(entry[ITEM_INPUTS], training_rows.ITEM_SHUFFLE, out, storage_options)
    catalog = read_parts(entry[CATALOG], CATALOG_COLUMNS, out, storage_options) if entry[CATALOG] else None
    return item_row_parts(inputs, windows=windows, catalog=catalog, user_first_seen=user_first_seen,
                          vocabularies=vocabularies, carry=carry, out=out, storage_options=storage_options,
                          shards_per_file=shards_per_file)


def item_row_parts(batch: pa.Table, *, windows: tuple[int, ...], catalog: pa.Table | None,
                   user_first_seen: np.ndarray, vocabularies: Mapping[str, vocab.VocabularyLookup],
                   carry: pa.Table | None, out: str, storage_options: storage.StorageOptions,
                   shards_per_file: int = 0) -> pa.Table:
    """`training_rows.item_rows` of a batch of whole items (or whole slices of heavy items),
    left for their shards; named for the batch's smallest (item_id, `_slice`)."""
    rows = training_rows.item_rows(batch, windows=windows, catalog=catalog, user_first_seen=user_first_seen,
                                   vocabularies=vocabularies, carry=carry)
    if rows.num_rows == 0:
        return PARTS.empty_table()
    keys = batch.select(["item_id", "_slice"])
    return write_parts(rows, kind="items", producer=producer_name(keys.cast(pa.schema(
        [pa.field("item_id", pa.string()), pa.field("_slice", pa.int32())]))), out=out, options=storage_options,
        shards_per_file=shards_per_file)


FILE_KINDS = ("users", "items", "eval", ITEM_INPUTS, CATALOG)


def shard_plan(parts: pa.Table) -> list[dict]:
    """One entry per shard with rows: split, shard and, for each kind (`FILE_KINDS`), its
    pieces (path, row_group, row_groups; sorted by path), sorted by (split, shard). An item
    partition's `ITEM_INPUTS` and `CATALOG` pieces make an entry of split "items" likewise."""
    plan: dict[tuple[str, int], dict] = {}
    for row in parts.to_pylist():
        entry = plan.setdefault((row["split"], row["shard"]), {"split": row["split"], "shard": row["shard"],
                                                               **{kind: [] for kind in FILE_KINDS}})
        entry[row["kind"]].append({"path": row["path"], "row_group": row["row_group"],
                                   "row_groups": row["row_groups"]})
    for entry in plan.values():
        for kind in FILE_KINDS:
            entry[kind].sort(key=lambda piece: (piece["path"], piece["row_group"]))
    return [plan[key] for key in sorted(plan)]


def read_parts(pieces: Sequence[dict], schema: pa.Schema, out: str, options: storage.StorageOptions) -> pa.Table:
    """The rows of these exchange pieces (`shard_plan` entries of one kind) as one table of `schema`."""
    tables = [storage.read_row_groups(storage.join(out, piece["path"]),
                                      range(piece["row_group"], piece["row_group"] + piece["row_groups"]),
                                      options).cast(schema)
              for piece in pieces]
    return pa.concat_tables(tables) if tables else schema.empty_table()


class ShardFiles:
    """The exchange files of a `shard_plan` and the shards still to read them: a file is
    deleted once every shard that reads it is written (a retried writer still finds its
    files), so the build's disk use stays near the larger of the exchange and the shards
    rather than their sum. Bookkeeping of the driver, which hands it each writer's result."""

    def __init__(self, plan: Sequence[dict]):
        self._paths = {(entry["split"], entry["shard"]): sorted({piece["path"] for kind in FILE_KINDS
                                                                 for piece in entry[kind]})
                       for entry in plan}
        self._readers: dict[str, int] = {}
        for paths in self._paths.values():
            for path in paths:
                self._readers[path] = self._readers.get(path, 0) + 1

    def written(self, results: pa.Table, out: str, options: storage.StorageOptions) -> None:
        """Count the shards in `results` (rows with split and shard) as written and delete
        the files no shard still needs; a shard counted twice is counted once."""
        for key in zip(results.column("split").to_pylist(), results.column("shard").to_pylist()):
            for path in self._paths.pop(key, ()):
                self._readers[path] -= 1
                if self._readers[path] == 0:
                    del self._readers[path]
                    storage.delete(storage.join(out, path), options)

    @property
    def remaining(self) -> int:
        """Files some shard still reads."""
        return len(self._readers)


SHARD_META = pa.schema([("split", pa.string()), ("shard", pa.int32()), ("path", pa.string()),
                        ("rows", pa.int64()), ("positives", pa.int64()), ("stats", pa.string())])


def continuous_columns(schema: pa.Schema) -> list[str]:
    """The columns of `schema` whose statistics the manifest records."""
    return [f.name for f in schema if "continuous" in schemas.column_tags(f)]


def write_shard(batch: pa.Table, out: str, options: storage.StorageOptions, rows: training_rows.RowOptions,
                item_side: pa.Table | None) -> pa.Table:
    """Write the shard of a one-row `batch` of `shard_plan` as one Parquet file.

    Its user rows, and in event mode its item rows (item features as of each
    row's time), are read from the exchange, their vocabulary indices already
    set; in cutoff mode `item_side` is the frozen table of item features as of
    the cutoff (`training_rows.indexed_item_side`). Returns one row: split,
    shard, path, rows, positives and the statistics of its continuous columns
    (JSON of `column_stats.column_partials`). It leaves its exchange files in place, so
    a retried task can run again; `ShardFiles` frees them once no shard needs them.
    """
    entry = batch.to_pylist()[0]
    shard_rows = read_parts(entry["users"], rows.user_rows_schema, out, options)
    items = item_side
    if rows.feature_time == "event":
        items = read_parts(entry["items"], rows.item_rows_schema, out, options)
    relative = shard_path(entry["split"], entry["shard"])
    continuous = continuous_columns(rows.schema)
    partials: list[dict] = []

    def chunks_with_stats():
        for chunk in training_rows.finish_shard_chunks(shard_rows, items, rows):
            partials.append(column_stats.column_partials(chunk, continuous))
            yield chunk

    storage.write_tables(storage.join(out, relative), chunks_with_stats(), rows.schema, options)
    return pa.table({"split": [entry["split"]], "shard": [entry["shard"]], "path": [relative],
                     "rows": [shard_rows.num_rows],
                     "positives": [int(pc.sum(shard_rows.column("label")).as_py() or 0)],
                     "stats": [json.dumps(column_stats.combine_partials(partials))]}, schema=SHARD_META)


EVAL_FILES = pa.schema([("split", pa.string()), ("shard", pa.int32()), ("path", pa.string()), ("users", pa.int64())])


def eval_row_parts(events: pa.Table, *, eval_options: dict, bounds: tuple[str, ...], out: str,
                   storage_options: storage.StorageOptions) -> pa.Table:
    """`eval_set.build_eval_set` of a batch of whole users, its rows of each user_id range
    (`eval_set.range_of`) left for that range's writer (split "eval", the range as shard)."""
    rows = eval_set.build_eval_set(events, **eval_options)
    if rows.num_rows == 0:
        return PARTS.empty_table()
    rows = rows.append_column("split", pa.repeat(pa.scalar("eval", pa.string()), rows.num_rows))
    rows = rows.append_column("_shard", pa.array(eval_set.range_of(rows.column("user_id"), bounds)))
    return write_parts(rows, kind="eval", producer=producer_name(events.select(["user_id"])), out=out,
                       options=storage_options)


def write_eval_file(batch: pa.Table, out: str, options: storage.StorageOptions) -> pa.Table:
    """Write one user_id range of the evaluation set (a one-row `batch` of `shard_plan`) as
    `eval_file_path(range)`, its rows sorted by user_id; returns one `EVAL_FILES` row."""
    entry = batch.to_pylist()[0]
    rows = read_parts(entry["eval"], pa.schema([*eval_set.EVAL_SET, pa.field("split", pa.string()),
                                                pa.field("_shard", pa.int32())]), out, options)
    rows = rows.select(eval_set.EVAL_SET.names).sort_by([("user_id", "ascending")])
    relative = eval_file_path(entry["shard"])
    storage.write_table(storage.join(out, relative), rows, options)
    return pa.table({"split": [entry["split"]], "shard": [entry["shard"]], "path": [relative],
                     "users": [rows.num_rows]}, schema=EVAL_FILES)
