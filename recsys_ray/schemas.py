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

TRAINING = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("label", pa.float32()),
        pa.field("timestamp", TIMESTAMP),
        pa.field("split", pa.string()),
        *[f for f in USER_FEATURES if f.name != "user_id"],
        *[f for f in ITEM_FEATURES if f.name != "item_id"],
    ]
)


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
