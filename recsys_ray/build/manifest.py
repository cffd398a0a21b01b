"""The manifest: a version's commit point, written last by the build and read by every reader.

`Manifest` is the one type of `manifest.json`. The build writes it through
`write_manifest` once every other file of the version is in place; the Train
feed, the CLI and the report read it with `read_manifest`. A version without a
manifest is unfinished or abandoned, whatever else its directory holds.
"""

from __future__ import annotations

import posixpath
from datetime import datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from recsys_ray import schemas
from recsys_ray.io import storage

MANIFEST_NAME = "manifest.json"
SPLITS: tuple[str, ...] = ("train", "test")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)


class InputFile(_Model):
    path: str
    size: int


class Inputs(_Model):
    interactions: list[InputFile]
    items: list[InputFile]


class CatalogCounts(_Model):
    """What became of the catalog input (`catalog` False: the build had none)."""

    catalog: bool
    input_rows: int = 0
    valid: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    duplicates: int = 0
    unique: int = 0


class Counts(_Model):
    """Row accounting: `input_rows = valid + sum(rejected)`, `valid = events + duplicates`,
    `{split}_rows = {split}_positives + {split}_negatives`."""

    input_rows: int
    valid: int
    rejected: dict[str, int]
    duplicates: int
    events: int
    items: CatalogCounts
    train_positives: int
    train_negatives: int
    train_rows: int
    test_positives: int
    test_negatives: int
    test_rows: int
    negative_shortfall: int


class Shard(_Model):
    path: str  # relative to the version root
    rows: int


class ColumnStats(_Model):
    """Over the train split's rows: values counted, nulls, mean, population std, min, max (None: no values)."""

    count: int
    null_count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


class Column(_Model):
    """One training column: its Arrow type, what it is to a model (`schemas.column_tags`), the
    size of its embedding table (vocabulary indices, reserved ones included) and statistics."""

    name: str
    type: str
    tags: list[str] = Field(default_factory=list)
    cardinality: int | None = None
    stats: ColumnStats | None = None


class EvalSet(_Model):
    """The fixed evaluation set (`eval/`): one row per user with a relevant item."""

    path: str
    users: int
    sampled_candidates: int


class Manifest(_Model):
    """Everything a reader needs to use a version, and how it was made."""

    version: str
    created_at: datetime
    recsys_ray_version: str
    tenant: str | None
    config: dict[str, Any]
    cutoff: datetime
    split_strategy: str
    parallelism: int
    inputs: Inputs
    counts: Counts
    shards: dict[str, list[Shard]]
    features: dict[str, str]
    quarantine: str
    columns: list[Column] = Field(alias="schema")
    vocabularies: dict[str, str] = Field(default_factory=dict)
    eval: EvalSet | None = None
    timings_s: dict[str, float]
    # Where the manifest was read from or written to; not stored in the file.
    uri: str | None = Field(default=None, exclude=True)

    def shard_uris(self, split: str) -> list[str]:
        """URIs of `split`'s shards, in manifest order."""
        if self.uri is None:
            raise ValueError("the manifest's location is unknown")
        return [_under(self.uri, shard.path) for shard in self.shards.get(split, [])]

    def column(self, name: str) -> Column:
        """The schema entry of column `name`."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"the version has no column {name!r}")

    def training_schema(self) -> pa.Schema:
        """The Arrow schema of the version's shards (from the build's window and history options)."""
        return schemas.training_schema(tuple(self.config.get("windows", ())), int(self.config.get("history", 0)))

    def file_uri(self, relative: str) -> str:
        """URI of a file of the version, given relative to the version root."""
        if self.uri is None:
            raise ValueError("the manifest's location is unknown")
        return _under(self.uri, relative)


def _under(root: str, path: str) -> str:
    if ".." in path.split("/") or path.startswith("/"):
        raise ValueError(f"path {path!r} climbs out of the version directory")
    return storage.join(root, path)


def manifest_location(uri: str) -> tuple[str, str]:
    """(manifest URI, version root URI) for a version directory or its manifest file."""
    uri = uri.rstrip("/")
    if uri.endswith(".json"):
        return uri, posixpath.dirname(uri) or "."
    return storage.join(uri, MANIFEST_NAME), uri


def read_manifest(uri: str, options: storage.StorageOptions | None = None) -> Manifest:
    """The manifest of the version at `uri` (a version directory or its manifest file).

    Raises FileNotFoundError when the version has no manifest (unfinished, abandoned or absent).
    """
    manifest_uri, root = manifest_location(uri)
    try:
        data = storage.read_bytes(manifest_uri, options)
    except FileNotFoundError:
        raise FileNotFoundError(f"no manifest at {manifest_uri}: the version does not exist or never completed") \
            from None
    return Manifest.model_validate_json(data).model_copy(update={"uri": root})


def write_manifest(manifest: Manifest, version_root: str, options: storage.StorageOptions | None = None) -> Manifest:
    """Write `manifest.json` at `version_root` (atomically) and return the manifest with its `uri`."""
    storage.write_bytes(storage.join(version_root, MANIFEST_NAME),
                        manifest.model_dump_json(indent=2).encode(), options)
    return manifest.model_copy(update={"uri": version_root})
