"""The Ray Train feed: built training data as lazy Ray Datasets, its typed schema, and an example trainer."""

from recsys_ray.build.manifest import Manifest, read_manifest
from recsys_ray.train.feed import EveryRowDataConfig, training_datasets
from recsys_ray.train.schema import TrainingSchema, training_schema

__all__ = ["EveryRowDataConfig", "Manifest", "TrainingSchema", "read_manifest", "training_datasets",
           "training_schema"]
