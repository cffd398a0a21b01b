"""The Ray Train feed: built training data as lazy Ray Datasets, and an example trainer."""

from recsys_ray.build.manifest import Manifest, read_manifest
from recsys_ray.train.feed import EveryRowDataConfig, training_datasets

__all__ = ["EveryRowDataConfig", "Manifest", "read_manifest", "training_datasets"]
