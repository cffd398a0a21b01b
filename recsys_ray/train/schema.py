"""A built version's training schema as a typed object.

`training_schema(manifest_uri)` reads the version's manifest and returns a
frozen `TrainingSchema`: the shards' columns in order, each the manifest's
`Column` (Arrow type, tags, embedding-table cardinality, train-split
statistics), plus the build's history length. A model sizes its embeddings
from `cardinality(name)` and normalises its continuous inputs from `stats(name)`
without another pass over the data. No Ray and no torch here.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from recsys_ray.build.manifest import Column, ColumnStats, Manifest, read_manifest
from recsys_ray.config import StorageConfig
from recsys_ray.io import storage


class TrainingSchema(BaseModel):
    """The columns of a version's train/test shards, as the manifest describes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: tuple[Column, ...]
    history_length: int = 0  # the build's --history: the longest `history_item_idx` list

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "TrainingSchema":
        return cls(columns=tuple(manifest.columns), history_length=int(manifest.config.get("history", 0)))

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    def column(self, name: str) -> Column:
        """The entry of column `name` (KeyError if the version has none)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"the version has no column {name!r}")

    def __contains__(self, name: object) -> bool:
        return any(column.name == name for column in self.columns)

    def tagged(self, *tags: str, prefix: str | None = None) -> list[Column]:
        """Columns carrying every one of `tags` (and whose name starts with `prefix`), in schema order."""
        return [c for c in self.columns
                if all(tag in c.tags for tag in tags) and (prefix is None or c.name.startswith(prefix))]

    def categorical(self, prefix: str | None = None) -> list[Column]:
        """Columns tagged `categorical` (vocabulary indices and the string attributes they index)."""
        return self.tagged("categorical", prefix=prefix)

    def continuous(self, prefix: str | None = None) -> list[Column]:
        """Numeric feature columns (tag `continuous`), e.g. `continuous("user_")` for the user side."""
        return self.tagged("continuous", prefix=prefix)

    def cardinality(self, name: str) -> int:
        """Embedding-table size of an indexed column: its vocabulary's largest index + 1."""
        cardinality = self.column(name).cardinality
        if cardinality is None:
            raise ValueError(f"column {name!r} has no vocabulary, so no cardinality")
        return cardinality

    def stats(self, name: str) -> ColumnStats:
        """Train-split statistics of a continuous column."""
        stats = self.column(name).stats
        if stats is None:
            raise ValueError(f"column {name!r} has no statistics")
        return stats

    def arrow(self) -> pa.Schema:
        """The Arrow schema of the shards (types parsed from the manifest's type names)."""
        return pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in self.columns])


def _arrow_type(name: str) -> pa.DataType:
    lists = {"list<item: string>": pa.list_(pa.string()), "list<item: int32>": pa.list_(pa.int32())}
    if name in lists:
        return lists[name]
    if name.startswith("timestamp["):
        unit, _, tz = name[len("timestamp["):-1].partition(", tz=")
        return pa.timestamp(unit, tz=tz or None)
    return pa.type_for_alias(name)


def training_schema(manifest_uri: str, storage_config: StorageConfig | None = None) -> TrainingSchema:
    """The training schema of the version at `manifest_uri` (its directory or its manifest.json,
    local or `s3://`; endpoint and credentials from `storage_config`)."""
    manifest = read_manifest(manifest_uri, storage.StorageOptions.from_config(storage_config))
    return TrainingSchema.from_manifest(manifest)
