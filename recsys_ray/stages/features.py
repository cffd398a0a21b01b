"""User and item features from the training window only.

Callers pass only training-split events, so nothing at or after the cutoff can
reach a feature. User features need all of a user's events in one batch (the
build partitions by user). Item features are sums of per-batch partials, which
are exact because batches hold disjoint sets of users.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import schemas
from recsys_ray.stages.split import timestamp_micros, train_events

MICROS_PER_DAY = 86_400_000_000
TYPE_COUNTS = [f"n_{t}" for t in schemas.INTERACTION_TYPES]


def _with_type_counts(events: pa.Table) -> pa.Table:
    itype = events.column("interaction_type")
    for t in schemas.INTERACTION_TYPES:
        events = events.append_column(f"n_{t}", pc.cast(pc.equal(itype, t), pa.int64()))
    return events


def user_features(train_events: pa.Table, cutoff_us: int) -> pa.Table:
    """One row per user of the training window, columns as `schemas.USER_FEATURES`."""
    if train_events.num_rows == 0:
        return schemas.USER_FEATURES.empty_table()
    ts = timestamp_micros(train_events)
    table = _with_type_counts(train_events.select(["user_id", "item_id", "interaction_type", "rating"]))
    table = table.append_column("ts", pa.array(ts)).append_column("day", pa.array(ts // MICROS_PER_DAY))
    stats = table.group_by("user_id", use_threads=False).aggregate(
        [("item_id", "count"), ("item_id", "count_distinct"), ("rating", "mean"),
         ("day", "count_distinct"), ("ts", "max")]
        + [(c, "sum") for c in TYPE_COUNTS]
    )
    total = stats.column("item_id_count")
    last = stats.column("ts_max").to_numpy()
    columns = {
        "user_id": stats.column("user_id"),
        "user_total_interactions": total,
        "user_unique_items": stats.column("item_id_count_distinct"),
        **{f"user_{c}": stats.column(f"{c}_sum") for c in TYPE_COUNTS},
        "user_avg_rating": stats.column("rating_mean"),
        "user_purchase_rate": pc.divide(pc.cast(stats.column("n_purchase_sum"), pa.float64()),
                                        pc.cast(total, pa.float64())),
        "user_days_active": stats.column("day_count_distinct"),
        "user_last_ts": pa.array(last, pa.int64()).cast(pa.timestamp("us")).cast(schemas.TIMESTAMP),
        "user_recency_days": pa.array((cutoff_us - last) / MICROS_PER_DAY, pa.float64()),
    }
    return pa.table(columns).cast(schemas.USER_FEATURES)


ITEM_PARTIALS = pa.schema(
    [
        pa.field("item_id", pa.string()),
        pa.field("total", pa.int64()),
        pa.field("unique_users", pa.int64()),
        *[pa.field(c, pa.int64()) for c in TYPE_COUNTS],
        pa.field("rating_sum", pa.float64()),
        pa.field("rating_count", pa.int64()),
    ]
)


def item_partials(train_events: pa.Table) -> pa.Table:
    """Per-item sums over this batch's training events (see `ITEM_PARTIALS`).

    Summing these across batches that hold disjoint users gives exact totals,
    distinct-user counts included.
    """
    if train_events.num_rows == 0:
        return ITEM_PARTIALS.empty_table()
    table = _with_type_counts(train_events.select(["user_id", "item_id", "interaction_type", "rating"]))
    stats = table.group_by("item_id", use_threads=False).aggregate(
        [("user_id", "count"), ("user_id", "count_distinct"), ("rating", "sum"), ("rating", "count")]
        + [(c, "sum") for c in TYPE_COUNTS]
    )
    return pa.table(
        {
            "item_id": stats.column("item_id"),
            "total": stats.column("user_id_count"),
            "unique_users": stats.column("user_id_count_distinct"),
            **{c: stats.column(f"{c}_sum") for c in TYPE_COUNTS},
            "rating_sum": pc.fill_null(stats.column("rating_sum"), 0.0),
            "rating_count": stats.column("rating_count"),
        }
    ).cast(ITEM_PARTIALS)


def sum_item_partials(partials: pa.Table) -> pa.Table:
    """Combine partials of the same item (from different batches) by summing every
    column but item_id (`ITEM_PARTIALS`, and any further counts the caller added)."""
    if partials.num_rows == 0:
        return partials.schema.empty_table() if partials.num_columns else ITEM_PARTIALS.empty_table()
    value_columns = [c for c in partials.column_names if c != "item_id"]
    summed = partials.group_by("item_id", use_threads=False).aggregate([(c, "sum") for c in value_columns])
    return summed.rename_columns(["item_id" if c == "item_id" else c.removesuffix("_sum")
                                  for c in summed.column_names]).select(partials.column_names)


def item_features(summed_partials: pa.Table, train_users: int) -> pa.Table:
    """Final item features from summed partials and the number of distinct training users,
    sorted by item_id."""
    return item_feature_columns(summed_partials, train_users).sort_by("item_id")


def item_feature_columns(summed_partials: pa.Table, train_users: int) -> pa.Table:
    """`item_features` with its rows in the order of `summed_partials` (no sort)."""
    p = summed_partials
    total = pc.cast(p.column("total"), pa.float64())
    n_view = pc.cast(p.column("n_view"), pa.float64())
    rating_count = p.column("rating_count")
    columns = {
        "item_id": p.column("item_id"),
        "item_total_interactions": p.column("total"),
        "item_unique_users": p.column("unique_users"),
        **{f"item_{c}": p.column(c) for c in TYPE_COUNTS},
        "item_avg_rating": pc.if_else(pc.greater(rating_count, 0),
                                      pc.divide(p.column("rating_sum"), pc.cast(rating_count, pa.float64())),
                                      pa.scalar(None, pa.float64())),
        "item_ctr": pc.if_else(pc.greater(n_view, 0), pc.divide(pc.cast(p.column("n_click"), pa.float64()), n_view),
                               pa.scalar(None, pa.float64())),
        "item_purchase_rate": pc.divide(pc.cast(p.column("n_purchase"), pa.float64()), total),
        "item_popularity": pc.divide(pc.cast(p.column("unique_users"), pa.float64()), float(max(train_users, 1))),
    }
    return pa.table(columns).cast(schemas.ITEM_FEATURES)


def feature_positions(keys: pa.Array | pa.ChunkedArray, features: pa.Table, key: str) -> pa.Array:
    """Row of `features` (one row per `key`) for each of `keys`; null for a cold key."""
    values = features.column(key)
    return pc.index_in(keys, value_set=values.combine_chunks() if values.num_chunks != 1 else values.chunk(0))


def item_partials_for_partition(events: pa.Table, cutoff_us: int, strategy: str,
                                positive_types: tuple[str, ...]) -> pa.Table:
    """Training-window partials of a batch holding whole users' events, plus zero rows for
    items seen only after the cutoff (so that every item of the snapshot is known to the sampler)."""
    partials = item_partials(train_events(events, cutoff_us, strategy, positive_types))
    all_items = pc.unique(events.column("item_id"))
    unseen = pc.filter(all_items, pc.invert(pc.is_in(all_items, value_set=partials.column("item_id"))))
    if len(unseen) == 0:
        return partials
    zeros = {name: pa.array(np.zeros(len(unseen)), ITEM_PARTIALS.field(name).type)
             for name in ITEM_PARTIALS.names if name != "item_id"}
    return pa.concat_tables([partials, pa.table({"item_id": unseen, **zeros}).cast(ITEM_PARTIALS)])


CATALOG_ATTRIBUTES = schemas.CATALOG_ATTRIBUTES


def catalog_attributes(catalog: pa.Table | None, item_ids: pa.Array | pa.ChunkedArray) -> pa.Table:
    """`CATALOG_ATTRIBUTES` of each of `item_ids` from a de-duplicated catalog (one row
    per item_id); all null for an item without a catalog row, or without a catalog."""
    if catalog is None or catalog.num_rows == 0:
        return pa.table([pa.nulls(len(item_ids), f.type) for f in CATALOG_ATTRIBUTES], schema=CATALOG_ATTRIBUTES)
    rows = feature_positions(item_ids, catalog, "item_id")
    attributes = catalog.select(["category", "brand", "price"]).take(rows)
    return pa.Table.from_arrays(attributes.columns, names=CATALOG_ATTRIBUTES.names).cast(CATALOG_ATTRIBUTES)
