"""Model inputs from training rows: vocabulary indices, history lists and normalised features.

Pure functions over Arrow tables (no Ray, no torch), applied with
`Dataset.map_batches` so the conversion runs on Ray Data workers, streaming
ahead of the trainers. Everything a conversion needs comes from the version's
`TrainingSchema` (`recsys_ray.train.schema`), so there is no extra pass over
the data:

- **Indices** are the build's vocabulary indices (`user_idx`, `item_idx`,
  `item_category_idx`, `item_brand_idx`; 0 padding/null, 1 out of vocabulary)
  as int64, a null index as 0. Embedding tables are sized from the schema's
  cardinalities.
- **History**: `history_item_idx` (oldest first) as an (rows, H) int64 matrix, H
  the build's `--history`, right-padded with 0; a null list is all padding.
- **Continuous features**: every column tagged `continuous`, split by prefix
  into the user side (`user_*`) and the item side (`item_*`, catalog price
  included). Each is standardised with the train split's statistics,
  z = (x − mean) / std (std 0 or missing: x − mean), in float64 and then cast
  to float32. A null value (and a NaN or infinity) becomes 0, the train mean;
  each column that has nulls in the train split (`null_count > 0`) adds an
  indicator column, 1.0 where the value is null, after the standardised columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray.train.schema import TrainingSchema

ID_COLUMNS: tuple[str, ...] = ("user_idx", "item_idx", "item_category_idx", "item_brand_idx")
HISTORY_COLUMN = "history_item_idx"


@dataclass(frozen=True)
class Standardiser:
    """(x − mean) / std for a fixed list of columns, with null indicators for those that have nulls."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    indicators: tuple[str, ...]  # the columns with a null indicator, in `columns` order

    @classmethod
    def from_schema(cls, schema: TrainingSchema, prefix: str) -> "Standardiser":
        columns = schema.continuous(prefix)
        mean, std = [], []
        for column in columns:
            stats = column.stats
            mean.append(stats.mean if stats is not None and stats.mean is not None else 0.0)
            std.append(stats.std if stats is not None and stats.std else 1.0)
        indicators = tuple(c.name for c in columns if c.stats is not None and c.stats.null_count > 0)
        return cls(tuple(c.name for c in columns), tuple(mean), tuple(std), indicators)

    @property
    def width(self) -> int:
        return len(self.columns) + len(self.indicators)

    def __call__(self, table: pa.Table) -> np.ndarray:
        """(rows, width) float32: the standardised columns, then the null indicators."""
        out = np.zeros((table.num_rows, self.width), dtype=np.float32)
        slot = {name: len(self.columns) + j for j, name in enumerate(self.indicators)}
        for j, name in enumerate(self.columns):
            values = pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
            values = np.asarray(values, dtype=np.float64)  # nulls arrive as NaN
            missing = ~np.isfinite(values)
            z = (values - self.mean[j]) / self.std[j]
            out[:, j] = np.where(missing, 0.0, z)
            if name in slot:
                out[:, slot[name]] = missing
        return out


@dataclass(frozen=True)
class FeatureSpec:
    """What `model_inputs` produces for one version: its index columns, history length and standardisers."""

    cardinalities: dict[str, int]
    history_length: int
    user: Standardiser
    item: Standardiser

    @classmethod
    def from_schema(cls, schema: TrainingSchema) -> "FeatureSpec":
        return cls(
            cardinalities={name: schema.cardinality(name) for name in ID_COLUMNS},
            history_length=schema.history_length if HISTORY_COLUMN in schema else 0,
            user=Standardiser.from_schema(schema, "user_"),
            item=Standardiser.from_schema(schema, "item_"),
        )


def indices(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """int64 vocabulary indices, null as 0 (padding)."""
    return np.asarray(pc.fill_null(column, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def padded_lists(column: pa.Array | pa.ChunkedArray, length: int) -> np.ndarray:
    """(rows, length) int64 matrix of an index-list column: each list's first `length` values,
    right-padded with 0; a null list, or a null element, is padding."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    rows = len(column)
    out = np.zeros((rows, length), dtype=np.int64)
    if rows == 0 or length == 0:
        return out
    lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False), np.int64)
    offsets = np.asarray(column.offsets.to_numpy(zero_copy_only=False), np.int64)
    values = np.asarray(pc.fill_null(column.values, 0).to_numpy(zero_copy_only=False), np.int64)
    row = np.repeat(np.arange(rows), lengths)
    position = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    start = np.repeat(offsets[:-1], lengths)
    keep = position < length
    out[row[keep], position[keep]] = values[(start + position)[keep]]
    return out


def user_inputs(table: pa.Table, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The user tower's inputs: `user_idx`, `history` (rows, H) and `user_features`."""
    out = {"user_idx": indices(table.column("user_idx")), "user_features": spec.user(table)}
    history = (padded_lists(table.column(HISTORY_COLUMN), spec.history_length) if spec.history_length
               else np.zeros((table.num_rows, 0), dtype=np.int64))
    out["history"] = history
    return out


def item_inputs(table: pa.Table, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The item tower's inputs: `item_idx`, `item_category_idx`, `item_brand_idx` and `item_features`."""
    return {
        **{name: indices(table.column(name)) for name in ("item_idx", "item_category_idx", "item_brand_idx")},
        "item_features": spec.item(table),
    }


def model_inputs(batch: pa.Table, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The tensors the example two-tower model trains on, one row per training row."""
    return {
        **user_inputs(batch, spec),
        **item_inputs(batch, spec),
        "label": np.asarray(pc.fill_null(batch.column("label"), 0.0).to_numpy(zero_copy_only=False),
                            dtype=np.float32),
    }
