"""Model inputs from training rows: hashed ids and numeric features.

Pure functions over Arrow tables (no Ray, no torch), applied with
`Dataset.map_batches` so the conversion runs on Ray Data workers, streaming
ahead of the trainers. Ids are hashed into a fixed number of buckets, so a model
needs no vocabulary and unseen users or items at serving time still map
somewhere; numeric features are squashed with a signed log so counts and
rates share one scale.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import schemas
from recsys_ray.hashing import hash_strings


def _numeric(prefix: str) -> tuple[str, ...]:
    return tuple(
        f.name for f in schemas.TRAINING
        if f.name.startswith(prefix) and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    )


USER_FEATURES: tuple[str, ...] = _numeric("user_")
ITEM_FEATURES: tuple[str, ...] = _numeric("item_")


def hash_buckets(ids: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Stable bucket in [0, buckets) of each id, the same on every machine."""
    return (hash_strings(ids) % np.uint64(buckets)).astype(np.int64)


def feature_matrix(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    """float32 matrix of `columns`: sign(x) * log1p(|x|), missing values as 0."""
    out = np.zeros((table.num_rows, len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        values = pc.fill_null(pc.cast(table.column(name), pa.float64()), 0.0).to_numpy()
        out[:, j] = np.nan_to_num(np.sign(values) * np.log1p(np.abs(values)), nan=0.0, posinf=0.0, neginf=0.0)
    return out


def model_inputs(batch: pa.Table, buckets: int) -> dict[str, np.ndarray]:
    """The tensors a two-tower model trains on, one row per training row."""
    return {
        "user": hash_buckets(batch.column("user_id"), buckets),
        "item": hash_buckets(batch.column("item_id"), buckets),
        "user_features": feature_matrix(batch, USER_FEATURES),
        "item_features": feature_matrix(batch, ITEM_FEATURES),
        "label": pc.fill_null(batch.column("label"), 0.0).to_numpy().astype(np.float32),
    }
