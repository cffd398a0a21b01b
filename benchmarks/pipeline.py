"""Benchmark the training-data build against single-process Polars runs of the same job.

For each size: generate N synthetic interactions (one Parquet file, or files of
`--file-rows` rows; users N/`--users-per`, items N/`--items-per`, default N/10 and
N/50), then for each mode, on the same files and in the same run, alternate the Ray
build and a Polars baseline `--repeats` times (ray, polars, ray, polars, ...). Above
`--baseline-max` interactions only the Ray build runs (one process of Polars needs
about 11 GB at 10M, so it cannot hold 100M in 24 GB):

  * event mode (`--feature-time event`, windows 7d,30d, history 20): each row's
    user and item features from the events strictly before the row's time;
  * cutoff mode (`--feature-time cutoff --windows '' --history 0`): user and item
    features over the training window, joined onto every row.

The Polars jobs do what the build does, the vocabularies, the index columns, the
evaluation set and the train split's column statistics included (`polars_job_extras`);
with `--polars-core` a third run per repeat does the job without those four (what the
baseline did before them), so that figures from both can be compared.

Every run is a fresh process; its wall time runs from the child's start (its
imports included) to the last file written, and the parent also reports the
process's whole lifetime. The Ray run starts a local Ray instance
(`recsys_ray.runtime.start_local_ray`, what `recsys-ray build` starts) inside
its timing, then runs `build_training_data`. The parent samples, every 0.2 s,
the machine's memory in use (psutil: total - available, which includes the
object store's shared memory) and reports its peak above the value just before
the child started (once it has settled after the previous run); for Ray runs
also the peak size of the Ray spill directory (set per run through
RAY_object_spilling_directory) and the object store's own total of spilled
bytes, and the peak rise of the disk in use on the work directory's file system
(inputs excluded: they exist before the start) with, every 5 s, the size of the
build's output directory (its shards and exchange files). Before and after each run it times a
fixed single-threaded workload (`machine_check_s`), so that a change in the machine's own speed
shows. Prints each run, then per size and mode each side's best wall time of
the repeats, the ratio ray/polars and the highest memory and spill figures.

    ./run bench pipeline --sizes 1000000 10000000 --mode both --repeats 2
    ./run bench pipeline --sizes 10000000 30000000 100000000 --mode event --repeats 1 \
        --file-rows 10000000 --items-per 20 --baseline-max 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from decimal import ROUND_FLOOR, Decimal

CHILD_STARTED = time.perf_counter()  # before the imports below: a run's wall time includes them

import numpy as np  # noqa: E402
import psutil  # noqa: E402

DAY_US = 86_400_000_000
SAMPLE_S = 0.2
OUTPUT_SAMPLE_EVERY = 25  # the output directory's size every 5 s
# The build options of each mode (`recsys-ray build` flags in the comments).
MODES = {
    "event": {"feature_time": "event", "windows": "7d,30d", "history": 20},   # the defaults
    "cutoff": {"feature_time": "cutoff", "windows": "", "history": 0},        # --windows '' --history 0
}


# ---- the Ray build ---------------------------------------------------------------------------------

def run_ray_build(mode: str, inter: str, items: str, out: str, started: float) -> dict:
    """One build on a fresh local Ray, as `recsys-ray build` runs it (in a child process);
    `started` is the child's start, before its imports."""
    import ray

    from recsys_ray.build import build_training_data
    from recsys_ray.config import RecsysConfig
    from recsys_ray.runtime import start_local_ray

    start_local_ray()
    init_s = time.perf_counter() - started
    manifest = build_training_data(RecsysConfig.load(build={"interactions": inter, "items": items, "out": out,
                                                            "version": "bench", **MODES[mode]}))
    wall = time.perf_counter() - started
    store = object_store_spill_stats()
    ray.shutdown()
    counts = manifest.counts
    return {"wall_s": round(wall, 2), "ray_init_s": round(init_s, 2), "stages_s": manifest.timings_s,
            "rows": counts.train_rows + counts.test_rows, "positives": counts.train_positives + counts.test_positives,
            "negative_shortfall": counts.negative_shortfall, **store}


def object_store_spill_stats() -> dict:
    """Bytes the object store spilled and restored over the run, and the spill directory Ray used
    (Ray's private memory-info call, what `ray memory --stats-only` prints; None if unavailable)."""
    try:
        import ray
        from ray._private import internal_api

        reply = internal_api.get_memory_info_reply(
            internal_api.get_state_from_address(ray.get_runtime_context().gcs_address))
        config = json.loads(ray._private.worker._global_node._object_spilling_config or "{}")
        return {"store_spilled_bytes": int(reply.store_stats.spilled_bytes_total),
                "store_restored_bytes": int(reply.store_stats.restored_bytes_total),
                "spill_config_dir": config.get("params", {}).get("directory_path")}
    except Exception as exc:  # a private API: report its absence, never fail the run
        return {"store_spilled_bytes": None, "store_restored_bytes": None, "spill_stats_error": repr(exc)}


# ---- the Polars baselines: shared steps ------------------------------------------------------------

class Stages:
    """Wall seconds per step, in order."""

    def __init__(self, started: float | None = None) -> None:
        """`started`: when the process started; the time since then is the step "start" (imports)."""
        self.last = time.perf_counter()
        self.started = self.last if started is None else started
        self.seconds: dict[str, float] = {}
        if started is not None:
            self.seconds["start"] = round(self.last - started, 2)

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 2)
        self.last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 2)


def _text(schema, name: str):
    import polars as pl

    if name not in schema:
        return pl.lit(None, dtype=pl.String)
    return pl.col(name).cast(pl.String).str.strip_chars()


def _missing(expr):
    return expr.is_null() | (expr.str.len_bytes() == 0)


def _epoch_us(value):
    """Epoch seconds (|value| < 1e11) or milliseconds as int64 microseconds; null unless finite."""
    import polars as pl

    return pl.when(value.is_finite()).then(
        pl.when(value.abs() < 1e11).then(value * 1e6).otherwise(value * 1e3).round()).cast(pl.Int64)


def _first_failure(checks: list):
    """The reason of each row's first failing check (null: valid), as the build's validation names it."""
    import polars as pl

    (cond, reason), *rest = checks
    expr = pl.when(cond).then(pl.lit(reason))
    for cond, reason in rest:
        expr = expr.when(cond).then(pl.lit(reason))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def polars_validated_events(inter: str, vcfg, out: str) -> tuple:
    """Validate and de-duplicate the interactions as the build does (`recsys_ray.validation`).

    Checks in the build's order, the first failing one naming the row's reason: user_id and
    item_id present after trimming and at most `max_id_length` characters; interaction_type
    (trimmed, lower-cased) present and known; timestamp present, parsed (typed timestamps and
    epoch seconds/milliseconds as the build reads them; text through Polars' own ISO-8601
    parser, which accepts fewer spellings than the build's) and within the accepted range;
    rating, if present, a number within [rating_min, rating_max] (non-finite means absent).
    Rejected rows go to quarantine/interactions.parquet with their reason. Duplicates: one
    event per event_id (missing ids derived from user, item, type and time; the build
    hashes the same four), keeping the first in (event_id, timestamp, user_id, item_id,
    interaction_type, rating) order. Returns (events with an int64 `ts` in microseconds,
    counts).
    """
    import polars as pl

    from recsys_ray import schemas

    lf = pl.scan_parquet(inter)
    schema = lf.collect_schema()
    lo, hi = vcfg.time_range()
    lo_us, hi_us = int(lo.timestamp() * 1_000_000), int(hi.timestamp() * 1_000_000)
    user, item = _text(schema, "user_id"), _text(schema, "item_id")
    itype = _text(schema, "interaction_type").str.to_lowercase()
    ts_type = schema.get("timestamp")
    raw_ts = pl.col("timestamp") if ts_type is not None else pl.lit(None, dtype=pl.Int64)
    if isinstance(ts_type, pl.Datetime):
        ts, present = raw_ts.dt.epoch("us"), raw_ts.is_not_null()
    elif ts_type is not None and ts_type.is_numeric():
        ts, present = _epoch_us(raw_ts.cast(pl.Float64)), raw_ts.is_not_null()
    else:
        text = _text(schema, "timestamp")
        ts = pl.when(text.str.contains(r"^[+-]?\d+(\.\d+)?$")).then(
            _epoch_us(text.cast(pl.Float64, strict=False))).otherwise(
            text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False).dt.epoch("us"))
        present = ~_missing(text)
    if "rating" in schema and schema["rating"] == pl.String:
        rating_text = _text(schema, "rating")
        number = rating_text.cast(pl.Float64, strict=False)
        bad_rating = ~_missing(rating_text) & (number.is_null() | ~number.is_finite())
    else:
        number = pl.col("rating").cast(pl.Float64) if "rating" in schema else pl.lit(None, dtype=pl.Float64)
        bad_rating = pl.lit(False)
    rating = pl.when(number.is_finite()).then(number)
    checked = lf.with_columns(_user=user, _item=item, _type=itype, _ts=ts, _present=present, _rating=rating,
                              _bad_rating=bad_rating)
    u, i, t, r = pl.col("_user"), pl.col("_item"), pl.col("_type"), pl.col("_rating")
    reason = _first_failure([
        (_missing(u), "missing_field"), (u.str.len_chars() > vcfg.max_id_length, "id_too_long"),
        (_missing(i), "missing_field"), (i.str.len_chars() > vcfg.max_id_length, "id_too_long"),
        (_missing(t), "missing_field"), (~t.is_in(list(schemas.INTERACTION_TYPES)), "unknown_interaction_type"),
        (~pl.col("_present"), "missing_field"), (pl.col("_ts").is_null(), "bad_timestamp"),
        ((pl.col("_ts") < lo_us) | (pl.col("_ts") > hi_us), "timestamp_out_of_range"),
        (pl.col("_bad_rating"), "bad_rating"),
        (r.is_not_null() & ((r < vcfg.rating_min) | (r > vcfg.rating_max)), "rating_out_of_range"),
    ])
    checked = checked.with_columns(_reason=reason)
    event_id = _text(schema, "event_id")
    derived = pl.lit("h") + pl.concat_str([u, i, t, pl.col("_ts").cast(pl.String)], separator="\x1f").hash().cast(
        pl.String)
    valid_lf = checked.filter(pl.col("_reason").is_null()).select(
        user_id=u, item_id=i, interaction_type=t, ts=pl.col("_ts"), rating=r,
        event_id=pl.coalesce(pl.when(~_missing(event_id)).then(event_id), derived))
    rejected_lf = checked.filter(pl.col("_reason").is_not_null()).select(
        schema.names(), reason=pl.col("_reason"))
    valid, rejected = pl.collect_all([valid_lf, rejected_lf])
    if rejected.height:
        os.makedirs(f"{out}/quarantine", exist_ok=True)
        rejected.write_parquet(f"{out}/quarantine/interactions.parquet")
    counts = {"valid": valid.height,
              "rejected": dict(rejected.group_by("reason").len().iter_rows()) if rejected.height else {}}
    ordered = valid.sort(["event_id", "ts", "user_id", "item_id", "interaction_type", "rating"], nulls_last=True)
    events = ordered.filter(pl.col("event_id").ne_missing(pl.col("event_id").shift(1))).drop("event_id")
    counts["events"] = events.height
    counts["duplicates"] = valid.height - events.height
    return events, counts


def polars_catalog(items: str, vcfg, out: str):
    """The validated catalog (item_id, title present; price a number >= 0), de-duplicated by
    item_id with a later row replacing an earlier one, as item_id, item_category, item_brand,
    item_price; rejected rows go to quarantine/items.parquet."""
    import polars as pl

    lf = pl.scan_parquet(items)
    schema = lf.collect_schema()
    item, title = _text(schema, "item_id"), _text(schema, "title")
    price = pl.col("price").cast(pl.Float64) if "price" in schema else pl.lit(None, dtype=pl.Float64)
    optional = {name: pl.when(~_missing(_text(schema, name))).then(_text(schema, name))
                for name in ("category", "brand")}
    checked = lf.with_row_index("_position").with_columns(_item=item, _price=pl.when(price.is_finite()).then(price))
    reason = _first_failure([
        (_missing(pl.col("_item")), "missing_field"),
        (pl.col("_item").str.len_chars() > vcfg.max_id_length, "id_too_long"),
        (_missing(title), "missing_field"),
        (pl.col("_price").fill_null(0.0) < 0, "price_out_of_range"),
    ])
    checked = checked.with_columns(_reason=reason)
    valid_lf = (checked.filter(pl.col("_reason").is_null())
                .select("_position", item_id=pl.col("_item"), item_category=optional["category"],
                        item_brand=optional["brand"], item_price=pl.col("_price")))
    rejected_lf = checked.filter(pl.col("_reason").is_not_null()).select(schema.names(), reason=pl.col("_reason"))
    valid, rejected = pl.collect_all([valid_lf, rejected_lf])
    if rejected.height:
        os.makedirs(f"{out}/quarantine", exist_ok=True)
        rejected.write_parquet(f"{out}/quarantine/items.parquet")
    return valid.sort("_position").unique("item_id", keep="last", maintain_order=False).drop("_position")


def quantile_cutoff(events, test_fraction: float) -> int:
    """The event time at rank floor((1 - f) * n) of the sorted times (the build's exact quantile)."""
    import polars as pl

    n = events.height
    rank = min(n - 1, max(0, int(((1 - Decimal(repr(float(test_fraction)))) * n).to_integral_value(ROUND_FLOOR))))
    return int(events.select(pl.col("ts").sort().gather(rank)).item())


def polars_labelled_rows(events, catalog, b) -> tuple:
    """Positives and negatives: one positive per (user, item, split), the latest event of a
    positive type (t = its time); K negatives per positive, distinct catalog items the user
    never interacted with (any split), taking t and split from their positive.

    Negatives are drawn with NumPy's generator (2K + 4 uniform draws per positive, the
    first K distinct unseen ones kept) instead of the build's hash streams, and a positive
    that gets fewer than K in that one round keeps fewer (the build draws again); the
    shortfall is reported. Returns (rows: user_id, item_id, split, ts, label; shortfall).
    """
    import polars as pl

    positives = (events.filter(pl.col("interaction_type").is_in(list(b.positive_types)))
                 .group_by(["user_id", "item_id", "split"]).agg(pl.col("ts").max()))
    item_ids, user_codes, seen = candidate_codes(events, catalog)
    pos_ucode = positives.join(user_codes, on="user_id", how="left", maintain_order="left")["_ucode"].to_numpy()
    picked = draw_unseen(pos_ucode, b.negatives, seen, len(item_ids), np.random.default_rng(b.seed))
    negatives = positives.select(pl.col("user_id", "split", "ts").gather(picked["pid"])).with_columns(
        item_id=item_ids.gather(picked["icode"]), label=pl.lit(0.0, dtype=pl.Float32))
    rows = pl.concat([positives.with_columns(label=pl.lit(1.0, dtype=pl.Float32)),
                      negatives.select(positives.columns + ["label"])])
    return rows, positives.height * b.negatives - negatives.height


def candidate_codes(events, catalog) -> tuple:
    """The candidate items (the catalog's, else the events'; sorted), a code per user and the
    keys ucode * items + icode of every (user, item) with an event (any split)."""
    import polars as pl

    universe = catalog["item_id"] if catalog is not None and catalog.height else events["item_id"].unique()
    item_ids = universe.unique().sort()
    codes = pl.DataFrame({"item_id": item_ids, "_icode": np.arange(len(item_ids), dtype=np.int64)})
    user_codes = events.select(pl.col("user_id").unique()).with_row_index("_ucode")
    seen = (events.select("user_id", "item_id").unique().join(user_codes, on="user_id").join(codes, on="item_id")
            .select(pl.col("_ucode").cast(pl.Int64) * len(item_ids) + pl.col("_icode")).to_series())
    return item_ids, user_codes, seen


def draw_unseen(owner_ucode: np.ndarray, k: int, seen, n_items: int, rng, chunk: int = 1_000_000):
    """Up to k distinct items per owner (a positive, or a user) that its user never had an event
    with: 2k + 4 uniform draws each, the first k distinct unseen ones kept (one round, so an
    owner may get fewer). Returns (pid: the owner's position, icode) rows in owner order."""
    import polars as pl

    draws, chosen = 2 * k + 4, []
    per_chunk = max(1, chunk // max(1, draws // 12))  # about 12M draws at a time
    for start in range(0, len(owner_ucode) if k else 0, per_chunk):
        ucode = owner_ucode[start:start + per_chunk].astype(np.int64)
        pid = np.repeat(np.arange(start, start + len(ucode)), draws)
        icode = rng.integers(0, n_items, len(pid))
        drawn = pl.DataFrame({"pid": pid, "icode": icode, "seen_key": np.repeat(ucode, draws) * n_items + icode})
        kept = drawn.filter(~pl.col("seen_key").is_in(seen.implode())
                            & (pl.col("pid") * n_items + pl.col("icode")).is_first_distinct())
        kept_pid = kept["pid"].to_numpy()
        rank = np.arange(len(kept_pid)) - np.searchsorted(kept_pid, kept_pid, side="left")
        chosen.append(kept.filter(pl.Series(rank < k)).select("pid", "icode"))
    return pl.concat(chosen) if chosen else pl.DataFrame({"pid": [], "icode": []},
                                                         schema={"pid": pl.Int64, "icode": pl.Int64})


def polars_vocabularies(events, catalog, b, out: str) -> dict:
    """The build's vocabularies (`recsys_ray.stages.vocab`): training-window event counts per
    user_id and item_id, per category and brand the summed counts of the catalog items that
    have it; values counted at least `min_frequency` times take indices 2, 3, ... by count
    descending, then value ascending. Written as vocab/{column}.parquet (value, index, count)."""
    import polars as pl

    train = events.filter(pl.col("split") == "train")
    counts = {"user_id": train.group_by(pl.col("user_id").alias("value")).len("count"),
              "item_id": train.group_by(pl.col("item_id").alias("value")).len("count")}
    attributes = counts["item_id"].join(catalog.rename({"item_id": "value"}), on="value", how="inner")
    for column in ("item_category", "item_brand"):
        counts[column] = (attributes.filter(pl.col(column).is_not_null())
                          .group_by(pl.col(column).alias("value")).agg(pl.col("count").sum()))
    os.makedirs(f"{out}/vocab", exist_ok=True)
    vocabularies = {}
    for column, table in counts.items():
        table = table.filter(pl.col("count") >= b.min_frequency).sort(["count", "value"], descending=[True, False])
        table = table.with_columns(index=pl.int_range(2, pl.len() + 2, dtype=pl.Int32)).select(
            "value", "index", pl.col("count").cast(pl.Int64))
        table.write_parquet(f"{out}/vocab/{column}.parquet")
        vocabularies[column] = table
    return vocabularies


def with_polars_indices(wide, vocabularies: dict):
    """The scalar index columns of `schemas.index_columns` on a shard: each column's vocabulary
    index, 0 for null, 1 for a value outside the vocabulary (the history's are the event
    job's own: `polars_event_build`)."""
    import polars as pl

    for name, (column, source) in {"user_idx": ("user_id", "user_id"), "item_idx": ("item_id", "item_id"),
                                   "item_category_idx": ("item_category", "item_category"),
                                   "item_brand_idx": ("item_brand", "item_brand")}.items():
        lookup = vocabularies[column].select(pl.col("value").alias(source), pl.col("index").alias(name))
        wide = wide.join(lookup, on=source, how="left", maintain_order="left").with_columns(
            pl.when(pl.col(source).is_null()).then(pl.lit(0, pl.Int32)).otherwise(pl.col(name).fill_null(1))
            .alias(name))
    return wide


def polars_eval_set(events, catalog, b, out: str, users_per_file: int = 250_000) -> int:
    """The build's evaluation set (`recsys_ray.stages.eval_set`): per user with a relevant item,
    the distinct items of its test-split positive events it had no train-split event with,
    the distinct items of its train-split events, and up to `eval_negatives` items it never
    had an event with (`draw_unseen`, one round, NumPy draws); lists sorted, rows sorted by
    user_id, written as eval/part-NNNNN.parquet of `users_per_file` users. Returns its users."""
    import polars as pl

    pairs = events.select("user_id", "item_id", "split", "interaction_type")
    seen = pairs.filter(pl.col("split") == "train").select("user_id", "item_id").unique()
    relevant = (pairs.filter((pl.col("split") == "test") & pl.col("interaction_type").is_in(list(b.positive_types)))
                .select("user_id", "item_id").unique().join(seen, on=["user_id", "item_id"], how="anti"))
    rows = relevant.group_by("user_id").agg(pl.col("item_id").sort().alias("relevant_item_ids")).sort("user_id")
    rows = rows.join(seen.group_by("user_id").agg(pl.col("item_id").sort().alias("seen_item_ids")), on="user_id",
                     how="left", maintain_order="left").with_columns(
        pl.col("seen_item_ids").fill_null(pl.lit([], pl.List(pl.String))))
    item_ids, user_codes, seen_keys = candidate_codes(events, catalog)
    ucode = rows.join(user_codes, on="user_id", how="left", maintain_order="left")["_ucode"].to_numpy()
    picked = draw_unseen(ucode, b.eval_negatives, seen_keys, len(item_ids), np.random.default_rng(b.seed + 1))
    sampled = (picked.with_columns(item_id=item_ids.gather(picked["icode"])).group_by("pid")
               .agg(pl.col("item_id").sort().alias("sampled_candidate_ids")))
    rows = rows.with_row_index("pid").with_columns(pl.col("pid").cast(pl.Int64)).join(
        sampled, on="pid", how="left", maintain_order="left").drop("pid").with_columns(
        pl.col("sampled_candidate_ids").fill_null(pl.lit([], pl.List(pl.String))))
    os.makedirs(f"{out}/eval", exist_ok=True)
    for index, start in enumerate(range(0, rows.height, users_per_file)):
        rows.slice(start, users_per_file).write_parquet(f"{out}/eval/part-{index:05d}.parquet")
    return rows.height


def polars_column_partials(shard, columns: list[str]) -> dict:
    """`column_stats.column_partials` of a shard, computed by Polars (float64 values)."""
    import polars as pl

    got = shard.select([
        expr for c in columns for expr in (
            pl.col(c).count().alias(f"{c}\x1fcount"), pl.col(c).null_count().alias(f"{c}\x1fnulls"),
            pl.col(c).cast(pl.Float64).mean().alias(f"{c}\x1fmean"),
            (pl.col(c).cast(pl.Float64).var(ddof=0) * pl.col(c).count()).alias(f"{c}\x1fm2"),
            pl.col(c).cast(pl.Float64).min().alias(f"{c}\x1fmin"),
            pl.col(c).cast(pl.Float64).max().alias(f"{c}\x1fmax"))]).row(0, named=True)
    out: dict = {c: {} for c in columns}
    for key, value in got.items():
        column, stat = key.split("\x1f")
        out[column][stat] = value
    for stats in out.values():
        n = stats["count"]
        stats.update(mean=stats["mean"] if n else 0.0, m2=stats["m2"] if n else 0.0,
                     min=stats["min"] if n else math.inf, max=stats["max"] if n else -math.inf)
    return out


def polars_write_shards(rows, out: str, b, positives: dict[str, int], finish, windows=(), history: int = 0,
                        vocabularies: dict | None = None) -> tuple[dict, dict | None]:
    """Shuffle the narrow rows into shards, then per shard join the features (`finish(rows)`,
    row order kept) and write it as one Parquet file, as the build's shard writers do: shards
    per split from the positive counts (ceil(positives * (1 + K) / rows_per_shard)), a row's
    shard and its place in the shard from a hash of its identity (user, item, time, label,
    split); columns those of the build's shards, in their order. With `vocabularies` (the
    whole job) each shard gets the index columns (`with_polars_indices`) and the train
    shards' continuous columns are summarised (`polars_column_partials`, combined in shard
    order as the build's are); without, the index columns are left out. Only one shard is
    ever wide. Returns the shards per split and the train split's statistics (or None)."""
    import polars as pl

    from recsys_ray import schemas
    from recsys_ray.build.exchange import continuous_columns
    from recsys_ray.stages.column_stats import combine_partials

    schema = schemas.training_schema(windows, history)
    indices = set() if vocabularies is not None else set(schemas.index_columns(history).names)
    columns = [f.name for f in schema if f.name not in indices]
    continuous = continuous_columns(schema)
    shards = {s: max(1, math.ceil(positives.get(s, 0) * (1 + b.negatives) / b.rows_per_shard))
              for s in ("train", "test")}
    keyed = rows.with_columns(_hash=pl.struct("user_id", "item_id", "ts", "label", "split").hash(b.seed))
    keyed = keyed.with_columns(
        _shard=pl.col("_hash") % pl.when(pl.col("split") == "test").then(pl.lit(shards["test"], pl.UInt64))
        .otherwise(pl.lit(shards["train"], pl.UInt64)))
    ordered = keyed.sort(["split", "_shard", "_hash"])
    groups = ordered.group_by(["split", "_shard"], maintain_order=True).len()
    start, partials = 0, []
    for split_name, shard, length in groups.iter_rows():
        os.makedirs(f"{out}/{split_name}", exist_ok=True)
        wide = finish(ordered.slice(start, length).drop("_shard", "_hash")).with_columns(
            timestamp=pl.from_epoch("ts", time_unit="us").dt.replace_time_zone("UTC"))
        if vocabularies is not None:
            wide = with_polars_indices(wide, vocabularies)
        wide = wide.select(pl.col(c).cast(pl.Int64) if wide.schema[c] == pl.UInt32 else pl.col(c) for c in columns)
        wide.write_parquet(f"{out}/{split_name}/part-{shard:05d}.parquet", row_group_size=256 * 1024)
        if vocabularies is not None and split_name == "train":
            partials.append(polars_column_partials(wide, continuous))
        start += length
    return shards, (combine_partials(partials) if vocabularies is not None else None)


def _setup(inter: str, items: str, out: str, stages: Stages) -> tuple:
    """validate, dedup, cutoff and examples: the steps both baselines share."""
    import polars as pl

    from recsys_ray.config import BuildConfig, ValidationConfig

    b, vcfg = BuildConfig(), ValidationConfig().with_window_fixed()
    events, counts = polars_validated_events(inter, vcfg, out)
    catalog = polars_catalog(items, vcfg, out)
    stages.mark("validate_and_dedup")
    cutoff = quantile_cutoff(events, b.test_fraction)
    events = events.with_columns(split=pl.when(pl.col("ts") < cutoff).then(pl.lit("train")).otherwise(pl.lit("test")))
    stages.mark("cutoff")
    rows, shortfall = polars_labelled_rows(events, catalog, b)
    counts["negative_shortfall"] = shortfall
    counts["positives"] = dict(rows.filter(pl.col("label") == 1).group_by("split").len().iter_rows())
    stages.mark("examples")
    return b, events, catalog, cutoff, rows, counts


# ---- the Polars baselines: features ----------------------------------------------------------------

def polars_job_extras(job: str, events, catalog, b, out: str, counts: dict, stages) -> dict | None:
    """For the whole job: the vocabularies (`polars_vocabularies`) and the evaluation set
    (`polars_eval_set`), timed as the stage "vocabularies_and_eval"; returns the vocabularies
    for the shards' index columns (None for the core job)."""
    if job == "core":
        return None
    if job != "whole":
        raise ValueError(f"unknown Polars job {job!r}")
    vocabularies = polars_vocabularies(events, catalog, b, out)
    counts["eval_users"] = polars_eval_set(events, catalog, b, out)
    stages.mark("vocabularies_and_eval")
    return vocabularies


def write_train_stats(stats: dict | None, out: str) -> None:
    """The train split's column statistics, where the build keeps them in its manifest."""
    if stats is not None:
        with open(f"{out}/train_stats.json", "w") as f:
            json.dump(stats, f)




def polars_cutoff_build(inter: str, items: str, out: str, started: float | None = None,
                        job: str = "whole") -> dict:
    """Cutoff mode in one process with Polars: the build's job with `--feature-time cutoff
    --windows '' --history 0` on the same files.

    Does: validation with quarantine and de-duplication (`polars_validated_events`), the
    catalog (`polars_catalog`), the global cutoff at the build's quantile, positives and K
    negatives per positive (`polars_labelled_rows`), user features (total, unique items,
    counts per type, mean rating, purchase rate, days active, last time, recency from the
    cutoff) and item features (total, unique users, counts per type, mean rating, CTR,
    purchase rate, popularity = unique users / training users) over the training window,
    written to features/; then the shards (`polars_write_shards`), each joined with the
    user, item and catalog columns as it is written. With `job` "whole" (the default) also
    what the build adds to that (`polars_job_extras`): the vocabularies, the index columns,
    the evaluation set and the train split's column statistics; "core" leaves them out.
    Does not: the report, the manifest; negatives and evaluation candidates come from a
    simpler draw.
    """
    import polars as pl

    from recsys_ray import schemas

    stages = Stages(started)  # the wall time includes the imports, as the Ray run's does
    b, events, catalog, cutoff, rows, counts = _setup(inter, items, out, stages)
    train = events.filter(pl.col("split") == "train")
    train_users = train["user_id"].n_unique()
    per_type = lambda prefix: [(pl.col("interaction_type") == t).sum().alias(f"{prefix}_n_{t}")  # noqa: E731
                               for t in schemas.INTERACTION_TYPES]
    users = train.group_by("user_id").agg(
        pl.len().alias("user_total_interactions"), pl.col("item_id").n_unique().alias("user_unique_items"),
        *per_type("user"), pl.col("rating").mean().alias("user_avg_rating"),
        (pl.col("ts") // DAY_US).n_unique().alias("user_days_active"), pl.col("ts").max().alias("_last"),
    ).with_columns(
        user_purchase_rate=pl.col("user_n_purchase") / pl.col("user_total_interactions"),
        user_last_ts=pl.from_epoch("_last", time_unit="us").dt.replace_time_zone("UTC"),
        user_recency_days=(cutoff - pl.col("_last")) / DAY_US,
    ).drop("_last")
    item_stats = train.group_by("item_id").agg(
        pl.len().alias("item_total_interactions"), pl.col("user_id").n_unique().alias("item_unique_users"),
        *per_type("item"), pl.col("rating").mean().alias("item_avg_rating"),
    ).with_columns(
        item_ctr=pl.when(pl.col("item_n_view") > 0).then(pl.col("item_n_click") / pl.col("item_n_view")),
        item_purchase_rate=pl.col("item_n_purchase") / pl.col("item_total_interactions"),
        item_popularity=pl.col("item_unique_users") / train_users,
    )
    os.makedirs(f"{out}/features/users", exist_ok=True)
    users.write_parquet(f"{out}/features/users/part-0.parquet")
    item_stats.write_parquet(f"{out}/features/items.parquet")
    stages.mark("features")
    vocabularies = polars_job_extras(job, events, catalog, b, out, counts, stages)

    def finish(shard):
        return (shard.join(users, on="user_id", how="left", maintain_order="left")
                .join(item_stats, on="item_id", how="left", maintain_order="left")
                .join(catalog, on="item_id", how="left", maintain_order="left"))

    counts["shards"], stats = polars_write_shards(rows, out, b, counts["positives"], finish,
                                                  vocabularies=vocabularies)
    write_train_stats(stats, out)
    stages.mark("shards")
    return {"wall_s": stages.total(), "stages_s": stages.seconds, "rows": rows.height, "counts": counts}


def polars_event_build(inter: str, items: str, out: str, started: float | None = None, windows=(7, 30),
                       history: int = 20, job: str = "whole") -> dict:
    """Event mode in one process with Polars: the build's default job (`--feature-time event`,
    windows 7d,30d, history 20) on the same files, features by `join_asof`.

    Does: the shared steps of `polars_cutoff_build` (validation, catalog, cutoff, positives
    and negatives, shards), and per row (u, i, t) the features of docs/features.md from the
    events strictly before t (any split): events sorted by (key, time) carry running totals
    (count, first (user, item) / (user, day) / (item, user) pairs, counts per type, rating
    sum and count), and each distinct (key, t) of the rows takes the last event before t by
    a backward `join_asof` with `allow_exact_matches=False`; a window N is the total at t
    minus the total at t - N days (another such join); users_before(t) for item popularity
    by binary search over the users' first times. Each shard (`polars_write_shards`) joins
    its rows' user and item columns and the catalog attributes, and gathers the last H
    events before t (ordered by time, item_id, type) by position into the history lists.
    With `job` "whole" (the default) also the vocabularies, the index columns (the history's
    too), the evaluation set and the train split's column statistics (`polars_job_extras`).
    Does not: features/ tables as of the cutoff, the report, the manifest; ratings are summed
    in float64 (the build sums exactly); negatives and evaluation candidates come from a
    simpler draw.
    """
    import polars as pl
    import pyarrow as pa

    from recsys_ray import schemas

    stages = Stages(started)  # the wall time includes the imports, as the Ray run's does
    b, events, catalog, cutoff, rows, counts = _setup(inter, items, out, stages)
    types = schemas.INTERACTION_TYPES

    def running(key: str, other: str, prefix: str, extra: dict) -> pl.DataFrame:
        ordered = events.sort([key, "ts", other, "interaction_type"])
        first_pair = pl.struct(key, other).is_first_distinct().cast(pl.Int64)
        return ordered.with_row_index("_pos").with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(key).alias(f"{prefix}_total_interactions"),
            first_pair.cum_sum().over(key).alias(f"{prefix}_unique_{other.removesuffix('_id')}s"),
            *[(pl.col("interaction_type") == t).cast(pl.Int64).cum_sum().over(key).alias(f"{prefix}_n_{t}")
              for t in types],
            pl.col("rating").fill_null(0.0).cum_sum().over(key).alias("_rating_sum"),
            pl.col("rating").is_not_null().cast(pl.Int64).cum_sum().over(key).alias("_rating_n"),
            **{name: expr.cum_sum().over(key) for name, expr in extra.items()},
        ).rename({"ts": "_last"})

    def as_of(queries: pl.DataFrame, table: pl.DataFrame, key: str, prefix: str) -> pl.DataFrame:
        """Each (key, ts) of `queries` with the running totals of its key's last event before ts."""
        total = f"{prefix}_total_interactions"
        got = queries.join_asof(table.drop("user_id" if key == "item_id" else "item_id", "interaction_type", "rating",
                                           "split"), left_on="ts", right_on="_last", by=key, strategy="backward",
                                allow_exact_matches=False, check_sortedness=False)
        for days in windows:
            earlier = queries.with_columns(_at=pl.col("ts") - days * DAY_US).join_asof(
                table.select(key, "_last", pl.col(total).alias("_before")), left_on="_at", right_on="_last", by=key,
                strategy="backward", allow_exact_matches=False, check_sortedness=False)
            got = got.with_columns((pl.col(total).fill_null(0) - earlier["_before"].fill_null(0))
                                   .alias(f"{prefix}_events_{days}d"))
        return got

    user_table = running("user_id", "item_id", "user",
                         {"user_days_active": pl.struct("user_id", pl.col("ts") // DAY_US).is_first_distinct()
                          .cast(pl.Int64)})
    user_q = rows.select("user_id", "ts").unique().sort(["user_id", "ts"])
    user_side = as_of(user_q, user_table, "user_id", "user")
    user_counts = ["user_total_interactions", "user_unique_items", *[f"user_n_{t}" for t in types],
                   "user_days_active"]
    user_side = user_side.with_columns(*[pl.col(c).fill_null(0) for c in user_counts]).with_columns(
        user_avg_rating=pl.when(pl.col("_rating_n") > 0).then(pl.col("_rating_sum") / pl.col("_rating_n")),
        user_purchase_rate=pl.when(pl.col("user_total_interactions") > 0).then(
            pl.col("user_n_purchase") / pl.col("user_total_interactions")),
        user_last_ts=pl.from_epoch("_last", time_unit="us").dt.replace_time_zone("UTC"),
        user_recency_days=(pl.col("ts") - pl.col("_last")) / DAY_US,
    )
    # The last H events before t: the H positions of `user_table` (sorted by user, time,
    # item_id, type) before one past the user's last event before t.
    user_side = user_side.with_columns(
        _end=pl.col("_pos").cast(pl.Int64).fill_null(-1) + 1,
        _length=pl.min_horizontal("user_total_interactions", pl.lit(history, dtype=pl.Int64)),
    ).drop("_pos", "_last", "_rating_sum", "_rating_n")
    history_values = {column: user_table[column].to_arrow().cast(pa.large_string())
                      for column in ("item_id", "interaction_type")}

    item_table = running("item_id", "user_id", "item", {})
    item_q = rows.select("item_id", "ts").unique().sort(["item_id", "ts"])
    first_seen = np.sort(events.group_by("user_id").agg(pl.col("ts").min())["ts"].to_numpy())
    item_side = as_of(item_q, item_table, "item_id", "item").with_columns(
        _users_before=pl.Series(np.searchsorted(first_seen, item_q["ts"].to_numpy(), side="left")))
    item_counts = ["item_total_interactions", "item_unique_users", *[f"item_n_{t}" for t in types]]
    item_side = item_side.with_columns(*[pl.col(c).fill_null(0) for c in item_counts]).with_columns(
        item_avg_rating=pl.when(pl.col("_rating_n") > 0).then(pl.col("_rating_sum") / pl.col("_rating_n")),
        item_ctr=pl.when(pl.col("item_n_view") > 0).then(pl.col("item_n_click") / pl.col("item_n_view")),
        item_purchase_rate=pl.when(pl.col("item_total_interactions") > 0).then(
            pl.col("item_n_purchase") / pl.col("item_total_interactions")),
        item_popularity=pl.when(pl.col("_users_before") > 0).then(
            pl.col("item_unique_users") / pl.col("_users_before")),
    ).drop("_pos", "_last", "_rating_sum", "_rating_n", "_users_before")
    stages.mark("features")
    vocabularies = polars_job_extras(job, events, catalog, b, out, counts, stages)
    history_lists = {"history_item_ids": "item_id", "history_interaction_types": "interaction_type"}
    if vocabularies is not None and history:
        # Each event's item index once, gathered into the lists like the item ids.
        history_values["item_idx"] = user_table.select("item_id").join(
            vocabularies["item_id"].select(pl.col("value").alias("item_id"), "index"), on="item_id", how="left",
            maintain_order="left")["index"].fill_null(1).to_arrow()
        history_lists["history_item_idx"] = "item_idx"

    def finish(shard):
        wide = (shard.join(user_side, on=["user_id", "ts"], how="left", maintain_order="left")
                .join(item_side, on=["item_id", "ts"], how="left", maintain_order="left")
                .join(catalog, on="item_id", how="left", maintain_order="left"))
        if history:
            end, length = wide["_end"].to_numpy(), wide["_length"].to_numpy()
            offsets = np.zeros(len(length) + 1, dtype=np.int64)
            np.cumsum(length, out=offsets[1:])
            flat = pa.array(np.repeat(end - length - offsets[:-1], length) + np.arange(offsets[-1]))
            wide = wide.with_columns(
                pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets), history_values[column].take(flat)))
                .alias(name)
                for name, column in history_lists.items())
        return wide.drop("_end", "_length")

    counts["shards"], stats = polars_write_shards(rows, out, b, counts["positives"], finish, windows, history,
                                                  vocabularies=vocabularies)
    write_train_stats(stats, out)
    stages.mark("shards")
    return {"wall_s": stages.total(), "stages_s": stages.seconds, "rows": rows.height, "counts": counts}


# ---- measuring a run in a child process ------------------------------------------------------------

def memory_in_use() -> int:
    """The machine's memory in use: total - available (shared memory such as the object store included)."""
    vm = psutil.virtual_memory()
    return vm.total - vm.available


def settled_memory_in_use(timeout_s: float = 30.0, tolerance: int = 64 * 2**20) -> int:
    """Memory in use once it stops moving (within `tolerance` over a second, at most `timeout_s`),
    so that a run's baseline does not include the previous run's processes still exiting."""
    deadline = time.monotonic() + timeout_s
    last = memory_in_use()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = memory_in_use()
        if abs(now - last) < tolerance:
            return now
        last = now
    return last


def directory_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:  # a spill file removed while walking
                pass
    return total


def machine_check_s() -> float:
    """Seconds for a fixed single-threaded workload (sort 4M floats, look up 1M strings in
    500K), best of three: how fast the machine is just then, so that runs minutes apart can be
    compared (on the 2-CPU machine of docs/benchmarks.md the same build's time varied by up
    to 1.8x within one run). Measured between runs, never during one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(20261203)
    values = rng.random(4_000_000)
    strings = pa.array([f"u{i}" for i in rng.integers(0, 10**9, 1_000_000)])
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        np.sort(values)
        pc.index_in(strings, value_set=strings.slice(0, 500_000))
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def child(kind: str, mode: str, inter: str, items: str, out: str, spill_dir: str | None) -> dict:
    """Run one build in a fresh process, sampling the machine's memory in use (and the spill
    directory's size) every 0.2 s; peaks are reported above the value before the start."""
    env = {**os.environ, "RECSYS_PROGRESS": "0"}
    if spill_dir:
        os.makedirs(spill_dir, exist_ok=True)
        env["RAY_object_spilling_directory"] = spill_dir
    check_before = machine_check_s()
    before = settled_memory_in_use()
    disk_before = shutil.disk_usage(os.path.dirname(out)).used
    peak = {"memory": before, "spill": 0, "disk": disk_before, "output": 0}
    stop = threading.Event()

    def sample() -> None:
        samples = 0
        while not stop.is_set():
            peak["memory"] = max(peak["memory"], memory_in_use())
            peak["disk"] = max(peak["disk"], shutil.disk_usage(os.path.dirname(out)).used)
            if spill_dir:
                peak["spill"] = max(peak["spill"], directory_bytes(spill_dir))
            if samples % OUTPUT_SAMPLE_EVERY == 0:  # walking thousands of exchange files costs CPU
                peak["output"] = max(peak["output"], directory_bytes(out))
            samples += 1
            stop.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    launched = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", kind, mode, inter, items, out],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = process.communicate()
    process_s = time.perf_counter() - launched
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{kind} {mode} run failed (exit {process.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(process_s=round(process_s, 2), memory_before_mb=round(before / 2**20), peak_memory_mb=round((peak["memory"] - before) / 2**20))
    result.update(disk_peak_bytes=peak["disk"] - disk_before, output_dir_peak_bytes=peak["output"])
    result.update(machine_check_s=[check_before, machine_check_s()])
    if spill_dir:
        result["spill_dir_peak_bytes"] = peak["spill"]
    return result


# ---- reporting ---------------------------------------------------------------------------------------

def _bytes(n) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024


def describe(kind: str, r: dict) -> str:
    line = f"{kind:11s}: wall {r['wall_s']:8.2f} s (process {r['process_s']:.2f} s)"
    if kind == "ray":
        line += f" (incl. Ray start {r['ray_init_s']} s)"
    line += f"  memory in use +{r['peak_memory_mb']:,} MB (before {r['memory_before_mb']:,} MB)  rows {r['rows']:,}"
    if kind == "ray":
        line += (f"  spill dir peak {_bytes(r.get('spill_dir_peak_bytes'))}, object store spilled "
                 f"{_bytes(r.get('store_spilled_bytes'))} / restored {_bytes(r.get('store_restored_bytes'))}")
    line += (f"  disk in use peak +{_bytes(r.get('disk_peak_bytes'))} (output dir peak "
             f"{_bytes(r.get('output_dir_peak_bytes'))})")
    if r.get("machine_check_s"):
        line += f"  machine check {r['machine_check_s'][0]} s before / {r['machine_check_s'][1]} s after"
    return line + f"\n        stages: {r['stages_s']}"


def summarize(n: int, mode: str, runs: dict[str, list[dict]]) -> dict:
    best = {kind: min(r["wall_s"] for r in rs) for kind, rs in runs.items()}
    memory = {kind: max(r["peak_memory_mb"] for r in rs) for kind, rs in runs.items()}
    spill = max((r.get("spill_dir_peak_bytes") or 0) for r in runs["ray"])
    store = [r.get("store_spilled_bytes") for r in runs["ray"]]
    baseline = "polars" in runs
    summary = {"size": n, "mode": mode, "repeats": len(runs["ray"]), "ray_best_s": best["ray"],
               "ray_interactions_per_s": round(n / best["ray"]),
               "polars_best_s": best.get("polars"),
               "ratio": round(best["ray"] / best["polars"], 2) if baseline else None,
               "polars_core_best_s": best.get("polars-core"),
               "ratio_to_core": round(best["ray"] / best["polars-core"], 2) if "polars-core" in best else None,
               "ray_peak_memory_mb": memory["ray"], "polars_peak_memory_mb": memory.get("polars"),
               "ray_spill_dir_peak_bytes": spill,
               "ray_store_spilled_bytes": None if None in store else max(store)}
    line = f"-- best of {summary['repeats']}: ray {best['ray']:.2f} s ({summary['ray_interactions_per_s']:,} interactions/s)"
    if baseline:
        line += f", polars {best['polars']:.2f} s, ratio ray/polars {summary['ratio']:.2f}x"
    if "polars-core" in best:
        line += f", polars core job {best['polars-core']:.2f} s (ray/core {summary['ratio_to_core']:.2f}x)"
    line += f"; highest memory in use: ray +{memory['ray']:,} MB"
    if baseline:
        line += f", polars +{memory['polars']:,} MB"
    print(line + f"; highest spill: dir {_bytes(spill)}, object store {_bytes(summary['ray_store_spilled_bytes'])}",
          flush=True)
    return summary


def write_inputs(cfg, data: str, file_rows: int | None) -> tuple[str, str]:
    """Write `cfg`'s catalog and interactions under `data`; returns the paths the builds read
    (the interactions: one file, or with `file_rows` a directory of files of that many rows)."""
    from recsys_ray import synthetic
    from recsys_ray.jobs.generate import write_chunks, write_synthetic

    if not file_rows:
        write_synthetic(cfg, data)
        return f"{data}/interactions.parquet", f"{data}/items.parquet"
    write_chunks(f"{data}/items.parquet", synthetic.item_chunks(cfg), "parquet")
    pending: list = []
    pending_rows, index = 0, 0

    def flush(rows: int) -> None:
        nonlocal pending, pending_rows, index
        import pyarrow as pa

        table = pa.concat_tables(pending)
        groups = (table.slice(lo, min(cfg.chunk_rows, rows - lo)) for lo in range(0, rows, cfg.chunk_rows))
        write_chunks(f"{data}/interactions/part-{index:05d}.parquet", groups, "parquet")
        rest = table.slice(rows)
        pending, pending_rows, index = ([rest] if rest.num_rows else []), rest.num_rows, index + 1

    for table, _ in synthetic.interaction_chunks(cfg):
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= file_rows:
            flush(file_rows)
    if pending_rows:
        flush(pending_rows)
    return f"{data}/interactions", f"{data}/items.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000], help="interactions per input")
    parser.add_argument("--mode", choices=["event", "cutoff", "both"], default="both",
                        help="feature time of the builds (both: event, then cutoff)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating (default 2)")
    parser.add_argument("--dirty-fraction", type=float, default=0.0,
                        help="share of invalid input rows, with half as many duplicates (default 0)")
    parser.add_argument("--file-rows", type=int, default=None,
                        help="interactions per input file (default: one file)")
    parser.add_argument("--users-per", type=int, default=10, help="interactions per user (default 10)")
    parser.add_argument("--items-per", type=int, default=50, help="interactions per item (default 50)")
    parser.add_argument("--baseline-max", type=int, default=None,
                        help="largest size with a Polars baseline (default: every size)")
    parser.add_argument("--workdir", default=None, help="directory for inputs, outputs and spill (default: TMPDIR)")
    parser.add_argument("--polars-core", action="store_true",
                        help="also run the Polars job without what the build adds to its core (vocabularies, "
                             "index columns, evaluation set, column statistics), alternating with the others")
    parser.add_argument("--json", metavar="FILE", help="also write every run and summary as JSON")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, mode, inter, items, out = args.child
        if kind == "ray":
            result = run_ray_build(mode, inter, items, out, CHILD_STARTED)
        else:
            job = "core" if kind == "polars-core" else "whole"
            build = polars_event_build if mode == "event" else polars_cutoff_build
            result = build(inter, items, out, CHILD_STARTED, job=job)
        print(json.dumps(result))
        return

    from importlib.metadata import version

    from recsys_ray import synthetic
    from recsys_ray.jobs.generate import write_synthetic

    modes = ["event", "cutoff"] if args.mode == "both" else [args.mode]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"python {platform.python_version()}, ray {version('ray')}, polars {version('polars')}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    report: dict = {"runs": [], "summaries": []}
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for n in args.sizes:
            data = os.path.join(work, f"in-{n}")
            cfg = synthetic.SyntheticConfig(interactions=n, users=max(1000, n // args.users_per),
                                            items=max(500, n // args.items_per),
                                            dirty_fraction=args.dirty_fraction)
            generated = time.perf_counter()
            inter, items = write_inputs(cfg, data, args.file_rows)
            print(f"\n{n:,} interactions ({cfg.users:,} users, {cfg.items:,} items) generated in "
                  f"{time.perf_counter() - generated:.0f} s: {inter}", flush=True)
            kinds: tuple[str, ...] = ("ray",)
            if args.baseline_max is None or n <= args.baseline_max:
                kinds = ("ray", "polars", "polars-core") if args.polars_core else ("ray", "polars")
            for mode in modes:
                print(f"\n== {n:,} interactions, {mode} mode ({MODES[mode]}) ==", flush=True)
                runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
                for repeat in range(1, args.repeats + 1):
                    for kind in kinds:
                        out = os.path.join(work, f"{kind}-{mode}-{n}-{repeat}")
                        spill = os.path.join(work, f"spill-{mode}-{n}-{repeat}") if kind == "ray" else None
                        result = child(kind, mode, inter, items, out, spill)
                        for path in (out, spill):
                            if path:
                                shutil.rmtree(path, ignore_errors=True)
                        runs[kind].append(result)
                        report["runs"].append({"size": n, "mode": mode, "kind": kind, "repeat": repeat, **result})
                        print(f"run {repeat} {describe(kind, result)}", flush=True)
                report["summaries"].append(summarize(n, mode, runs))
            shutil.rmtree(data, ignore_errors=True)
    print("\n| size | mode | Ray best | interactions/s | Polars best | ray/polars | Ray memory | Polars memory "
          "| Ray spill |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in report["summaries"]:
        polars = "-" if s["polars_best_s"] is None else f"{s['polars_best_s']:.1f} s"
        ratio = "-" if s["ratio"] is None else f"{s['ratio']:.2f}x"
        polars_memory = "-" if s["polars_peak_memory_mb"] is None else f"+{s['polars_peak_memory_mb']:,} MB"
        print(f"| {s['size']:,} | {s['mode']} | {s['ray_best_s']:.1f} s | {s['ray_interactions_per_s']:,} | "
              f"{polars} | {ratio} | +{s['ray_peak_memory_mb']:,} MB | {polars_memory} | "
              f"{_bytes(s['ray_spill_dir_peak_bytes'])} |")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
