"""One build, start to commit: plan, read and validate, partition, split, features,
examples and shards, then the manifest (see `recsys_ray.build.dataflow` for the steps)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from recsys_ray import __version__, schemas
from recsys_ray.build import dataflow, inputs, partitions
from recsys_ray.build.manifest import Column, Counts, EvalSet, Manifest
from recsys_ray.build.plan import BuildError, BuildPlan, plan_build
from recsys_ray.build.progress import StageTimer, ray_data_console_for_builds
from recsys_ray.build.writer import (DAILY_SUMMARY, EVAL_DIR, ITEM_FEATURES_FILE, QUARANTINE_DIR, USER_FEATURES_DIR,
                                     VersionWriter, vocabulary_path)
from recsys_ray.config import RecsysConfig
from recsys_ray.errors import root_cause
from recsys_ray.io.formats import InputError
from recsys_ray.report.collect import daily_counts_of
from recsys_ray.report.writer import BuildSummaries, write_report
from recsys_ray.runtime import ensure_ray, shuffles_in_default_worker_pool
from recsys_ray.stages import column_stats, heavy, training_rows, vocab

log = logging.getLogger(__name__)


def build_training_data(cfg: RecsysConfig, plan: BuildPlan | None = None) -> Manifest:
    """Run the whole build on the current Ray cluster (or a local one) and return its manifest.

    `plan` may be given when the caller already resolved it (to report input
    mistakes before Ray starts). The Ray Data settings the build tunes, and its
    use of the default worker pool for shuffles, are restored afterwards.
    """
    plan = plan or plan_build(cfg)  # bad inputs fail before a local Ray is started
    ensure_ray()
    writer = VersionWriter(plan.out, plan.options)
    with (dataflow.tuned_data_context(dataflow.progress_bars_wanted()), shuffles_in_default_worker_pool(),
          ray_data_console_for_builds()):
        writer.on_write_start()
        try:
            manifest = _build(cfg, plan, writer)
        except BaseException as exc:
            writer.on_write_failed(exc)
            cause = root_cause(exc)
            if cause is not exc and isinstance(cause, (BuildError, InputError)):
                raise cause from None  # a worker's input error, without Ray's wrapping
            raise
        return writer.on_write_complete(manifest)


def describe_columns(schema, vocabularies: dict, train_stats: dict) -> list[Column]:
    """The manifest's schema: each column's type, tags, cardinality (indexed columns and their
    sources) and, for continuous columns, statistics over the train split."""
    cardinality = {}
    for index, (vocabulary, source) in schemas.INDEXED_COLUMNS.items():
        size = vocab.vocabulary_cardinality(vocabularies[vocabulary])
        cardinality[index] = size
        if source != "history_item_ids":
            cardinality[source] = size
    cardinality["history_item_ids"] = cardinality["item_idx"]
    columns = []
    for field in schema:
        stats = train_stats.get(field.name)
        columns.append(Column(name=field.name, type=str(field.type), tags=schemas.column_tags(field),
                              cardinality=cardinality.get(field.name),
                              stats=column_stats.finalize(stats) if stats is not None else None))
    return columns


def _build(cfg: RecsysConfig, plan: BuildPlan, writer: VersionWriter) -> Manifest:
    timer = StageTimer()
    created_at = datetime.now(timezone.utc)
    # Resolve "now" once so every worker applies the same accepted time range.
    _, hi = cfg.validation.time_range()
    vcfg = cfg.validation.model_copy(update={"max_timestamp": hi})
    b = cfg.build

    parallelism = b.parallelism or inputs.user_partitions(plan.interactions, dataflow.cluster_cpus())
    # Validation streams into the partitioning (one pass over the input); the
    # partitioning stage's time includes it.
    with timer.stage("validate_and_partition"):
        valid = dataflow.read_valid_rows(plan.interactions, "interactions", vcfg, plan.options, writer,
                                         blocks=b.parallelism)
        events = dataflow.partition_events(valid, parallelism, writer)
        del valid
        rejected = partitions.rejected_counts(writer.out, "interactions", writer.options)
    counts: dict[str, Any] = {
        "input_rows": events.valid_rows + sum(rejected.values()),
        "valid": events.valid_rows,
        "rejected": dict(sorted(rejected.items())),
        "duplicates": events.valid_rows - events.events,
        "events": events.events,
    }
    if counts["valid"] == 0:
        raise BuildError(f"no valid interactions among {counts['input_rows']} input rows "
                         f"(rejected: {counts['rejected']}); see {writer.uri(QUARANTINE_DIR)}")
    events_count = events.events

    with timer.stage("cutoff"):
        cutoff_us = dataflow.find_cutoff(events, b.test_fraction, b.cutoff, events_count, b.split_strategy)

    with timer.stage("features"):
        train_users = dataflow.user_features(events, cutoff_us, b, writer)
        summed = dataflow.sum_item_partials(events, cutoff_us, b)

    with timer.stage("catalog"):
        catalog, counts["items"] = dataflow.read_catalog(plan.items, vcfg, plan.options, writer)
        candidates = dataflow.negative_candidates(catalog, summed, b)
        item_side = training_rows.item_side_at_cutoff(summed, train_users, catalog, b.windows)
        writer.write_table(ITEM_FEATURES_FILE, training_rows.item_feature_table(item_side))

    with timer.stage("vocabularies_and_eval"):
        vocabularies = dataflow.vocabularies(events, cutoff_us, b, summed, catalog, writer)
        del summed
        eval_users = dataflow.write_eval_set(events, cutoff_us, b, candidates, writer)

    with timer.stage("examples_and_shards"):
        positives = dataflow.positive_counts(events, cutoff_us, b)
        # Each positive brings at most K negatives, so this bounds the rows per split.
        shards_per_split = {s: dataflow.shard_count(positives.get(s, 0) * (1 + b.negatives), b)
                            for s in ("train", "test")}
        heavy_items = heavy.NO_HEAVY_ITEMS
        if b.feature_time == "event":
            limit = dataflow.heavy_item_limit(events_count, parallelism, b.heavy_item_events)
            heavy_items = dataflow.find_heavy_items(events, limit)
            if heavy_items:
                log.info("%d heavy item(s) with more than %d events, split into %d time slices",
                         len(heavy_items.item_ids), limit, heavy_items.slice_count)
        rows = training_rows.RowOptions(
            cutoff_us=cutoff_us, strategy=b.split_strategy, positive_types=tuple(b.positive_types),
            candidates=candidates, negatives=b.negatives, seed=b.seed, shards_per_split=shards_per_split,
            feature_time=b.feature_time, windows=b.windows, history=b.history, heavy_items=heavy_items,
            vocabularies=vocab.lookups(vocabularies))
        expected_rows = sum(positives.get(s, 0) for s in shards_per_split) * (1 + b.negatives)
        frozen_items = None if b.feature_time == "event" else training_rows.indexed_item_side(item_side,
                                                                                              rows.vocabularies)
        shard_rows, label_counts, train_stats = dataflow.write_examples(
            events, rows, frozen_items, catalog, writer, parallelism,
            rows_per_shard=expected_rows / sum(shards_per_split.values()))
    for name in ("train", "test"):
        counts[f"{name}_positives"] = label_counts.get((name, 1), 0)
        counts[f"{name}_negatives"] = label_counts.get((name, 0), 0)
        counts[f"{name}_rows"] = counts[f"{name}_positives"] + counts[f"{name}_negatives"]
    counts["negative_shortfall"] = sum(
        counts[f"{s}_positives"] * b.negatives - counts[f"{s}_negatives"] for s in ("train", "test"))

    recorded = b.model_copy(update={"tenant": plan.tenant, "version": plan.version, "out": plan.out})
    manifest = Manifest(
        version=plan.version,
        created_at=created_at,
        recsys_ray_version=__version__,
        tenant=plan.tenant,
        config=json.loads(recorded.model_dump_json()) | {"validation": json.loads(vcfg.model_dump_json())},
        cutoff=datetime.fromtimestamp(cutoff_us / 1e6, tz=timezone.utc),
        split_strategy=b.split_strategy,
        parallelism=parallelism,
        inputs={
            "interactions": [{"path": f.uri, "size": f.size} for f in plan.interactions],
            "items": [{"path": f.uri, "size": f.size} for f in plan.items],
        },
        counts=Counts.model_validate(counts),
        shards=shard_rows,
        features={"users": USER_FEATURES_DIR, "items": ITEM_FEATURES_FILE},
        quarantine=QUARANTINE_DIR,
        columns=describe_columns(schemas.training_schema(b.windows, b.history), vocabularies, train_stats),
        vocabularies={column: vocabulary_path(column) for column in vocabularies},
        eval=EvalSet(path=EVAL_DIR, users=eval_users, sampled_candidates=b.eval_negatives),
        timings_s=timer.seconds,
    )

    # The report comes before the manifest, the commit point; it shows every stage but its own.
    with timer.stage("report"):
        daily = daily_counts_of(events.dataset())
        writer.write_table(DAILY_SUMMARY, daily)
        write_report(plan.out, manifest, plan.options, build_summaries=BuildSummaries(daily=daily),
                     settings=cfg.report)
    return manifest.model_copy(update={"timings_s": dict(timer.seconds)})
