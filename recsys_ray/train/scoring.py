"""Scoring every item for the evaluation set with a trained two-tower model, as of the cutoff.

The evaluation ranks, for each user of `eval/`, every item-vocabulary index
(`recsys_ray.evaluation`). A two-tower model scores user u and item i as
<user vector(u), item vector(i)> + item bias(i); `EmbeddingScorer` holds both
sides precomputed, so scoring a batch of users is one matrix product and needs
neither torch nor the model (it pickles to Ray workers as a few arrays).

What each tower sees at evaluation time is what the version knew at the cutoff
(pure functions here, no Ray, no torch):

- **Users** (`user_rows`): the rows of `features/users` (each user's features
  and `history_item_ids` as of the cutoff: the last H events of their training
  window, oldest first), with `user_idx` and `history_item_idx` looked up in the
  version's vocabularies. A user without a row (no training-window event) gets
  `new_user_row`: index 1 (out of vocabulary), an empty history, counts 0 and
  every other feature null, which is what a training row of a user with nothing
  before its time holds.
- **Items** (`item_rows`): one row per item-vocabulary index. Continuous
  features from `features/items.parquet` (as of the cutoff); catalog attributes
  (`item_category_idx`, `item_brand_idx`, `item_price`) from the training rows
  (`catalog_attributes`: catalog attributes do not change over time, so any row
  of an item carries them). An item without a feature row gets counts 0 and
  null rates; one that appears in no training row gets null attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray.build.manifest import Manifest
from recsys_ray.io import storage
from recsys_ray.stages.vocab import OOV_INDEX, lookup_indices, lookup_list_indices
from recsys_ray.train.features import HISTORY_COLUMN
from recsys_ray.train.schema import TrainingSchema

ATTRIBUTES = pa.schema([
    pa.field("item_idx", pa.int32()),
    pa.field("item_category_idx", pa.int32()),
    pa.field("item_brand_idx", pa.int32()),
    pa.field("item_price", pa.float64()),
])


@dataclass(frozen=True)
class EmbeddingScorer:
    """`scorer(batch) -> (rows, item cardinality)` float32 scores over every item index.

    `batch` needs a `user_id` column (an evaluation-set batch). A user in
    `user_ids` gets their row of `user_vectors`; any other user gets
    `new_user_vector`.
    """

    user_ids: pa.Array          # string, the users with a vector
    user_vectors: np.ndarray    # (len(user_ids), dim) float32
    new_user_vector: np.ndarray  # (dim,) float32
    item_vectors: np.ndarray    # (item cardinality, dim) float32
    item_bias: np.ndarray       # (item cardinality,) float32

    def user_matrix(self, user_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        position = pc.index_in(user_ids, value_set=self.user_ids)
        known = np.asarray(pc.is_valid(position).to_numpy(zero_copy_only=False), dtype=bool)
        rows = np.asarray(pc.fill_null(position, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        vectors = self.user_vectors[rows] if len(self.user_vectors) else np.zeros((len(rows), self.dim), np.float32)
        return np.where(known[:, None], vectors, self.new_user_vector[None, :]).astype(np.float32, copy=False)

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def __call__(self, batch: pa.Table) -> np.ndarray:
        users = self.user_matrix(batch.column("user_id"))
        return (users @ self.item_vectors.T + self.item_bias[None, :]).astype(np.float32, copy=False)


def read_vocabulary(manifest: Manifest, column: str, options: storage.StorageOptions | None = None) -> pa.Table:
    return storage.read_table(manifest.file_uri(manifest.vocabularies[column]), options)


def catalog_attributes(batch: pa.Table) -> pa.Table:
    """One `ATTRIBUTES` row per distinct `item_idx` of a batch of training rows (or of such partials).

    An item's attributes are the same on all its rows; the smallest value is
    taken, so combining partials in any grouping gives the same table.
    """
    table = batch.select(ATTRIBUTES.names).cast(ATTRIBUTES)
    grouped = table.group_by("item_idx", use_threads=False).aggregate(
        [(name, "min") for name in ATTRIBUTES.names[1:]])
    grouped = grouped.rename_columns([n.removesuffix("_min") for n in grouped.column_names])
    return grouped.select(ATTRIBUTES.names).sort_by("item_idx")


def _nothing_before(table: pa.Table, columns: list[str]) -> pa.Table:
    """Counts (integer columns) null → 0, as for a key with no earlier event; float columns stay null."""
    for name in columns:
        column = table.column(name)
        if pa.types.is_integer(column.type):
            table = table.set_column(table.schema.get_field_index(name), name, pc.fill_null(column, 0))
    return table


def item_rows(schema: TrainingSchema, item_vocabulary: pa.Table, item_features: pa.Table,
              attributes: pa.Table) -> pa.Table:
    """One row per item index 0 .. cardinality − 1 (in order), with the item tower's input columns."""
    cardinality = schema.cardinality("item_idx")
    features = item_features.append_column(
        "item_idx", lookup_indices(item_features.column("item_id"), item_vocabulary)).drop_columns(["item_id"])
    features = features.filter(pc.greater(features.column("item_idx"), OOV_INDEX))
    base = pa.table({"item_idx": pa.array(np.arange(cardinality, dtype=np.int32))})
    rows = base.join(features, "item_idx", join_type="left outer")
    rows = rows.join(catalog_attributes(attributes), "item_idx", join_type="left outer").sort_by("item_idx")
    continuous = [c.name for c in schema.continuous("item_")]
    return _nothing_before(rows, [c for c in continuous if c in rows.column_names])


def user_rows(user_features: pa.Table, user_vocabulary: pa.Table, item_vocabulary: pa.Table) -> pa.Table:
    """`features/users` rows with `user_idx` and `history_item_idx` added."""
    table = user_features.append_column("user_idx", lookup_indices(user_features.column("user_id"), user_vocabulary))
    if "history_item_ids" in table.column_names:
        table = table.append_column(
            HISTORY_COLUMN, lookup_list_indices(table.column("history_item_ids"), item_vocabulary))
    return table


def new_user_row(schema: TrainingSchema) -> pa.Table:
    """The user-tower input of a user without training-window events."""
    columns = {"user_id": pa.array([None], pa.string()), "user_idx": pa.array([OOV_INDEX], pa.int32())}
    for column in schema.continuous("user_"):
        arrow = schema.arrow().field(column.name).type
        columns[column.name] = pa.array([0 if pa.types.is_integer(arrow) else None], arrow)
    columns[HISTORY_COLUMN] = pa.array([[]], pa.list_(pa.int32()))
    return pa.table(columns)
