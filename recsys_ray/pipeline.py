"""The training-data build, wired with Ray Data.

Plan (each step a pure stage from `recsys_ray.stages`, run by `map_batches`):

1. read every input file and validate it in the same task (Parquet a row-group
   range at a time), so only validated rows reach the object store; rejected
   rows go to `quarantine/`;
2. hash-partition valid events by user (one Ray shuffle) and drop duplicates —
   from here on each block holds whole users, which makes user features and
   the exclusion of seen items exact without further shuffles;
3. find the time cutoff from small per-block histograms;
4. sum per-block item partials into item features and negative-sampling
   weights: frozen global values passed to every worker;
5. count positives per split (this sizes the shards), then build positives
   and negatives per block and stream these narrow rows, hashed into shards,
   through a second shuffle; each shard's writer joins the features and writes
   it once, in a seed-determined order, and reports its row and label counts;
6. write `manifest.json` last: the version's commit point.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data import DataContext

from recsys_ray import __version__, schemas, validation
from recsys_ray.config import RecsysConfig
from recsys_ray.io import formats, layout, storage
from recsys_ray.runtime import ensure_ray, shuffles_in_default_worker_pool
from recsys_ray.stages import batch as batch_stage
from recsys_ray.stages import examples, features, split

log = logging.getLogger(__name__)

INPUT_SUFFIXES = tuple(formats.EXTENSIONS)
MANIFEST = "manifest.json"
DEFAULT_TENANT = "default"


class BuildError(RuntimeError):
    """The build cannot proceed; the message says why in the user's terms."""


@dataclass
class StageTimer:
    """Wall time per named stage, in the order the stages ran.

    Each stage ends with a garbage collection: Ray Data's finished executions
    sit in reference cycles that still hold object refs, and until Python
    collects them the object store keeps the blocks of datasets the build has
    already dropped (about 1 GB of validated rows at 10M interactions).
    """

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("stage %s ...", name)
        try:
            yield
        finally:
            gc.collect()
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


@dataclass(frozen=True)
class BuildPlan:
    """Everything resolved before any data is touched."""

    interactions: list[storage.FileEntry]
    items: list[storage.FileEntry]
    out: str
    version: str
    tenant: str
    options: storage.StorageOptions


def plan_build(cfg: RecsysConfig) -> BuildPlan:
    """Resolve inputs and the output location; fail early with a clear message."""
    b = cfg.build
    options = storage.StorageOptions.from_config(cfg.storage)
    tenant = layout.check_name(b.tenant or DEFAULT_TENANT, "tenant")
    if b.interactions:
        interaction_uris, item_uris = list(b.interactions), list(b.items)
    elif b.tenant:
        interaction_uris = [layout.raw_dir(cfg.storage.root, tenant, "interactions")]
        item_uris = list(b.items) or [layout.raw_dir(cfg.storage.root, tenant, "items")]
    else:
        raise BuildError("no inputs: give --interactions URI (and optionally --items URI), "
                         "or --root URI --tenant T to build from a tenant's raw zone")
    interactions = _list_inputs(interaction_uris, options)
    if not interactions:
        raise BuildError(f"no interaction files found at {', '.join(interaction_uris)} "
                         f"(looked for {', '.join(INPUT_SUFFIXES)})")
    items = _list_inputs(item_uris, options, required=bool(b.items))
    version = layout.check_name(b.version or datetime.now(timezone.utc).strftime("v%Y%m%dT%H%M%SZ"), "version")
    out = b.out or layout.training_version(cfg.storage.root, tenant, version)
    return BuildPlan(interactions, items, out.rstrip("/"), version, tenant, options)


def _list_inputs(uris: list[str], options: storage.StorageOptions, required: bool = True) -> list[storage.FileEntry]:
    files: list[storage.FileEntry] = []
    for uri in uris:
        found = storage.list_files(uri, options, suffixes=INPUT_SUFFIXES)
        if not found and required and not storage.exists(uri, options):
            raise BuildError(f"input {uri} does not exist")
        if not found and required:
            raise BuildError(f"input {uri} holds no files ending in {', '.join(INPUT_SUFFIXES)}")
        files.extend(found)
    return files


_TUNED_CONTEXT_FIELDS = ("target_max_block_size", "shuffle_input_batch_bytes", "op_resource_reservation_enabled",
                         "enable_progress_bars")


def build_training_data(cfg: RecsysConfig) -> dict[str, Any]:
    """Run the whole build on the current Ray cluster (or a local one) and return the manifest.

    The Ray Data settings the build tunes (and its use of the default worker
    pool for shuffles) are restored afterwards, so a caller's own Ray Data work
    in the same process is unaffected.
    """
    ctx = DataContext.get_current()
    saved = {name: getattr(ctx, name) for name in _TUNED_CONTEXT_FIELDS}
    try:
        with shuffles_in_default_worker_pool():
            return _build(cfg)
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)


def _build(cfg: RecsysConfig) -> dict[str, Any]:
    plan = plan_build(cfg)  # bad inputs fail before a local Ray is started
    ensure_ray()
    timer = StageTimer()
    created_at = datetime.now(timezone.utc)
    # Resolve "now" once so every worker applies the same accepted time range.
    lo, hi = cfg.validation.time_range()
    vcfg = cfg.validation.model_copy(update={"max_timestamp": hi})
    b = cfg.build

    ctx = DataContext.get_current()
    # Blocks that hold whole users must never be sliced by the block-size limit.
    ctx.target_max_block_size = None
    # One shuffle map task per block: the default coalesces up to 1 GiB of
    # blocks into a single task, which partitions a medium build on one core.
    ctx.shuffle_input_batch_bytes = 0
    # Reserving each operator a share of the CPUs holds a map that feeds a
    # shuffle to one task at a time on a cluster of two CPUs. Without the
    # reservation Ray Data also stops budgeting memory per operator, so it is
    # lifted only where the CPUs are that few.
    if _cluster_cpus() <= _UNRESERVED_MAX_CPUS:
        ctx.op_resource_reservation_enabled = False
    ctx.enable_progress_bars = os.environ.get("RECSYS_PROGRESS", "1") != "0"

    with timer.stage("prepare_output"):
        _clear_version(plan)

    with timer.stage("validate"):
        read_blocks = b.parallelism or _auto_read_blocks(plan.interactions)
        validated = _read_validated(plan.interactions, "interactions", vcfg, plan.options,
                                    blocks=read_blocks, cpus=_cluster_cpus()).materialize()
        summary = _validation_counts(validated)
        # No name may keep a dataset derived from `validated`: its blocks are
        # freed only when the last plan that reads them is gone.
        _write_quarantine(validated.map_batches(batch_stage.rejected_rows, batch_format="pyarrow"),
                          summary, plan, "interactions")
    counts: dict[str, Any] = {
        "input_rows": int(sum(summary.values())),
        "valid": int(summary.get("valid", 0)),
        "rejected": {k: int(v) for k, v in sorted(summary.items()) if k != "valid"},
    }
    if counts["valid"] == 0:
        raise BuildError(f"no valid interactions among {counts['input_rows']} input rows "
                         f"(rejected: {counts['rejected']}); see {storage.join(plan.out, 'quarantine')}")

    parallelism = b.parallelism or _auto_parallelism(counts["valid"])
    with timer.stage("partition_and_dedup"):
        events = (
            validated.map_batches(batch_stage.valid_rows, fn_kwargs={"dataset": "interactions"},
                                  batch_format="pyarrow")
            .repartition(parallelism, keys=["user_id"])
            .map_batches(_deduplicate_partition, batch_size=None, batch_format="pyarrow")
            .materialize()
        )
        del validated
        log.debug("partition and dedup:\n%s", events.stats())
        events_count = events.count()
        counts["duplicates"] = counts["valid"] - events_count
        counts["events"] = events_count

    with timer.stage("cutoff"):
        cutoff_us = _cutoff(events, b.test_fraction, b.cutoff, events_count, b.split_strategy)

    with timer.stage("features"):
        user_features = _write_user_features(events, plan, cutoff_us, b)
        user_count = user_features.count()
        summed = _sum_item_partials(events, cutoff_us, b)
        item_feature_table = features.item_features(summed.filter(pc.greater(summed.column("total"), 0)),
                                                    user_count)
        item_feature_uri = storage.join(plan.out, "features", "items.parquet")
        storage.write_table(item_feature_uri, item_feature_table, plan.options)

    with timer.stage("catalog"):
        catalog, catalog_counts = _read_catalog(plan, vcfg)
        counts["items"] = catalog_counts
        candidates = _candidates(catalog, summed, b)

    with timer.stage("examples_and_shards"):
        example_kwargs = {
            "cutoff_us": cutoff_us,
            "strategy": b.split_strategy,
            "positive_types": tuple(b.positive_types),
            "candidates": candidates,
            "negatives": b.negatives,
            "seed": b.seed,
        }
        positives = _positive_counts(events, cutoff_us, b)
        # Each positive brings at most K negatives, so this bounds the rows per split.
        shards_per_split = {s: _shard_count(positives.get(s, 0) * (1 + b.negatives), b) for s in ("train", "test")}
        features_by_key = {"user_features": user_features.to_arrow_refs(), "item_features": item_feature_table}
        shard_rows, label_counts = _write_examples(events, example_kwargs, features_by_key, shards_per_split,
                                                   plan, b.seed)
    for name in ("train", "test"):
        counts[f"{name}_positives"] = label_counts.get((name, 1), 0)
        counts[f"{name}_negatives"] = label_counts.get((name, 0), 0)
        counts[f"{name}_rows"] = counts[f"{name}_positives"] + counts[f"{name}_negatives"]
    counts["negative_shortfall"] = sum(
        counts[f"{s}_positives"] * b.negatives - counts[f"{s}_negatives"] for s in ("train", "test"))

    manifest = {
        "version": plan.version,
        "created_at": created_at.isoformat(),
        "recsys_ray_version": __version__,
        "tenant": plan.tenant,
        "config": json.loads(b.model_dump_json()) | {"validation": json.loads(vcfg.model_dump_json())},
        "cutoff": datetime.fromtimestamp(cutoff_us / 1e6, tz=timezone.utc).isoformat(),
        "split_strategy": b.split_strategy,
        "parallelism": parallelism,
        "inputs": {
            "interactions": [{"path": f.uri, "size": f.size} for f in plan.interactions],
            "items": [{"path": f.uri, "size": f.size} for f in plan.items],
        },
        "counts": counts,
        "shards": shard_rows,
        "features": {"users": "features/users", "items": "features/items.parquet"},
        "quarantine": "quarantine",
        "schema": [{"name": f.name, "type": str(f.type)} for f in schemas.TRAINING],
    }
    manifest["timings_s"] = timer.seconds
    # ---- build report (recsys_ray.report): events per day and type, which only the build sees,
    # to summaries/daily.parquet, then report.html; both before the manifest, the commit point.
    from recsys_ray.report.collect import DAILY_SUMMARY, daily_counts_of
    from recsys_ray.report.writer import BuildSummaries, write_report

    with timer.stage("report"):
        daily = daily_counts_of(events)
        storage.write_table(storage.join(plan.out, DAILY_SUMMARY), daily, plan.options)
        write_report(plan.out, manifest, plan.options, build_summaries=BuildSummaries(daily=daily),
                     settings=cfg.report)
    # ---- end build report
    storage.write_bytes(storage.join(plan.out, MANIFEST), json.dumps(manifest, indent=2).encode(), plan.options)
    manifest["uri"] = plan.out
    return manifest


def _clear_version(plan: BuildPlan) -> None:
    """Remove the manifest first (the version stops looking complete), then the rest."""
    manifest_uri = storage.join(plan.out, MANIFEST)
    if storage.exists(manifest_uri, plan.options):
        storage.delete(manifest_uri, plan.options)
    storage.delete(plan.out, plan.options)


_UNRESERVED_MAX_CPUS = 4


def _cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1)) or 1


def _auto_parallelism(rows: int) -> int:
    cpus = _cluster_cpus()
    return max(cpus, min(256, int(np.ceil(rows / 2_000_000)) * cpus))


def _shard_count(rows: int, b) -> int:
    if b.shards:
        return b.shards
    return max(1, int(np.ceil(rows / b.rows_per_shard)))


def _auto_read_blocks(files: list[storage.FileEntry]) -> int:
    """Blocks to validate in: every CPU busy, and more blocks as the input grows."""
    cpus = _cluster_cpus()
    size = sum(f.size for f in files)
    return min(256, cpus * max(1, int(np.ceil(size / _READ_BYTES_PER_CPU_ROUND))))


_READ_BYTES_PER_CPU_ROUND = 16 * 2**20


def _read_validated(files: list[storage.FileEntry], dataset: str, vcfg, options,
                    blocks: int | None = None, cpus: int = 1) -> "ray.data.Dataset":
    """One dataset of validated rows (combined valid + quarantine columns) from every file.

    Parquet files are read and validated by the same task, a piece at a time
    (large files split along row groups into about `blocks` pieces overall,
    and large row groups into row slices while there are fewer pieces than
    `cpus`), so raw rows never pass through the object store: only validated
    rows do.
    """
    parts = []
    by_format: dict[tuple[str, bool], list[storage.FileEntry]] = {}
    for entry in files:
        if entry.size == 0:
            raise BuildError(f"input file {entry.uri} is empty")
        fmt = formats.format_from_path(entry.uri)
        by_format.setdefault((fmt, storage.is_s3(entry.uri)), []).append(entry)
    for (fmt, _), entries in sorted(by_format.items(), key=lambda kv: kv[0]):
        if fmt == "parquet":
            piece_bytes = max(1, sum(e.size for e in entries) // max(1, blocks or 1))
            pieces = [piece for entry in entries for piece in _parquet_pieces(entry, options, piece_bytes)]
            pieces = slice_row_groups(pieces, cpus)
            ds = ray.data.from_items(pieces, override_num_blocks=len(pieces)).map_batches(
                read_and_validate_parquet, batch_size=1, batch_format="pyarrow",
                fn_kwargs={"dataset": dataset, "cfg": vcfg, "options": options})
        else:
            fs, _ = storage.resolve(entries[0].uri, options)
            paths = [storage.resolve(e.uri, options)[1] for e in entries]
            ds = ray.data.read_binary_files(paths, filesystem=fs, include_paths=True)
            ds = ds.map_batches(batch_stage.decode_and_validate_files, batch_size=1, batch_format="pyarrow",
                                fn_kwargs={"dataset": dataset, "fmt": fmt, "cfg": vcfg})
        parts.append(ds)
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def _piece(uri: str, row_groups: list[int] | None, row_offset: int, group_rows: int | None = None,
           row_slice: list[int] | None = None) -> dict[str, Any]:
    return {"uri": uri, "row_groups": row_groups, "row_offset": row_offset, "row_slice": row_slice,
            "group_rows": group_rows}


def _parquet_pieces(entry: storage.FileEntry, options, piece_bytes: int) -> list[dict[str, Any]]:
    """Consecutive row-group ranges of one Parquet file of about `piece_bytes` each
    (`row_groups` None: the whole file; `group_rows`: the rows of a piece that is
    one row group, which `slice_row_groups` may cut). Only a file larger than one
    piece has its footer read here (which checks it is Parquet); a smaller one
    only its magic bytes, so it is never sliced."""
    if entry.size <= piece_bytes:
        _check_parquet(entry.uri, options)
        return [_piece(entry.uri, None, 0)]
    fs, path = storage.resolve(entry.uri, options)
    try:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
    except (pa.ArrowException, OSError) as exc:
        raise BuildError(f"input file {entry.uri} is not a valid Parquet file: {exc}") from exc
    pieces: list[dict[str, Any]] = []
    current: list[int] = []
    current_bytes = start_row = rows = 0
    for index in range(meta.num_row_groups):
        current.append(index)
        group = meta.row_group(index)
        current_bytes += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        rows += group.num_rows
        if current_bytes >= piece_bytes or index == meta.num_row_groups - 1:
            pieces.append(_piece(entry.uri, current, start_row, group.num_rows if len(current) == 1 else None))
            current, current_bytes, start_row = [], 0, rows
    if len(pieces) == 1:
        return [_piece(entry.uri, None, 0, pieces[0]["group_rows"])]
    return pieces


# Each slice decodes its whole row group, so slices of one group multiply its
# decoded size in memory (and its reads from S3) while they run side by side.
_MAX_SLICES_PER_GROUP = 4


def slice_row_groups(pieces: list[dict[str, Any]], target: int) -> list[dict[str, Any]]:
    """Cut single-row-group pieces into row slices until there are `target` pieces
    (or no piece can be cut further), largest slices first, at most
    `_MAX_SLICES_PER_GROUP` per group.

    A slice's task decodes its whole row group and keeps its rows, so slicing
    repeats decoding (and, on S3, reading): worth it only while CPUs would
    otherwise idle, which is why `target` is the cluster's CPU count, not the
    number of blocks.
    """
    counts = [1] * len(pieces)
    while sum(counts) < target:
        rows_per_slice = [p["group_rows"] // (c + 1) if p["group_rows"] and c < _MAX_SLICES_PER_GROUP else 0
                          for p, c in zip(pieces, counts)]
        best = int(np.argmax(rows_per_slice)) if rows_per_slice else 0
        if not rows_per_slice or rows_per_slice[best] == 0:
            break
        counts[best] += 1
    out = []
    for piece, count in zip(pieces, counts):
        if count == 1:
            out.append(piece)
            continue
        rows = piece["group_rows"]
        bounds = [i * rows // count for i in range(count + 1)]
        out.extend({**piece, "row_offset": piece["row_offset"] + lo, "row_slice": [lo, hi - lo]}
                   for lo, hi in zip(bounds[:-1], bounds[1:]))
    return out


def read_and_validate_parquet(batch: pa.Table, dataset: str, cfg, options: storage.StorageOptions) -> pa.Table:
    """Read the Parquet pieces named in `batch` (`uri`, `row_groups`, `row_offset`,
    `row_slice`) and validate their rows (rows numbered from the start of their file)."""
    parts = []
    for piece in batch.to_pylist():
        fs, path = storage.resolve(piece["uri"], options)
        groups = piece["row_groups"]
        try:
            with fs.open_input_file(path) as f:
                parquet = pq.ParquetFile(f, pre_buffer=True)
                table = parquet.read() if groups is None else parquet.read_row_groups(groups)
        except (pa.ArrowException, OSError) as exc:
            raise BuildError(f"input file {piece['uri']} could not be read as Parquet: {exc}") from exc
        if piece["row_slice"] is not None:
            table = table.slice(*piece["row_slice"])
        parts.append(batch_stage.validate_table_batch(table, dataset, cfg, source=path,
                                                      row_offset=piece["row_offset"]))
    return pa.concat_tables(parts)


def _check_parquet(uri: str, options) -> None:
    fs, path = storage.resolve(uri, options)
    with fs.open_input_file(path) as f:
        size = f.size()
        head = f.read_at(4, 0)
        tail = f.read_at(4, max(0, size - 4))
    if size < 12 or head != formats.PARQUET_MAGIC or tail != formats.PARQUET_MAGIC:
        raise BuildError(f"input file {uri} is not a valid Parquet file")


def _validation_counts(validated) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in validated.map_batches(batch_stage.validation_summary, batch_format="pyarrow").iter_rows():
        totals[row["reason"]] = totals.get(row["reason"], 0) + int(row["count"])
    return totals


def _write_quarantine(rejected, summary: dict[str, int], plan: BuildPlan, dataset: str) -> None:
    if sum(v for k, v in summary.items() if k != "valid") == 0:
        return
    fs, path = storage.resolve(storage.join(plan.out, "quarantine", dataset), plan.options)
    rejected.write_parquet(path, filesystem=fs)


def _deduplicate_partition(events: pa.Table) -> pa.Table:
    """Unique events of whole users; `event_id` has done its job here and is
    dropped, so the events the later stages share take less object-store memory."""
    unique, _ = validation.deduplicate_events(events)
    return unique.drop_columns(["event_id"])


def _cutoff(events, test_fraction: float, explicit, total: int, strategy: str) -> int:
    """The global cutoff in microseconds: explicit, or the exact (1 - test_fraction) quantile.

    With leave-last-out splitting there is no global cutoff; recency is then
    measured from the latest event of the snapshot.
    """
    if explicit is not None:
        return int(explicit.timestamp() * 1_000_000)
    summaries = _collect(events.map_batches(split.time_summary, batch_size=None, batch_format="pyarrow"))
    summaries = summaries.filter(pc.greater(summaries.column("count"), 0))
    lo, hi = pc.min(summaries.column("min")).as_py(), pc.max(summaries.column("max")).as_py()
    if strategy == "leave_last_out":
        return hi + 1
    rank = split.quantile_rank(total, test_fraction)
    edges = split.bin_edges(lo, hi)
    histograms = _collect(events.map_batches(split.timestamp_histogram, batch_size=None, batch_format="pyarrow",
                                             fn_kwargs={"edges": edges}))
    counts = np.sum(np.stack([np.asarray(c) for c in histograms.column("counts").to_pylist()]), axis=0)
    index, before = split.locate_rank(counts, rank)
    values = _collect(events.map_batches(split.values_in_range, batch_size=None, batch_format="pyarrow",
                                         fn_kwargs={"lo": int(edges[index]), "hi": int(edges[index + 1])}))
    ordered = np.sort(values.column("ts").to_numpy())
    return int(ordered[rank - before])


def _collect(ds) -> pa.Table:
    """Gather a dataset of small per-block summaries into one table."""
    tables = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
              for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    return pa.concat_tables(tables)


def user_features_for_partition(events: pa.Table, cutoff_us: int, strategy: str,
                                positive_types: tuple[str, ...]) -> pa.Table:
    return features.user_features(split.train_events(events, cutoff_us, strategy, positive_types), cutoff_us)


def item_partials_for_partition(events: pa.Table, cutoff_us: int, strategy: str,
                                positive_types: tuple[str, ...]) -> pa.Table:
    """Training-window partials, plus zero rows for items seen only after the cutoff
    (so that every item of the snapshot is known to the sampler)."""
    partials = features.item_partials(split.train_events(events, cutoff_us, strategy, positive_types))
    all_items = pc.unique(events.column("item_id"))
    unseen = pc.filter(all_items, pc.invert(pc.is_in(all_items, value_set=partials.column("item_id"))))
    if len(unseen) == 0:
        return partials
    zeros = {name: pa.array(np.zeros(len(unseen)), features.ITEM_PARTIALS.field(name).type)
             for name in features.ITEM_PARTIALS.names if name != "item_id"}
    return pa.concat_tables([partials, pa.table({"item_id": unseen, **zeros}).cast(features.ITEM_PARTIALS)])


def _write_user_features(events, plan: BuildPlan, cutoff_us: int, b) -> "ray.data.MaterializedDataset":
    users = events.map_batches(
        user_features_for_partition, batch_size=None, batch_format="pyarrow",
        fn_kwargs={"cutoff_us": cutoff_us, "strategy": b.split_strategy, "positive_types": tuple(b.positive_types)},
    ).materialize()
    fs, path = storage.resolve(storage.join(plan.out, "features", "users"), plan.options)
    users.write_parquet(path, filesystem=fs)
    return users


def _sum_item_partials(events, cutoff_us: int, b) -> pa.Table:
    partials = events.map_batches(
        item_partials_for_partition, batch_size=None, batch_format="pyarrow",
        fn_kwargs={"cutoff_us": cutoff_us, "strategy": b.split_strategy, "positive_types": tuple(b.positive_types)},
    )
    acc = features.ITEM_PARTIALS.empty_table()
    pending: list[pa.Table] = []
    pending_rows = 0
    for part in partials.iter_batches(batch_size=None, batch_format="pyarrow"):
        pending.append(part)
        pending_rows += part.num_rows
        if pending_rows > 2_000_000:
            acc = features.sum_item_partials(pa.concat_tables([acc, *pending]))
            pending, pending_rows = [], 0
    return features.sum_item_partials(pa.concat_tables([acc, *pending]))


def _read_catalog(plan: BuildPlan, vcfg) -> tuple[pa.Table | None, dict[str, Any]]:
    """The validated, de-duplicated catalog (a frozen value the size of the catalog)."""
    if not plan.items:
        return None, {"catalog": False}
    validated = _read_validated(plan.items, "items", vcfg, plan.options).materialize()
    summary = _validation_counts(validated)
    _write_quarantine(validated.map_batches(batch_stage.rejected_rows, batch_format="pyarrow"),
                      summary, plan, "items")
    valid = [b for b in validated.map_batches(batch_stage.valid_rows, fn_kwargs={"dataset": "items"},
                                              batch_format="pyarrow").iter_batches(batch_size=None,
                                                                                   batch_format="pyarrow")]
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


def _candidates(catalog: pa.Table | None, summed: pa.Table, b) -> examples.Candidates:
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


def _positive_counts(events, cutoff_us: int, b) -> dict[str, int]:
    """Positives per split over the whole snapshot (one small row per block and split)."""
    kwargs = {"cutoff_us": cutoff_us, "strategy": b.split_strategy, "positive_types": tuple(b.positive_types)}
    totals: dict[str, int] = {}
    for row in _collect(events.map_batches(examples.count_positives, batch_size=None, batch_format="pyarrow",
                                           fn_kwargs=kwargs)).to_pylist():
        totals[row["split"]] = totals.get(row["split"], 0) + int(row["positives"])
    return totals


def write_shard_files(batch: pa.Table, out: str, options: storage.StorageOptions, user_features: list,
                      item_features: pa.Table) -> pa.Table:
    """Join features onto every (split, shard) group of this batch and write it as one Parquet file.

    `user_features` are the object refs of the user feature table's blocks
    (fetched here, zero-copy on the same node). Returns one row per file:
    split, shard, path, rows, positives.
    """
    users = ray.get(list(user_features))
    users = pa.concat_tables(users) if users else schemas.USER_FEATURES.empty_table()
    meta = {"split": [], "shard": [], "path": [], "rows": [], "positives": []}
    for split_name, shard, rows in examples.shard_groups(batch):
        relative = f"{split_name}/part-{shard:05d}.parquet"
        storage.write_tables(storage.join(out, relative), examples.finish_shard_chunks(rows, users, item_features),
                             schemas.TRAINING, options)
        meta["split"].append(split_name)
        meta["shard"].append(shard)
        meta["path"].append(relative)
        meta["rows"].append(rows.num_rows)
        meta["positives"].append(int(pc.sum(rows.column("label")).as_py() or 0))
    return pa.table(meta, schema=SHARD_META)


SHARD_META = pa.schema([("split", pa.string()), ("shard", pa.int32()), ("path", pa.string()),
                        ("rows", pa.int64()), ("positives", pa.int64())])


def _write_examples(events, example_kwargs: dict, features_by_key: dict, shards_per_split: dict[str, int],
                    plan: BuildPlan, seed: int) -> tuple[dict[str, list], dict[tuple[str, int], int]]:
    """Label rows per user partition, hash them into shards (one shuffle of the
    narrow rows), join features and write each shard once; returns the
    manifest's shard list and label counts."""
    total = shards_per_split["train"] + shards_per_split["test"]
    written = (
        events.map_batches(examples.label_examples, batch_size=None, batch_format="pyarrow",
                           fn_kwargs=example_kwargs)
        .map_batches(examples.assign_shards, batch_size=None, batch_format="pyarrow",
                     fn_kwargs={"shards_per_split": shards_per_split, "seed": seed})
        .repartition(total, keys=["split", "_shard"])
        .map_batches(write_shard_files, batch_size=None, batch_format="pyarrow",
                     fn_kwargs={"out": plan.out, "options": plan.options, **features_by_key})
    )
    meta = _collect(written)
    log.debug("examples and shards:\n%s", written.stats())
    shards: dict[str, list] = {"train": [], "test": []}
    labels: dict[tuple[str, int], int] = {}
    for row in sorted(meta.to_pylist(), key=lambda r: (r["split"], r["shard"])):
        shards[row["split"]].append({"path": row["path"], "rows": row["rows"]})
        labels[(row["split"], 1)] = labels.get((row["split"], 1), 0) + row["positives"]
        labels[(row["split"], 0)] = labels.get((row["split"], 0), 0) + row["rows"] - row["positives"]
    return shards, labels
