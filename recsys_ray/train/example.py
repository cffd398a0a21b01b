"""Example trainer: a small two-tower model on a built version, with Ray Train on CPU.

    python -m recsys_ray.train.example --manifest URI --epochs 3 --num-workers 2

Each tower adds a hashed-id embedding to a projection of its numeric features
(`recsys_ray.train.features`); the score is their dot product plus a linear
term over all features, trained with binary cross-entropy on the build's labels
(positives and sampled negatives). Needs the `train` extra (torch).

Each run is a new Ray Train run named after the version and its start time, kept
in the version's `runs/` directory (or under `--storage-path`): a run never
resumes another's state, and a model's checkpoint sits next to the data it was
trained on. Ray is joined or started as every command does (`--address`, else
`RAY_ADDRESS`, else a local instance).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import uuid
from datetime import datetime, timezone

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch import nn

from recsys_ray.config import RecsysConfig
from recsys_ray.io import storage
from recsys_ray.train.feed import EveryRowDataConfig, manifest_location, read_manifest, training_datasets
from recsys_ray.train.features import ITEM_FEATURES, USER_FEATURES, model_inputs

HELP = "train an example two-tower model on a built training-data version with Ray Train"


class TwoTower(nn.Module):
    """Hashed-id embeddings plus projected numeric features on each side."""

    def __init__(self, buckets: int, dim: int):
        super().__init__()
        self.user_embedding = nn.Embedding(buckets, dim)
        self.item_embedding = nn.Embedding(buckets, dim)
        self.user_projection = nn.Linear(len(USER_FEATURES), dim)
        self.item_projection = nn.Linear(len(ITEM_FEATURES), dim)
        self.linear = nn.Linear(len(USER_FEATURES) + len(ITEM_FEATURES), 1)
        for embedding in (self.user_embedding, self.item_embedding):
            nn.init.normal_(embedding.weight, std=0.05)

    def forward(self, user, item, user_features, item_features):
        user_vector = self.user_embedding(user) + self.user_projection(user_features)
        item_vector = self.item_embedding(item) + self.item_projection(item_features)
        wide = self.linear(torch.cat([user_features, item_features], dim=1)).squeeze(1)
        return (user_vector * item_vector).sum(dim=1) + wide


def _logits(model, batch):
    return model(batch["user"], batch["item"], batch["user_features"], batch["item_features"])


def _global_mean(total: float, count: int) -> tuple[float, int]:
    """Mean of a sum and a row count over all workers (one all-reduce)."""
    pair = torch.tensor([total, float(count)], dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(pair)
    total, count = pair.tolist()
    return (total / count if count else float("nan")), int(count)


def train_loop_per_worker(config: dict) -> None:
    """One Train worker: epochs over its share of the train split, then a test pass."""
    torch.manual_seed(config["seed"])
    model = ray.train.torch.prepare_model(TwoTower(config["buckets"], config["dim"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    train_shard = ray.train.get_dataset_shard("train")
    test_shard = ray.train.get_dataset_shard("test")
    # Workers may get different numbers of batches (no row is dropped); DDP's join
    # keeps the gradient all-reduce going for workers that finish early.
    distributed = isinstance(model, nn.parallel.DistributedDataParallel)
    join = model.join if distributed else contextlib.nullcontext
    # Evaluation runs on the plain module: DDP's forward would start collectives
    # that workers with fewer test batches never join.
    local_model = model.module if distributed else model
    history: list[float] = []
    for epoch in range(config["epochs"]):
        model.train()
        total, count = 0.0, 0
        with join():
            for batch in train_shard.iter_torch_batches(batch_size=config["batch_size"]):
                optimizer.zero_grad()
                loss = loss_fn(_logits(model, batch), batch["label"])
                (loss / len(batch["label"])).backward()
                optimizer.step()
                total += loss.item()
                count += len(batch["label"])
        train_loss, train_rows = _global_mean(total, count)
        history.append(train_loss)
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in test_shard.iter_torch_batches(batch_size=config["batch_size"]):
                total += loss_fn(_logits(local_model, batch), batch["label"]).item()
                count += len(batch["label"])
        test_loss, test_rows = _global_mean(total, count)
        metrics = {"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
                   "train_rows": train_rows, "test_rows": test_rows, "train_loss_history": history}
        with tempfile.TemporaryDirectory() as checkpoint_dir:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save(local_model.state_dict(), os.path.join(checkpoint_dir, "model.pt"))
                checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
            ray.train.report(metrics, checkpoint=checkpoint)


def train(manifest_uri: str, cfg: RecsysConfig, *, epochs: int = 3, num_workers: int = 2,
          cpus_per_worker: float = 0.5, batch_size: int = 1024, lr: float = 0.01, buckets: int = 1 << 16,
          dim: int = 32, seed: int = 0, storage_path: str | None = None) -> dict:
    """Train the example model on the version at `manifest_uri` as a new Ray Train run.

    The run is named `{version}-{UTC start time}-{random}` and kept under
    `storage_path`, by default the version's `runs/` directory (on a multi-node
    cluster it must be shared storage, e.g. s3://). Returns the last epoch's
    metrics, the run's directory and where the model's checkpoint was saved.
    """
    options = storage.StorageOptions.from_config(cfg.storage)
    manifest_file, version_root = manifest_location(manifest_uri)
    version = read_manifest(manifest_file, options)["version"]
    runs = storage_path or storage.join(version_root, "runs")
    filesystem, runs_path = storage.resolve(runs, options)
    name = f"{version}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    # Blocks of a few batches each, so that every worker gets rows even from a small version.
    datasets = {
        split: dataset.repartition(target_num_rows_per_block=4 * batch_size)
        .map_batches(model_inputs, fn_kwargs={"buckets": buckets}, batch_format="pyarrow")
        for split, dataset in training_datasets(manifest_uri, cfg.storage).items()
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"epochs": epochs, "batch_size": batch_size, "lr": lr, "buckets": buckets,
                           "dim": dim, "seed": seed},
        # Fractional CPUs leave room for Ray Data to read and convert the shards.
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        datasets=datasets,
        dataset_config=EveryRowDataConfig(),
        run_config=RunConfig(name=name, storage_path=runs_path, storage_filesystem=filesystem,
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    result = trainer.fit()
    return {**result.metrics, "run": storage.join(runs, name),
            "checkpoint": storage.to_uri(filesystem, result.checkpoint.path)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="version directory or its manifest.json (local or s3://)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--buckets", type=int, default=1 << 16, help="hash buckets per id embedding")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage-path", help="where Ray Train keeps runs and checkpoints "
                                               "(default: the version's runs/ directory)")
    parser.add_argument("--config", help="RecsysConfig YAML (S3 endpoint and credentials)")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a new local Ray)")


def main(args: argparse.Namespace) -> int:
    from recsys_ray.cli import load_config
    from recsys_ray.runtime import FOR_TRAINING, ensure_ray

    cfg = load_config(args)
    ensure_ray(args.address, profile=FOR_TRAINING)
    metrics = train(args.manifest, cfg, epochs=args.epochs, num_workers=args.num_workers,
                    cpus_per_worker=args.cpus_per_worker, batch_size=args.batch_size, lr=args.lr,
                    buckets=args.buckets, dim=args.dim, seed=args.seed, storage_path=args.storage_path)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    from recsys_ray.cli import run_command

    sys.exit(run_command(sys.modules[__name__], sys.argv[1:], "python -m recsys_ray.train.example"))
