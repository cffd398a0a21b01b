"""The Ray Train feed: built training data as lazy Ray Datasets, and an example trainer."""

from recsys_ray.train.feed import EveryRowDataConfig, read_manifest, training_datasets

__all__ = ["EveryRowDataConfig", "read_manifest", "training_datasets"]
