"""Summaries of one version from its files, computed with Ray Data.

Every file of the version that the report needs becomes one work unit; one
Ray Data pass (`map_batches`, a unit per task) reads each file's columns and
returns a small partial summary, serialised as Arrow IPC so units of different
kinds travel in one dataset. The driver only merges partials: per-key tables
(one row per user or item, never one per interaction) and a bounded sample
of shard rows for the feature distributions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from recsys_ray.build.manifest import Manifest
from recsys_ray.build.writer import DAILY_SUMMARY
from recsys_ray.config import ReportConfig
from recsys_ray.io import storage
from recsys_ray.report import summaries as s



class ReportError(RuntimeError):
    """The report cannot be written; the message says why in the user's terms."""


def summarize_version(uri: str, manifest: dict[str, Any], options: storage.StorageOptions, settings: ReportConfig,
                      daily: pa.Table | None = None) -> s.VersionSummary:
    """Everything the report shows about the version at `uri` (whose manifest is `manifest`).

    `daily` is the build's own daily-count summary when the caller has it;
    otherwise it is read from `summaries/daily.parquet` if the version has one.
    """
    units = work_units(uri, manifest, options, settings, with_daily=daily is None)
    results: list[list[pa.Table]] = [[] for _ in units]
    if units:
        dataset = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
            summarize_units, batch_size=1, batch_format="pyarrow", fn_kwargs={"options": options})
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for unit, payload in zip(batch.column("unit").to_pylist(), batch.column("payload").to_pylist()):
                results[unit].append(from_ipc(payload))
    return assemble(uri, manifest, settings, units, results, daily)


def assemble(uri: str, manifest: dict[str, Any], settings: ReportConfig, units: list[dict[str, Any]],
             results: list[list[pa.Table]], daily: pa.Table | None = None) -> s.VersionSummary:
    """Merge the partial summaries of `units` (`results[i]` holds unit i's) into the version's summary."""
    by_kind: dict[str, list[pa.Table]] = {}
    samples: dict[str, list[pa.Table]] = {"train": [], "test": []}
    for unit, tables in zip(units, results):
        if unit["kind"] == "sample":
            samples[unit["split"]].extend(tables)
        else:
            by_kind.setdefault(unit["kind"], []).extend(tables)
    if daily is None and by_kind.get("daily"):
        daily = s.combine_daily_counts(by_kind["daily"])
    users = _concat(by_kind.get("users", []), s.USER_COUNTS)
    items = _concat(by_kind.get("items", []), s.ITEM_COUNTS)
    test_keys = s.combine_test_keys(by_kind.get("test_keys", []))
    quarantine = s.combine_quarantine_samples(by_kind.get("quarantine", []), settings.samples_per_reason)
    return s.summarize(manifest, uri, settings, daily=daily, users=users, items=items, test_keys=test_keys,
                       quarantine_samples=quarantine,
                       train_sample=_concat_samples(samples["train"]), test_sample=_concat_samples(samples["test"]))


def work_units(uri: str, manifest: dict[str, Any], options: storage.StorageOptions, settings: ReportConfig,
               with_daily: bool = True) -> list[dict[str, Any]]:
    """The files to summarise, one dict per file: kind, uri and the kind's parameters."""
    units: list[dict[str, Any]] = []
    located = Manifest.model_validate(manifest).model_copy(update={"uri": uri})
    shard_files = {split: located.shard_uris(split) for split in ("train", "test")}
    for split in ("train", "test"):
        rows = [int(entry["rows"]) for entry in manifest.get("shards", {}).get(split, [])]
        total = sum(rows)
        for shard_uri, shard_rows in zip(shard_files[split], rows):
            limit = shard_rows if total <= settings.sample_rows else math.ceil(settings.sample_rows * shard_rows / total)
            units.append({"kind": "sample", "split": split, "uri": shard_uri, "limit": limit})
            if split == "test":
                units.append({"kind": "test_keys", "split": split, "uri": shard_uri, "limit": 0})
    features = manifest.get("features") or {"users": "features/users", "items": "features/items.parquet"}
    for entry in storage.list_files(storage.join(uri, features["users"]), options, suffixes=(".parquet",)):
        units.append({"kind": "users", "split": "", "uri": entry.uri, "limit": 0})
    units.append({"kind": "items", "split": "", "uri": storage.join(uri, features["items"]), "limit": 0})
    missing = [u["uri"] for u in units if u["kind"] in ("sample", "items") and not storage.exists(u["uri"], options)]
    if missing:
        raise ReportError(f"the version at {uri} is incomplete: {', '.join(sorted(set(missing)))} "
                          f"{'is' if len(set(missing)) == 1 else 'are'} missing")
    quarantine = storage.join(uri, manifest.get("quarantine") or "quarantine")
    for entry in storage.list_files(quarantine, options, suffixes=(".parquet",)):
        units.append({"kind": "quarantine", "split": "", "uri": entry.uri, "limit": settings.samples_per_reason})
    daily_uri = storage.join(uri, DAILY_SUMMARY)
    if with_daily and storage.exists(daily_uri, options):
        units.append({"kind": "daily", "split": "", "uri": daily_uri, "limit": 0})
    return [{**unit, "index": index} for index, unit in enumerate(units)]


def summarize_units(batch: pa.Table, options: storage.StorageOptions) -> pa.Table:
    """Ray Data map: the partial summary of each work unit in `batch`, as (unit index, IPC payload) rows."""
    out_units, payloads = [], []
    for unit in batch.to_pylist():
        out_units.append(unit["index"])
        payloads.append(to_ipc(summarize_unit(unit, options)))
    return pa.table({"unit": pa.array(out_units, pa.int64()), "payload": pa.array(payloads, pa.binary())})


def summarize_unit(unit: dict[str, Any], options: storage.StorageOptions) -> pa.Table:
    """Read one file and return its partial summary (see `work_units` for the kinds)."""
    fs, path = storage.resolve(unit["uri"], options)
    with fs.open_input_file(path) as f:
        parquet = pq.ParquetFile(f)
        kind = unit["kind"]
        if kind == "sample":
            columns = s.numeric_features(parquet.schema_arrow)
            if unit["limit"] == 0 or not columns:
                return pa.table({c: pa.array([], pa.float64()) for c in columns})
            batch = next(parquet.iter_batches(batch_size=unit["limit"], columns=columns), None)
            return pa.Table.from_batches([batch]) if batch is not None else parquet.schema_arrow.empty_table()
        if kind == "test_keys":
            return s.test_positive_keys(parquet.read(columns=["user_id", "item_id", "label"]))
        if kind == "users":
            return parquet.read(columns=list(s.USER_COUNTS.names)).cast(s.USER_COUNTS)
        if kind == "items":
            return parquet.read(columns=list(s.ITEM_COUNTS.names)).cast(s.ITEM_COUNTS)
        if kind == "quarantine":
            return s.quarantine_samples(parquet.read(columns=list(s.QUARANTINE_SAMPLE_COLUMNS)), unit["limit"])
        if kind == "daily":
            return parquet.read().cast(s.DAILY)
    raise ValueError(f"unknown work unit kind {kind!r}")


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


def daily_counts_of(events: "ray.data.Dataset") -> pa.Table:
    """Events per day and type over a dataset of events, one partial per block."""
    partials = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
                for b in events.map_batches(s.daily_counts, batch_size=None, batch_format="pyarrow")
                .iter_batches(batch_size=None, batch_format="pyarrow")]
    return s.combine_daily_counts(partials)


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t.cast(schema) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _concat_samples(tables: list[pa.Table]) -> dict[str, np.ndarray]:
    """Feature name -> sampled values (NaN for null), over the columns every sampled shard has."""
    tables = [t for t in tables if t.num_columns]
    if not tables:
        return {}
    names = [n for n in tables[0].column_names if all(n in t.column_names for t in tables)]
    return {n: np.concatenate([s.feature_values(t.column(n)) for t in tables]) for n in names}

