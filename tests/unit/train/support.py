"""A small training schema with tags, cardinalities and statistics, as a build records them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import schemas
from recsys_ray.build.manifest import Column, ColumnStats
from recsys_ray.train.schema import TrainingSchema

WINDOWS = (7,)
HISTORY = 3
CARDINALITIES = {"user_idx": 6, "item_idx": 9, "item_category_idx": 4, "item_brand_idx": 5}


def stats_of(values: pa.ChunkedArray) -> ColumnStats:
    """Population statistics of a column, computed directly."""
    x = np.array([v for v in values.to_pylist() if v is not None], dtype=np.float64)
    if len(x) == 0:
        return ColumnStats(count=0, null_count=values.null_count, mean=None, std=None, min=None, max=None)
    return ColumnStats(count=len(x), null_count=values.null_count, mean=float(x.mean()), std=float(x.std()),
                       min=float(x.min()), max=float(x.max()))


def training_rows(n: int = 6, seed: int = 0) -> pa.Table:
    """`n` training rows of the small schema with some nulls in the float features."""
    rng = np.random.default_rng(seed)
    arrow = schemas.training_schema(WINDOWS, HISTORY)
    columns = {}
    for field in arrow:
        name, kind = field.name, field.type
        if name in CARDINALITIES:
            columns[name] = pa.array(rng.integers(0, CARDINALITIES[name], n), kind)
        elif name == "history_item_idx":
            columns[name] = pa.array([list(rng.integers(1, 9, rng.integers(0, 5))) for _ in range(n)], kind)
        elif pa.types.is_list(kind):
            columns[name] = pa.array([["x"]] * n, kind)
        elif pa.types.is_string(kind):
            columns[name] = pa.array([f"{name[0]}{i % 3}" for i in range(n)])
        elif pa.types.is_timestamp(kind):
            columns[name] = pa.array(np.arange(n) * 1_000_000, kind)
        elif pa.types.is_floating(kind):
            values = rng.normal(3.0, 2.0, n)
            columns[name] = pa.array([None if i % 3 == 1 else float(v) for i, v in enumerate(values)], kind) \
                if name != "label" else pa.array(rng.integers(0, 2, n), kind)
        else:
            columns[name] = pa.array(rng.integers(0, 50, n), kind)
    return pa.table(columns, schema=arrow)


def schema_of(rows: pa.Table) -> TrainingSchema:
    """The TrainingSchema a build of `rows` as its train split records."""
    columns = []
    for field in rows.schema:
        tags = schemas.column_tags(field)
        cardinality = CARDINALITIES.get(field.name, CARDINALITIES["item_idx"] if field.name.startswith("history_item")
                                        else None)
        columns.append(Column(name=field.name, type=str(field.type), tags=tags, cardinality=cardinality,
                              stats=stats_of(rows.column(field.name)) if "continuous" in tags else None))
    return TrainingSchema(columns=tuple(columns), history_length=HISTORY)


def null_mask(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), dtype=bool)
