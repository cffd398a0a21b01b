"""Writing one version, in the lifecycle of Ray Data's `Datasink`.

`on_write_start` clears the version (its manifest first, so it stops looking
complete), the build then writes its parts (quarantine, features, shards, ...),
`on_write_complete` removes the files that were only on their way (`_exchange/`)
and commits the manifest last, and `on_write_failed` makes sure no manifest
exists (and removes `_exchange/` too). What a failed build wrote stays for inspection (its
quarantine says why rows were rejected) and is cleared by the next run; no
reader looks past a missing manifest. Every file name of a version comes from here.
"""

from __future__ import annotations

import logging

from recsys_ray.build.manifest import MANIFEST_NAME, Manifest, write_manifest
from recsys_ray.io import storage

log = logging.getLogger(__name__)

QUARANTINE_DIR = "quarantine"
USER_FEATURES_DIR = "features/users"
ITEM_FEATURES_FILE = "features/items.parquet"
REPORT_FILE = "report.html"
EVAL_DIR = "eval"
VOCAB_DIR = "vocab"
DAILY_SUMMARY = "summaries/daily.parquet"  # events per day and type, for the report
EXCHANGE_DIR = "_exchange"  # events and rows on their way, removed when the version commits or fails


def shard_path(split: str, shard: int) -> str:
    """A shard's path relative to the version root."""
    return f"{split}/part-{shard:05d}.parquet"


def exchange_path(kind: str, split: str, index: int, producer: str) -> str:
    """Where one producer task leaves its `kind` rows ("users", "items", "eval",
    "item_inputs" or "catalog") of one run of consecutive shards of a split, the `index`-th
    (`exchange.write_pieces`)."""
    return f"{EXCHANGE_DIR}/{kind}/{split}-{index:05d}/{producer}.parquet"


def quarantine_dir(dataset: str) -> str:
    """Where the rejected rows of one input dataset ("interactions" or "items") go."""
    return f"{QUARANTINE_DIR}/{dataset}"


def quarantine_path(dataset: str, producer: str) -> str:
    """The quarantine file of the rejected rows one validation task found."""
    return f"{quarantine_dir(dataset)}/part-{producer}.parquet"


def user_features_path(producer: str) -> str:
    """The file of `features/users/` that one user partition's task writes."""
    return f"{USER_FEATURES_DIR}/part-{producer}.parquet"


def event_partition_path(producer: str) -> str:
    """Where one user partition's unique events wait for the build's later steps."""
    return f"{EXCHANGE_DIR}/events/{producer}.parquet"


def eval_file_path(user_range: int) -> str:
    """The evaluation set's file of one user_id range (files in name order are in user_id order)."""
    return f"{EVAL_DIR}/part-{user_range:05d}.parquet"


def vocabulary_path(column: str) -> str:
    """A vocabulary's path relative to the version root."""
    return f"{VOCAB_DIR}/{column}.parquet"


class VersionWriter:
    """Where a version's files go, and the order in which it becomes visible."""

    def __init__(self, out: str, options: storage.StorageOptions) -> None:
        self.out = out
        self.options = options

    def uri(self, relative: str) -> str:
        return storage.join(self.out, relative)

    def on_write_start(self) -> None:
        """Remove the manifest first (the version stops looking complete), then the rest."""
        manifest_uri = self.uri(MANIFEST_NAME)
        if storage.exists(manifest_uri, self.options):
            storage.delete(manifest_uri, self.options)
        storage.delete(self.out, self.options)

    def write_dataset(self, relative: str, dataset) -> None:
        """Write a Ray dataset as Parquet files under `relative` (a directory)."""
        fs, path = storage.resolve(self.uri(relative), self.options)
        dataset.write_parquet(path, filesystem=fs)

    def write_table(self, relative: str, table) -> None:
        storage.write_table(self.uri(relative), table, self.options)

    def on_write_complete(self, manifest: Manifest) -> Manifest:
        """Commit the version: remove what was only on its way (`_exchange/`), then write its
        manifest, last."""
        storage.delete(self.uri(EXCHANGE_DIR), self.options)
        return write_manifest(manifest, self.out, self.options)

    def on_write_failed(self, error: BaseException) -> None:
        """Make sure the failed version has no manifest (best effort: storage may be what failed)."""
        manifest_uri = self.uri(MANIFEST_NAME)
        try:
            if storage.exists(manifest_uri, self.options):
                storage.delete(manifest_uri, self.options)
        except Exception:  # the build's own error is the one to report
            log.warning("could not check for a manifest at %s after: %s", manifest_uri, error, exc_info=True)
        try:
            storage.delete(self.uri(EXCHANGE_DIR), self.options)
        except Exception:
            log.warning("could not remove %s after: %s", self.uri(EXCHANGE_DIR), error, exc_info=True)
