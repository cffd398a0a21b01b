"""The build's Ray Data wiring: each step runs pure stages from `recsys_ray.stages`
with `map_batches` and hands the next step files or a small frozen value.

Steps, in order (`recsys_ray.build.run` calls them):

1. `read_valid_rows`: read every input file and validate it in the same task,
   which writes its rejected rows to the quarantine itself (`partitions.land_rejected`);
2. `partition_events`: the valid rows stream into one hash shuffle by user;
   each partition is de-duplicated and written as one file (`EventPartitions`),
   and from here on every step reads the partitions one task each: whole users
   per task makes user features and the exclusion of seen items exact without
   more shuffles;
3. `find_cutoff`: the time cutoff from small per-partition histograms;
4. `user_features` / `sum_item_partials`: training-window features; item
   partials are summed into a frozen table passed to every worker;
5. `write_eval_set`: the evaluation set in user_id ranges through the exchange;
6. `write_examples`: positives and negatives per partition with their user columns,
   left per shard in exchange files (`recsys_ray.build.exchange`), in event
   mode with the item columns as of each row's time from item partitions that
   the same tasks feed through the exchange (a heavy item's time slices apart,
   `find_heavy_items`);
   each shard's writer reads its files, joins the item columns and writes the
   shard once, in a seed-determined order.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import DataContext

from recsys_ray import schemas, validation
from recsys_ray.build import exchange, inputs, partitions
from recsys_ray.build import progress as progress_lines
from recsys_ray.build.writer import EXCHANGE_DIR, VersionWriter, user_features_path, vocabulary_path
from recsys_ray.config import BuildConfig, ValidationConfig
from recsys_ray.io import storage
from recsys_ray.stages import batch as batch_stage
from recsys_ray.stages import asof, column_stats, eval_set, examples, features, heavy, split, training_rows, vocab

log = logging.getLogger(__name__)

TUNED_CONTEXT_FIELDS = ("target_max_block_size", "shuffle_input_batch_bytes", "op_resource_reservation_enabled",
                        "enable_progress_bars", "raise_original_map_exception", "print_on_execution_start",
                        "custom_execution_callback_classes")

# Clusters this small run operators without a reserved share of the CPUs (see `tuned_data_context`).
UNRESERVED_MAX_CPUS = 4


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1)) or 1


@contextmanager
def tuned_data_context(progress: bool) -> Iterator[None]:
    """Ray Data settings the build needs, restored afterwards so that a caller's
    own Ray Data work in the same process is unaffected."""
    ctx = DataContext.get_current()
    saved = {name: getattr(ctx, name) for name in TUNED_CONTEXT_FIELDS}
    # Ray Data warns once that its bars are off; the build turned them off on purpose.
    bars_logger = logging.getLogger("ray.data._internal.progress")
    saved_level = bars_logger.level
    if not progress:
        bars_logger.setLevel(logging.ERROR)
    # Blocks that hold whole users must never be sliced by the block-size limit.
    ctx.target_max_block_size = None
    # One shuffle map task per block: the default coalesces up to 1 GiB of
    # blocks into a single task, which partitions a medium build on one core.
    ctx.shuffle_input_batch_bytes = 0
    # Reserving each operator a share of the CPUs holds a map that feeds a
    # shuffle to one task at a time on a cluster of two CPUs. Without the
    # reservation Ray Data also stops budgeting memory per operator, so it is
    # lifted only where the CPUs are that few.
    if cluster_cpus() <= UNRESERVED_MAX_CPUS:
        ctx.op_resource_reservation_enabled = False
    # Progress bars only on a terminal; elsewhere `recsys_ray.build.progress` reports stages
    # (Ray Data would log every operator every ten seconds), and no execution plans at all.
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = False
    ctx.custom_execution_callback_classes = [*ctx.custom_execution_callback_classes, progress_lines.ROWS_CALLBACK]
    # A stage's own error (an unusable input file, say) reaches the driver as
    # itself, inside Ray's task error, instead of behind Ray Data's generic wrapper.
    ctx.raise_original_map_exception = True
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)
        bars_logger.setLevel(saved_level)


def shard_count(rows: int, b: BuildConfig) -> int:
    if b.shards:
        return b.shards
    return max(1, int(np.ceil(rows / b.rows_per_shard)))


def read_validated(files: list[storage.FileEntry], dataset: str, vcfg: ValidationConfig,
                   options: storage.StorageOptions, blocks: int | None = None) -> "ray.data.Dataset":
    """One dataset of validated rows (combined valid + quarantine columns) from every file.

    Parquet files are read and validated a piece at a time by the same task
    (`recsys_ray.build.inputs`); CSV and JSON files whole, one task each.
    """
    cpus = cluster_cpus()
    blocks = blocks or inputs.read_blocks(files, cpus)
    parts = []
    for fmt, entries in inputs.group_by_format(files):
        if fmt == "parquet":
            pieces = inputs.plan_parquet_pieces(entries, options, blocks, cpus)
            ds = ray.data.from_items(pieces, override_num_blocks=len(pieces)).map_batches(
                inputs.read_and_validate_parquet, batch_size=1, batch_format="pyarrow",
                fn_kwargs={"dataset": dataset, "cfg": vcfg, "options": options})
        else:
            fs, _ = storage.resolve(entries[0].uri, options)
            paths = [storage.resolve(e.uri, options)[1] for e in entries]
            ds = ray.data.read_binary_files(paths, filesystem=fs, include_paths=True)
            ds = ds.map_batches(batch_stage.decode_and_validate_files, batch_size=1, batch_format="pyarrow",
                                fn_kwargs={"dataset": dataset, "fmt": fmt, "cfg": vcfg})
        parts.append(ds)
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def read_valid_rows(files: list[storage.FileEntry], dataset: str, vcfg: ValidationConfig,
                    options: storage.StorageOptions, writer: VersionWriter, blocks: int | None = None
                    ) -> "ray.data.Dataset":
    """The valid rows of every file; each validation task writes its piece's rejected rows to
    the version's quarantine as it goes (`partitions.land_rejected`), so nothing validated is
    held whole and every row is read once."""
    return read_validated(files, dataset, vcfg, options, blocks).map_batches(
        partitions.land_rejected, batch_format="pyarrow", batch_size=None,
        fn_kwargs={"dataset": dataset, "out": writer.out, "options": writer.options})


@dataclass(frozen=True)
class EventPartitions:
    """The build's unique events, one file per partition of whole users
    (`recsys_ray.build.partitions`), and what partitioning counted."""
    paths: tuple[str, ...]
    out: str
    options: storage.StorageOptions
    valid_rows: int
    events: int

    def dataset(self) -> "ray.data.Dataset":
        """One block per partition, read from its file by the task of the step that runs on it."""
        if not self.paths:
            return ray.data.from_arrow(schemas.EVENTS.empty_table())
        return ray.data.from_items([{"path": p} for p in self.paths], override_num_blocks=len(self.paths)).map_batches(
            partitions.read_event_partition, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"out": self.out, "options": self.options})


def partition_events(valid, parallelism: int, writer: VersionWriter) -> EventPartitions:
    """Hash-partition valid events by user into `parallelism` partitions (one Ray shuffle),
    de-duplicate each and leave it as a file for the later steps."""
    written = valid.repartition(parallelism, keys=["user_id"]).map_batches(
        partitions.write_event_partition, batch_size=None, batch_format="pyarrow",
        fn_kwargs={"out": writer.out, "options": writer.options})
    files = collect(written, partitions.PARTITION_FILES)
    return EventPartitions(paths=tuple(sorted(files.column("path").to_pylist())), out=writer.out,
                           options=writer.options, valid_rows=int(pc.sum(files.column("valid_rows")).as_py() or 0),
                           events=int(pc.sum(files.column("events")).as_py() or 0))


def find_cutoff(events, test_fraction: float, explicit, total: int, strategy: str) -> int:
    """The global cutoff in microseconds: explicit, or the exact (1 - test_fraction) quantile.

    With leave-last-out splitting there is no global cutoff; recency is then
    measured from the latest event of the snapshot.
    """
    if explicit is not None:
        return int(explicit.timestamp() * 1_000_000)
    summaries = collect(events.dataset().map_batches(split.time_summary, batch_size=None, batch_format="pyarrow"))
    summaries = summaries.filter(pc.greater(summaries.column("count"), 0))
    lo, hi = pc.min(summaries.column("min")).as_py(), pc.max(summaries.column("max")).as_py()
    if strategy == "leave_last_out":
        return hi + 1
    rank = split.quantile_rank(total, test_fraction)
    edges = split.bin_edges(lo, hi)
    histograms = collect(events.dataset().map_batches(split.timestamp_histogram, batch_size=None, batch_format="pyarrow",
                                            fn_kwargs={"edges": edges}))
    counts = np.sum(np.stack([np.asarray(c) for c in histograms.column("counts").to_pylist()]), axis=0)
    index, before = split.locate_rank(counts, rank)
    values = collect(events.dataset().map_batches(split.values_in_range, batch_size=None, batch_format="pyarrow",
                                        fn_kwargs={"lo": int(edges[index]), "hi": int(edges[index + 1])}))
    ordered = np.sort(values.column("ts").to_numpy())
    return int(ordered[rank - before])


def collect(ds, schema: pa.Schema | None = None) -> pa.Table:
    """Gather a dataset of small per-block summaries into one table (`schema`'s empty
    table if there are none)."""
    tables = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
              for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    if not tables and schema is not None:
        return schema.empty_table()
    return pa.concat_tables(tables)


def _split_kwargs(cutoff_us: int, b: BuildConfig) -> dict[str, Any]:
    return {"cutoff_us": cutoff_us, "strategy": b.split_strategy, "positive_types": tuple(b.positive_types)}


def user_features(events: EventPartitions, cutoff_us: int, b: BuildConfig, writer: VersionWriter) -> int:
    """Each user's features as of the cutoff (what a user serves with), one file per user
    partition under `features/users/`; returns the number of users with training events."""
    feature_options = {**_split_kwargs(cutoff_us, b), "windows": b.windows, "history": b.history}
    files = collect(events.dataset().map_batches(
        partitions.write_user_features, batch_size=None, batch_format="pyarrow",
        fn_kwargs={"out": writer.out, "options": writer.options, **feature_options}), partitions.USER_FEATURE_FILES)
    if files.num_rows == 0:  # readers find the columns even without a user
        empty = training_rows.user_features_at_cutoff(schemas.EVENTS.empty_table(), **feature_options)
        writer.write_table(user_features_path("empty"), empty)
    return int(pc.sum(files.column("users")).as_py() or 0)


# Item partials are summed on the driver once at least this many rows wait (see `sum_item_partials`).
SUM_PENDING_ROWS = 2_000_000


def sum_item_partials(events, cutoff_us: int, b: BuildConfig) -> pa.Table:
    """Item partials of every user partition summed into one table (one row per item of the snapshot)."""
    partials = events.dataset().map_batches(training_rows.item_partials_for_partition, batch_size=None,
                                  batch_format="pyarrow", fn_kwargs={**_split_kwargs(cutoff_us, b),
                                                                     "windows": b.windows})
    pending: list[pa.Table] = []
    pending_rows = 0
    acc = None
    for part in partials.iter_batches(batch_size=None, batch_format="pyarrow"):
        pending.append(part)
        pending_rows += part.num_rows
        # Summing again only once the pending rows outnumber the sum so far keeps the work
        # linear in the partials: each item's row of `acc` is re-summed O(log) times, not
        # once per 2M rows (at 100M, 118 partitions of about 274K items each into 5M).
        if pending_rows > max(SUM_PENDING_ROWS, acc.num_rows if acc is not None else 0):
            acc = features.sum_item_partials(pa.concat_tables(([acc] if acc is not None else []) + pending))
            pending, pending_rows = [], 0
    return features.sum_item_partials(pa.concat_tables(([acc] if acc is not None else []) + pending))


def user_first_seen(events) -> np.ndarray:
    """Every user's first event time (microseconds), sorted: how many users were active before a time."""
    first = events.dataset().map_batches(asof.user_first_seen, batch_size=None, batch_format="pyarrow")
    times = [split.timestamp_micros(part.rename_columns(["user_id", "timestamp"]))
             for part in first.iter_batches(batch_size=None, batch_format="pyarrow")]
    return np.sort(np.concatenate(times)) if times else np.zeros(0, dtype=np.int64)


# Items with fewer events than this are never split, whatever the partition size.
HEAVY_ITEM_MIN_EVENTS = 100_000


def heavy_item_limit(events_count: int, parallelism: int, configured: int | None) -> int:
    """Events an item may have before its work is split: configured, else an average
    partition's events (at least `HEAVY_ITEM_MIN_EVENTS`)."""
    return configured or max(HEAVY_ITEM_MIN_EVENTS, int(np.ceil(events_count / parallelism)))


def find_heavy_items(events, limit: int) -> heavy.HeavyItems:
    """The items with more than `limit` events and their time slices (`recsys_ray.stages.heavy`).

    An item with more than `limit` events over B blocks has more than limit / B
    in one of them, so the blocks report only those candidates; their exact
    counts per time bin then give the slices. The driver holds the candidates'
    histograms only."""
    blocks = max(1, len(events.paths))
    candidates = events.dataset().map_batches(heavy.candidate_counts, batch_size=None, batch_format="pyarrow",
                                    fn_kwargs={"min_events": (limit + blocks) // blocks})
    ids = tuple(sorted({item for part in candidates.iter_batches(batch_size=None, batch_format="pyarrow")
                        for item in part.column("item_id").to_pylist()}))
    if not ids:
        return heavy.NO_HEAVY_ITEMS
    summaries = collect(events.dataset().map_batches(split.time_summary, batch_size=None, batch_format="pyarrow"))
    summaries = summaries.filter(pc.greater(summaries.column("count"), 0))
    edges = split.bin_edges(pc.min(summaries.column("min")).as_py(), pc.max(summaries.column("max")).as_py())
    histograms = collect(events.dataset().map_batches(heavy.time_histograms, batch_size=None, batch_format="pyarrow",
                                            fn_kwargs={"candidates": ids, "edges": edges}))
    return heavy.plan_slices(histograms, edges, limit)


def read_catalog(files: list[storage.FileEntry], vcfg: ValidationConfig, options: storage.StorageOptions,
                 writer: VersionWriter) -> tuple[pa.Table | None, dict[str, Any]]:
    """The validated, de-duplicated catalog (a frozen value the size of the catalog) and its counts."""
    if not files:
        return None, {"catalog": False}
    valid = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
             for b in read_valid_rows(files, "items", vcfg, options, writer).iter_batches(
                 batch_size=None, batch_format="pyarrow")]
    rejected = partitions.rejected_counts(writer.out, "items", writer.options)
    table = pa.concat_tables(valid).cast(schemas.ITEMS) if valid else schemas.ITEMS.empty_table()
    catalog, duplicates = validation.deduplicate_items(table)
    return catalog, {
        "catalog": True,
        "input_rows": table.num_rows + sum(rejected.values()),
        "valid": table.num_rows,
        "rejected": dict(sorted(rejected.items())),
        "duplicates": duplicates,
        "unique": catalog.num_rows,
    }


def negative_candidates(catalog: pa.Table | None, summed: pa.Table, b: BuildConfig) -> examples.Candidates:
    """Draw negatives from the catalog, or without one from every item of the snapshot."""
    universe = catalog.column("item_id") if catalog is not None and catalog.num_rows else summed.column("item_id")
    universe = pc.unique(universe)
    popularity = None
    if b.sampling == "popularity":
        index = pc.index_in(universe, value_set=summed.column("item_id"))
        users = summed.column("unique_users").to_numpy()
        idx = pc.fill_null(index, -1).to_numpy(zero_copy_only=False)
        popularity = np.where(idx >= 0, users[np.maximum(idx, 0)], 0).astype(np.float64)
    return examples.make_candidates(universe, popularity, b.sampling, b.popularity_alpha)


def positive_counts(events, cutoff_us: int, b: BuildConfig) -> dict[str, int]:
    """Positives per split over the whole snapshot (one small row per block and split)."""
    totals: dict[str, int] = {}
    for row in collect(events.dataset().map_batches(examples.count_positives, batch_size=None, batch_format="pyarrow",
                                          fn_kwargs=_split_kwargs(cutoff_us, b))).to_pylist():
        totals[row["split"]] = totals.get(row["split"], 0) + int(row["positives"])
    return totals


def write_examples(events, rows: training_rows.RowOptions, item_side: pa.Table | None,
                   catalog: pa.Table | None, writer: VersionWriter,
                   parallelism: int, rows_per_shard: float) -> tuple[dict[str, list], dict[tuple[str, int], int],
                                                                     dict[str, dict]]:
    """Label rows with their user columns per user partition and leave them for their shards
    (`recsys_ray.build.exchange`), their vocabulary indices set where their users are
    (`rows.vocabularies`); in event mode the same tasks leave each row's (item, time)
    and every event for the item partitions, whose tasks compute the item columns as of each
    time and leave them for the same shards; then write each shard once from its files.
    Nothing but small file lists passes through the object store; a producer's rows of
    consecutive shards share a file (`exchange.shards_per_file` of the expected
    `rows_per_shard`); the item partitions read their catalog rows from there too
    (`exchange.write_catalog_parts`). Returns the manifest's
    shard list, label counts and the train split's column statistics
    (`column_stats.combine_partials`, merged in shard order)."""
    event_time = rows.feature_time == "event"
    exchange_kwargs = {"out": writer.out, "storage_options": writer.options,
                       "shards_per_file": exchange.shards_per_file(rows_per_shard, max(len(events.paths), parallelism))}
    parts = collect(events.dataset().map_batches(
        exchange.user_row_parts, batch_size=None, batch_format="pyarrow",
        fn_kwargs={"options": rows, "item_partitions": parallelism if event_time else 0, **exchange_kwargs}),
        exchange.PARTS)
    if event_time:
        carry = None
        if rows.heavy_items:
            summaries = collect(events.dataset().map_batches(heavy.slice_summaries, batch_size=None,
                                                             batch_format="pyarrow",
                                                             fn_kwargs={"heavy": rows.heavy_items}))
            carry = heavy.carry_table(summaries, rows.heavy_items)
        is_input = pc.equal(parts.column("kind"), exchange.ITEM_INPUTS)
        inputs, parts = parts.filter(is_input), parts.filter(pc.invert(is_input))
        catalog_parts = exchange.write_catalog_parts(catalog, parallelism, rows.heavy_items, writer.out,
                                                     writer.options)
        catalog_parts = catalog_parts.filter(pc.is_in(catalog_parts.column("shard"), value_set=inputs.column("shard")))
        item_plan = exchange.shard_plan(pa.concat_tables([inputs, catalog_parts]))
        if item_plan:
            item_parts = ray.data.from_items(item_plan, override_num_blocks=len(item_plan)).map_batches(
                exchange.item_partition_parts, batch_size=1, batch_format="pyarrow",
                fn_kwargs={"windows": rows.windows, "carry": carry, "vocabularies": rows.vocabularies,
                           "user_first_seen": user_first_seen(events), **exchange_kwargs})
            parts = pa.concat_tables([parts, collect(item_parts, exchange.PARTS)])
        for kind in (exchange.ITEM_INPUTS, exchange.CATALOG):
            storage.delete(writer.uri(f"{EXCHANGE_DIR}/{kind}"), writer.options)
    plan = exchange.shard_plan(parts)
    meta = exchange.SHARD_META.empty_table()
    if plan:
        written = ray.data.from_items(plan, override_num_blocks=len(plan)).map_batches(
            exchange.write_shard, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"out": writer.out, "options": writer.options, "rows": rows, "item_side": item_side})
        parts_written = []
        files = exchange.ShardFiles(plan)
        for part in written.iter_batches(batch_size=None, batch_format="pyarrow"):
            part = pa.Table.from_batches([part]) if isinstance(part, pa.RecordBatch) else part
            files.written(part, writer.out, writer.options)
            parts_written.append(part)
        meta = pa.concat_tables(parts_written) if parts_written else meta
        log.debug("examples and shards:\n%s", written.stats())
    shards: dict[str, list] = {"train": [], "test": []}
    labels: dict[tuple[str, int], int] = {}
    train_stats = []
    for row in sorted(meta.to_pylist(), key=lambda r: (r["split"], r["shard"])):
        shards[row["split"]].append({"path": row["path"], "rows": row["rows"]})
        labels[(row["split"], 1)] = labels.get((row["split"], 1), 0) + row["positives"]
        labels[(row["split"], 0)] = labels.get((row["split"], 0), 0) + row["rows"] - row["positives"]
        if row["split"] == "train":
            train_stats.append(json.loads(row["stats"]))
    return shards, labels, column_stats.combine_partials(train_stats)


def vocabularies(events, cutoff_us: int, b: BuildConfig, summed: pa.Table, catalog: pa.Table | None,
                 writer: VersionWriter) -> dict[str, pa.Table]:
    """Each vocabulary from training-window counts, written as `vocab/{column}.parquet`: the
    users' counted per partition, the items' from the summed item partials (`summed`, see
    `vocab.vocabularies_from_partitions`); returns them (the build looks values up in them
    through `vocab.lookups`)."""
    user_counts = events.dataset().map_batches(vocab.vocab_partials_for_partition, batch_size=None,
                                               batch_format="pyarrow",
                                               fn_kwargs={**_split_kwargs(cutoff_us, b), "columns": ("user_id",)})
    out = vocab.vocabularies_from_partitions(
        (part for part in user_counts.iter_batches(batch_size=None, batch_format="pyarrow")), summed,
        vocab.item_attributes(catalog), b.min_frequency)
    for column, table in out.items():
        writer.write_table(vocabulary_path(column), table)
    return out


# The evaluation set is written in user_id ranges of about this many users (all users, not only
# those with a row), from this many sampled user_ids per partition.
EVAL_USERS_PER_FILE = 250_000
EVAL_SAMPLES_PER_PARTITION = 1_000


def write_eval_set(events: EventPartitions, cutoff_us: int, b: BuildConfig, candidates: examples.Candidates,
                   writer: VersionWriter) -> int:
    """The evaluation set (one row per user with a relevant item) under `eval/`, one file per
    user_id range: each partition leaves its rows of each range in the exchange and each
    range's writer sorts them by user_id (`exchange.write_eval_file`). Returns its users."""
    samples = collect(events.dataset().map_batches(eval_set.user_sample, batch_size=None, batch_format="pyarrow",
                                                   fn_kwargs={"size": EVAL_SAMPLES_PER_PARTITION}),
                      eval_set.USER_SAMPLE)
    users = int(pc.sum(samples.column("users")).as_py() or 0)
    bounds = eval_set.range_bounds(samples, int(np.ceil(users / EVAL_USERS_PER_FILE)))
    eval_options = {**_split_kwargs(cutoff_us, b), "candidates": candidates, "negatives": b.eval_negatives,
                    "seed": b.seed}
    parts = collect(events.dataset().map_batches(
        exchange.eval_row_parts, batch_size=None, batch_format="pyarrow",
        fn_kwargs={"eval_options": eval_options, "bounds": bounds, "out": writer.out,
                   "storage_options": writer.options}), exchange.PARTS)
    plan = exchange.shard_plan(parts)
    written = 0
    if plan:
        eval_files = ray.data.from_items(plan, override_num_blocks=len(plan)).map_batches(
            exchange.write_eval_file, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"out": writer.out, "options": writer.options})
        files = exchange.ShardFiles(plan)
        for part in eval_files.iter_batches(batch_size=None, batch_format="pyarrow"):
            part = pa.Table.from_batches([part]) if isinstance(part, pa.RecordBatch) else part
            files.written(part, writer.out, writer.options)
            written += int(pc.sum(part.column("users")).as_py() or 0)
    return written


def progress_bars_wanted() -> bool:
    """Ray Data's progress bars: on a terminal, unless turned off (RECSYS_PROGRESS=0, --quiet)."""
    return os.environ.get("RECSYS_PROGRESS", "1") != "0" and sys.stdout.isatty()
