"""The build's Ray Data wiring: each step runs pure stages from `recsys_ray.stages`
with `map_batches` and hands the next step a dataset or a small frozen value.

Steps, in order (`recsys_ray.build.run` calls them):

1. `read_validated`: read every input file and validate it in the same task,
   so only validated rows reach the object store;
2. `partition_events`: hash-partition valid events by user (one Ray shuffle)
   and drop duplicates — from here on each block holds whole users, which makes
   user features and the exclusion of seen items exact without more shuffles;
3. `find_cutoff`: the time cutoff from small per-block histograms;
4. `user_features` / `sum_item_partials`: training-window features; item
   partials are summed into a frozen table passed to every worker;
5. `write_examples`: positives and negatives per block with their user columns,
   left per shard in exchange files (`recsys_ray.build.exchange`), in event
   mode with the item columns as of each row's time from a shuffle by item
   (a heavy item's time slices apart, `find_heavy_items`);
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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import DataContext

from recsys_ray import schemas, validation
from recsys_ray.build import exchange, inputs
from recsys_ray.build import progress as progress_lines
from recsys_ray.build.writer import EVAL_DIR, EXCHANGE_DIR, VersionWriter, vocabulary_path
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


def auto_parallelism(rows: int) -> int:
    """User partitions: every CPU busy, about 2M events per partition and CPU round."""
    cpus = cluster_cpus()
    return max(cpus, min(256, int(np.ceil(rows / 2_000_000)) * cpus))


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


def validation_counts(validated) -> dict[str, int]:
    """Valid rows and rejected rows by reason, summed over blocks."""
    totals: dict[str, int] = {}
    for row in validated.map_batches(batch_stage.validation_summary, batch_format="pyarrow").iter_rows():
        totals[row["reason"]] = totals.get(row["reason"], 0) + int(row["count"])
    return totals


def quarantine_rejected(validated, summary: dict[str, int], writer: VersionWriter, dataset: str) -> None:
    """Write the rejected rows of `validated` under the version's quarantine (if there are any)."""
    if sum(v for k, v in summary.items() if k != "valid") == 0:
        return
    writer.write_quarantine(dataset, validated.map_batches(batch_stage.rejected_rows, batch_format="pyarrow"))


def partition_events(validated, parallelism: int) -> "ray.data.MaterializedDataset":
    """Valid, de-duplicated events in `parallelism` blocks, each holding whole users."""
    return (
        validated.map_batches(batch_stage.valid_rows, fn_kwargs={"dataset": "interactions"}, batch_format="pyarrow")
        .repartition(parallelism, keys=["user_id"])
        .map_batches(batch_stage.unique_events, batch_size=None, batch_format="pyarrow")
        .materialize()
    )


def find_cutoff(events, test_fraction: float, explicit, total: int, strategy: str) -> int:
    """The global cutoff in microseconds: explicit, or the exact (1 - test_fraction) quantile.

    With leave-last-out splitting there is no global cutoff; recency is then
    measured from the latest event of the snapshot.
    """
    if explicit is not None:
        return int(explicit.timestamp() * 1_000_000)
    summaries = collect(events.map_batches(split.time_summary, batch_size=None, batch_format="pyarrow"))
    summaries = summaries.filter(pc.greater(summaries.column("count"), 0))
    lo, hi = pc.min(summaries.column("min")).as_py(), pc.max(summaries.column("max")).as_py()
    if strategy == "leave_last_out":
        return hi + 1
    rank = split.quantile_rank(total, test_fraction)
    edges = split.bin_edges(lo, hi)
    histograms = collect(events.map_batches(split.timestamp_histogram, batch_size=None, batch_format="pyarrow",
                                            fn_kwargs={"edges": edges}))
    counts = np.sum(np.stack([np.asarray(c) for c in histograms.column("counts").to_pylist()]), axis=0)
    index, before = split.locate_rank(counts, rank)
    values = collect(events.map_batches(split.values_in_range, batch_size=None, batch_format="pyarrow",
                                        fn_kwargs={"lo": int(edges[index]), "hi": int(edges[index + 1])}))
    ordered = np.sort(values.column("ts").to_numpy())
    return int(ordered[rank - before])


def collect(ds) -> pa.Table:
    """Gather a dataset of small per-block summaries into one table."""
    tables = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
              for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    return pa.concat_tables(tables)


def _split_kwargs(cutoff_us: int, b: BuildConfig) -> dict[str, Any]:
    return {"cutoff_us": cutoff_us, "strategy": b.split_strategy, "positive_types": tuple(b.positive_types)}


def user_features(events, cutoff_us: int, b: BuildConfig, writer: VersionWriter, relative: str) -> int:
    """Each user's features as of the cutoff (what a user serves with), written under
    `relative`; returns the number of users with training events."""
    users = events.map_batches(training_rows.user_features_at_cutoff, batch_size=None, batch_format="pyarrow",
                               fn_kwargs={**_split_kwargs(cutoff_us, b), "windows": b.windows,
                                          "history": b.history}).materialize()
    writer.write_dataset(relative, users)
    return users.count()


def sum_item_partials(events, cutoff_us: int, b: BuildConfig) -> pa.Table:
    """Item partials of every user partition summed into one table (one row per item of the snapshot)."""
    partials = events.map_batches(training_rows.item_partials_for_partition, batch_size=None,
                                  batch_format="pyarrow", fn_kwargs={**_split_kwargs(cutoff_us, b),
                                                                     "windows": b.windows})
    pending: list[pa.Table] = []
    pending_rows = 0
    acc = None
    for part in partials.iter_batches(batch_size=None, batch_format="pyarrow"):
        pending.append(part)
        pending_rows += part.num_rows
        if pending_rows > 2_000_000:
            acc = features.sum_item_partials(pa.concat_tables(([acc] if acc is not None else []) + pending))
            pending, pending_rows = [], 0
    return features.sum_item_partials(pa.concat_tables(([acc] if acc is not None else []) + pending))


def user_first_seen(events) -> np.ndarray:
    """Every user's first event time (microseconds), sorted: how many users were active before a time."""
    first = events.map_batches(asof.user_first_seen, batch_size=None, batch_format="pyarrow")
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
    blocks = max(1, events.num_blocks())
    candidates = events.map_batches(heavy.candidate_counts, batch_size=None, batch_format="pyarrow",
                                    fn_kwargs={"min_events": (limit + blocks) // blocks})
    ids = tuple(sorted({item for part in candidates.iter_batches(batch_size=None, batch_format="pyarrow")
                        for item in part.column("item_id").to_pylist()}))
    if not ids:
        return heavy.NO_HEAVY_ITEMS
    summaries = collect(events.map_batches(split.time_summary, batch_size=None, batch_format="pyarrow"))
    summaries = summaries.filter(pc.greater(summaries.column("count"), 0))
    edges = split.bin_edges(pc.min(summaries.column("min")).as_py(), pc.max(summaries.column("max")).as_py())
    histograms = collect(events.map_batches(heavy.time_histograms, batch_size=None, batch_format="pyarrow",
                                            fn_kwargs={"candidates": ids, "edges": edges}))
    return heavy.plan_slices(histograms, edges, limit)


def read_catalog(files: list[storage.FileEntry], vcfg: ValidationConfig, options: storage.StorageOptions,
                 writer: VersionWriter) -> tuple[pa.Table | None, dict[str, Any]]:
    """The validated, de-duplicated catalog (a frozen value the size of the catalog) and its counts."""
    if not files:
        return None, {"catalog": False}
    validated = read_validated(files, "items", vcfg, options).materialize()
    summary = validation_counts(validated)
    quarantine_rejected(validated, summary, writer, "items")
    valid = list(validated.map_batches(batch_stage.valid_rows, fn_kwargs={"dataset": "items"},
                                       batch_format="pyarrow").iter_batches(batch_size=None, batch_format="pyarrow"))
    table = pa.concat_tables(valid).cast(schemas.ITEMS) if valid else schemas.ITEMS.empty_table()
    catalog, duplicates = validation.deduplicate_items(table)
    return catalog, {
        "catalog": True,
        "input_rows": int(sum(summary.values())),
        "valid": int(summary.get("valid", 0)),
        "rejected": {k: int(v) for k, v in sorted(summary.items()) if k != "valid"},
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
    for row in collect(events.map_batches(examples.count_positives, batch_size=None, batch_format="pyarrow",
                                          fn_kwargs=_split_kwargs(cutoff_us, b))).to_pylist():
        totals[row["split"]] = totals.get(row["split"], 0) + int(row["positives"])
    return totals


def write_examples(events, rows: training_rows.RowOptions, item_side: pa.Table | None,
                   catalog: pa.Table | None, vocabularies: dict[str, pa.Table], writer: VersionWriter,
                   parallelism: int) -> tuple[dict[str, list], dict[tuple[str, int], int], dict[str, dict]]:
    """Label rows with their user columns per user partition and leave them for their shards
    (`recsys_ray.build.exchange`); in event mode, send each row's (item, time) and every event
    through a shuffle by item to compute item columns as of each time, left for the same
    shards; then write each shard once from its files. Returns the manifest's shard list,
    label counts and the train split's column statistics (`column_stats.combine_partials`,
    merged in shard order)."""
    exchange_kwargs = {"out": writer.out, "storage_options": writer.options}
    parts = events.map_batches(exchange.user_row_parts, batch_size=None, batch_format="pyarrow",
                               fn_kwargs={"options": rows, **exchange_kwargs})
    if rows.feature_time == "event":
        carry = None
        if rows.heavy_items:
            summaries = collect(events.map_batches(heavy.slice_summaries, batch_size=None, batch_format="pyarrow",
                                                   fn_kwargs={"heavy": rows.heavy_items}))
            carry = heavy.carry_table(summaries, rows.heavy_items)
        queries = events.map_batches(training_rows.item_queries, batch_size=None, batch_format="pyarrow",
                                     fn_kwargs={"options": rows})
        item_parts = (
            events.map_batches(training_rows.item_events, batch_size=None, batch_format="pyarrow",
                               fn_kwargs={"heavy_items": rows.heavy_items})
            .union(queries)
            .repartition(parallelism, keys=["item_id", "_slice"])
            .map_batches(exchange.item_row_parts, batch_size=None, batch_format="pyarrow",
                         fn_kwargs={"windows": rows.windows, "catalog": catalog, "carry": carry,
                                    "user_first_seen": user_first_seen(events), **exchange_kwargs})
        )
        parts = parts.union(item_parts)
    try:
        plan = exchange.shard_plan(collect(parts))
        meta = exchange.SHARD_META.empty_table()
        if plan:
            written = ray.data.from_items(plan, override_num_blocks=len(plan)).map_batches(
                exchange.write_shard, batch_size=1, batch_format="pyarrow",
                fn_kwargs={"out": writer.out, "options": writer.options, "rows": rows, "item_side": item_side,
                           "vocabularies": vocabularies})
            parts_written = []
            for part in written.iter_batches(batch_size=None, batch_format="pyarrow"):
                part = pa.Table.from_batches([part]) if isinstance(part, pa.RecordBatch) else part
                exchange.delete_shard_parts(plan, part, writer.out, writer.options)
                parts_written.append(part)
            meta = pa.concat_tables(parts_written) if parts_written else meta
            log.debug("examples and shards:\n%s", written.stats())
    finally:
        storage.delete(writer.uri(EXCHANGE_DIR), writer.options)
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


def vocabularies(events, cutoff_us: int, b: BuildConfig, catalog: pa.Table | None,
                 writer: VersionWriter) -> dict[str, pa.Table]:
    """Each vocabulary from training-window counts summed over the user partitions, written
    as `vocab/{column}.parquet`; returns them (frozen values the shard writers look up in)."""
    partials = events.map_batches(vocab.vocab_partials_for_partition, batch_size=None, batch_format="pyarrow",
                                  fn_kwargs={**_split_kwargs(cutoff_us, b),
                                             "attributes": vocab.item_attributes(catalog)})
    combined = vocab.combine_vocab_partials(
        part for part in partials.iter_batches(batch_size=None, batch_format="pyarrow"))
    out = {}
    for column in vocab.VOCABULARY_COLUMNS:
        out[column] = vocab.make_vocabulary(vocab.column_counts(combined, column), b.min_frequency)
        writer.write_table(vocabulary_path(column), out[column])
    return out


def write_eval_set(events, cutoff_us: int, b: BuildConfig, candidates: examples.Candidates,
                   writer: VersionWriter) -> int:
    """The evaluation set (one row per user with a relevant item) under `eval/`; returns its users."""
    rows = events.map_batches(eval_set.build_eval_set, batch_size=None, batch_format="pyarrow",
                              fn_kwargs={**_split_kwargs(cutoff_us, b), "candidates": candidates,
                                         "negatives": b.eval_negatives, "seed": b.seed})
    # Blocks come out per user partition; sorted, the files read in name order are in user_id
    # order at any parallelism.
    rows = rows.sort("user_id").materialize()
    writer.write_dataset(EVAL_DIR, rows)
    return rows.count()


def progress_bars_wanted() -> bool:
    """Ray Data's progress bars: on a terminal, unless turned off (RECSYS_PROGRESS=0, --quiet)."""
    return os.environ.get("RECSYS_PROGRESS", "1") != "0" and sys.stdout.isatty()
