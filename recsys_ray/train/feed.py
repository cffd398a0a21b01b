"""Feed a built training-data version straight into Ray Train.

`training_datasets(uri)` reads the version's `manifest.json` and returns lazy
Ray Datasets over exactly the shards it lists (a directory may also hold files
of an unfinished or abandoned build; the manifest is the commit point). Nothing
is copied or collected on the driver: Ray Data streams the Parquet shards to
the trainers. Every split has the version's training schema, even when empty.
`recsys_ray.train.training_schema(uri)` describes those columns (tags,
cardinalities, train-split statistics) as a typed object.
"""

from __future__ import annotations

import pyarrow as pa
import ray.data
from ray.train import DataConfig

from recsys_ray.build.manifest import read_manifest
from recsys_ray.config import StorageConfig
from recsys_ray.io import storage

SPLITS: tuple[str, ...] = ("train", "test")


def training_datasets(manifest_uri: str, storage_config: StorageConfig | None = None,
                      *, columns: list[str] | None = None) -> dict[str, ray.data.Dataset]:
    """Lazy `{"train": Dataset, "test": Dataset}` over the shards the manifest lists.

    `manifest_uri` is a version directory or its `manifest.json`, on local disk
    or `s3://` (endpoint and credentials from `storage_config`, else the
    standard AWS variables). `columns` selects a subset of the training schema.
    """
    options = storage.StorageOptions.from_config(storage_config)
    manifest = read_manifest(manifest_uri, options)
    uris = {split: manifest.shard_uris(split) for split in SPLITS}
    full = manifest.training_schema()
    schema = full if columns is None else pa.schema([full.field(c) for c in columns])
    datasets = {}
    for split, split_uris in uris.items():
        if not split_uris:
            datasets[split] = ray.data.from_arrow(schema.empty_table())
            continue
        filesystem, _ = storage.resolve(split_uris[0], options)
        paths = [storage.resolve(uri, options)[1] for uri in split_uris]
        # No hive partitioning: a version named like `date=2024-06-01` must not add a column.
        datasets[split] = ray.data.read_parquet(
            paths, filesystem=filesystem, schema=schema, partitioning=None,
        ).select_columns(list(schema.names))
    return datasets


class EveryRowDataConfig(DataConfig):
    """Split datasets across Train workers so that every row reaches exactly one
    worker in every epoch.

    Ray Train's default `DataConfig` splits with `streaming_split(equal=True)`,
    which drops up to `num_workers - 1` rows per epoch to give every worker the
    same count. Here workers may get slightly different counts instead; with
    DDP, wrap the epoch's steps in `model.join()` so the workers with fewer
    batches keep the gradient all-reduce going (see `recsys_ray.train.example`).
    """

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output: list[dict] = [{} for _ in range(world_size)]
        split_all = self._datasets_to_split == "all"
        hints = worker_node_ids if self._enable_shard_locality else None
        for name, dataset in datasets.items():
            if dataset.name is None:
                dataset.set_name(name)
            dataset = dataset.copy(dataset)
            dataset.context.execution_options = self._resolve_execution_options(name)
            if split_all or name in self._datasets_to_split:
                iterators = dataset.streaming_split(world_size, equal=False, locality_hints=hints)
            else:
                iterators = [dataset.iterator() for _ in range(world_size)]
            for rank, iterator in enumerate(iterators):
                output[rank][name] = iterator
        return output
