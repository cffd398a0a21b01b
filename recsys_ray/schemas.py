"""Canonical Arrow schemas: the data contract shared by HTTP, Kafka and batch.

Every stage reads and writes these schemas; ingestion lands rows in exactly
`INTERACTIONS` / `ITEMS` form and rejected rows in `QUARANTINE` form.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

INTERACTION_TYPES: tuple[str, ...] = ("view", "click", "like", "add_to_cart", "purchase")
DATASETS: tuple[str, ...] = ("interactions", "items")

TIMESTAMP = pa.timestamp("us", tz="UTC")

INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("interaction_type", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("rating", pa.float64()),
        pa.field("event_id", pa.string(), nullable=False),
    ]
)
# Unique events as the build's steps share them: `event_id` has done its job in de-duplication.
EVENTS = pa.schema([f for f in INTERACTIONS if f.name != "event_id"])
INTERACTIONS_REQUIRED: tuple[str, ...] = ("user_id", "item_id", "interaction_type", "timestamp")

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("description", pa.string()),
    ]
)
ITEMS_REQUIRED: tuple[str, ...] = ("item_id", "title")

# Rejected rows keep their original values (as JSON) next to why they were rejected.
QUARANTINE = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("message", pa.string()),
        pa.field("original", pa.string()),
    ]
)

# Reasons an interaction row can be rejected for; the rest of REJECT_REASONS apply to items
# (price) or to values of an unsupported type (bad_payload).
INTERACTION_REASONS: tuple[str, ...] = (
    "missing_field",
    "id_too_long",
    "unknown_interaction_type",
    "bad_timestamp",
    "timestamp_out_of_range",
    "bad_rating",
    "rating_out_of_range",
)
REJECT_REASONS: tuple[str, ...] = (
    *INTERACTION_REASONS,
    "bad_price",
    "price_out_of_range",
    "bad_payload",
)

USER_FEATURES = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("user_total_interactions", pa.int64()),
        pa.field("user_unique_items", pa.int64()),
        *[pa.field(f"user_n_{t}", pa.int64()) for t in INTERACTION_TYPES],
        pa.field("user_avg_rating", pa.float64()),
        pa.field("user_purchase_rate", pa.float64()),
        pa.field("user_days_active", pa.int64()),
        pa.field("user_last_ts", TIMESTAMP),
        pa.field("user_recency_days", pa.float64()),
    ]
)

ITEM_FEATURES = pa.schema(
    [
        pa.field("item_id", pa.string()),
        pa.field("item_total_interactions", pa.int64()),
        pa.field("item_unique_users", pa.int64()),
        *[pa.field(f"item_n_{t}", pa.int64()) for t in INTERACTION_TYPES],
        pa.field("item_avg_rating", pa.float64()),
        pa.field("item_ctr", pa.float64()),
        pa.field("item_purchase_rate", pa.float64()),
        pa.field("item_popularity", pa.float64()),
    ]
)

# Catalog attributes every training row carries (null without a catalog row).
CATALOG_ATTRIBUTES = pa.schema([
    pa.field("item_category", pa.string()),
    pa.field("item_brand", pa.string()),
    pa.field("item_price", pa.float64()),
])
HISTORY_COLUMNS: tuple[str, ...] = ("history_item_ids", "history_interaction_types")
ROW_KEYS = pa.schema([
    pa.field("user_id", pa.string()),
    pa.field("item_id", pa.string()),
    pa.field("label", pa.float32()),
    pa.field("timestamp", TIMESTAMP),
    pa.field("split", pa.string()),
])


def window_columns(prefix: str, windows_days) -> list[str]:
    """`{prefix}_events_{N}d` for each window of N days."""
    return [f"{prefix}_events_{int(n)}d" for n in windows_days]


def user_row_features(windows_days=(7, 30), history: int = 20) -> pa.Schema:
    """The user columns of a training row: features, window counts, then history lists."""
    fields = [f for f in USER_FEATURES if f.name != "user_id"]
    fields += [pa.field(name, pa.int64()) for name in window_columns("user", windows_days)]
    if history:
        fields += [pa.field(name, pa.list_(pa.string())) for name in HISTORY_COLUMNS]
    return pa.schema(fields)


def item_row_features(windows_days=(7, 30)) -> pa.Schema:
    """The item columns of a training row: features, window counts, then catalog attributes."""
    fields = [f for f in ITEM_FEATURES if f.name != "item_id"]
    fields += [pa.field(name, pa.int64()) for name in window_columns("item", windows_days)]
    return pa.schema(fields + list(CATALOG_ATTRIBUTES))


def index_columns(history: int = 20) -> pa.Schema:
    """Vocabulary indices of a training row (see `recsys_ray.stages.vocab`): 0 null, 1 out of vocabulary."""
    fields = [pa.field(name, pa.int32()) for name in ("user_idx", "item_idx", "item_category_idx", "item_brand_idx")]
    if history:
        fields.append(pa.field("history_item_idx", pa.list_(pa.int32())))
    return pa.schema(fields)


# The vocabulary each index column looks its values up in, and the column it indexes.
INDEXED_COLUMNS: dict[str, tuple[str, str]] = {
    "user_idx": ("user_id", "user_id"),
    "item_idx": ("item_id", "item_id"),
    "item_category_idx": ("item_category", "item_category"),
    "item_brand_idx": ("item_brand", "item_brand"),
    "history_item_idx": ("item_id", "history_item_ids"),
}


def training_schema(windows_days=(7, 30), history: int = 20) -> pa.Schema:
    """Columns of a version's train/test shards for the build's window and history options."""
    return pa.schema([*ROW_KEYS, *user_row_features(windows_days, history), *item_row_features(windows_days),
                      *index_columns(history)])


TRAINING = training_schema()


def column_tags(field: pa.Field) -> list[str]:
    """What a training column is to a model: `user_id`, `item_id`, `categorical`, `continuous`,
    `list`, `target`, `timestamp` (the Merlin-style tags of the manifest's schema)."""
    name = field.name
    tags = []
    if pa.types.is_list(field.type):
        tags.append("list")
    if name in ("user_id", "user_idx"):
        tags.append("user_id")
    elif name in ("item_id", "item_idx", "history_item_ids", "history_item_idx"):
        tags.append("item_id")
    if name == "label":
        return ["target"]
    if pa.types.is_timestamp(field.type):
        return ["timestamp"]
    if name.endswith("_idx") or name in ("item_category", "item_brand", "history_interaction_types"):
        tags.append("categorical")
    elif name.startswith(("user_", "item_")) and (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
        tags.append("continuous")
    return tags


def text_fields(dataset: str | None) -> list[str]:
    """Contract fields that hold text, in schema order (for None: those of every dataset)."""
    names: list[str] = []
    for name in [dataset] if dataset else DATASETS:
        names += [f.name for f in schema_for(name) if pa.types.is_string(f.type) and f.name not in names]
    return names


def schema_for(dataset: str) -> pa.Schema:
    """The landed schema of `dataset` ("interactions" or "items")."""
    if dataset == "interactions":
        return INTERACTIONS
    if dataset == "items":
        return ITEMS
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")


def required_columns(dataset: str) -> tuple[str, ...]:
    return INTERACTIONS_REQUIRED if dataset == "interactions" else ITEMS_REQUIRED


def _any_case_pattern(words: tuple[str, ...]) -> str:
    """An ECMA-262 regex (JSON Schema's dialect, which has no case-insensitive flag) that
    matches any of `words` in any case, with optional surrounding whitespace."""
    def any_case(word: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)

    return r"^\s*(" + "|".join(any_case(w) for w in words) + r")\s*$"


def json_schema(dataset: str, *, max_id_length: int = 128) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one input record of `dataset`."""
    id_field = {"type": "string", "minLength": 1, "maxLength": max_id_length}
    if dataset == "interactions":
        properties: dict[str, Any] = {
            "user_id": id_field,
            "item_id": id_field,
            "interaction_type": {
                "type": "string",
                "description": f"One of {', '.join(INTERACTION_TYPES)}, in any case and with surrounding "
                               "whitespace, as the service accepts it; stored lower-case and trimmed",
                "pattern": _any_case_pattern(INTERACTION_TYPES),
            },
            "timestamp": {
                "description": "UTC event time: ISO-8601 string, or epoch seconds or milliseconds",
                "oneOf": [{"type": "string"}, {"type": "number"}],
            },
            "rating": {"type": ["number", "null"], "minimum": 1, "maximum": 5},
            "event_id": {"type": ["string", "null"], "maxLength": max_id_length},
        }
    elif dataset == "items":
        properties = {
            "item_id": id_field,
            "title": {"type": "string", "minLength": 1},
            "category": {"type": ["string", "null"]},
            "brand": {"type": ["string", "null"]},
            "price": {"type": ["number", "null"], "minimum": 0},
            "description": {"type": ["string", "null"]},
        }
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": dataset,
        "type": "object",
        "properties": properties,
        "required": list(required_columns(dataset)),
    }
