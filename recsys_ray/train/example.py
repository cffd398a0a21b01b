"""Example trainer: a two-tower model on a built version with Ray Train on CPU, evaluated by full ranking.

    python -m recsys_ray.train.example --manifest URI --epochs 3 --num-workers 2

Everything the model needs comes from the version (`recsys_ray.train.features`,
sized and normalised from the manifest's schema, no extra pass over the data):

- **user tower**: user_idx embedding + the mean of the item embeddings of the
  row's `history_item_idx` (padding 0 masked; an empty history adds nothing) +
  a linear projection of the standardised user features;
- **item tower**: item_idx + item_category_idx + item_brand_idx embeddings + a
  linear projection of the standardised item features (catalog price included);
- **score**: the dot product of the towers plus an item bias (an item_idx bias
  embedding and a linear term over the item features), trained with binary
  cross-entropy on the build's labels (positives and sampled negatives).

Embedding tables are sized from the schema's cardinalities, index 0 is padding
(`padding_idx=0`, kept at zero) and 1 is the shared out-of-vocabulary entry.

After training, the model scores the evaluation set (`eval/`) with full ranking
over every item index (`recsys_ray.evaluation.run.evaluate`, distributed over Ray
Data) from what the version knew at the cutoff (`recsys_ray.train.scoring`), as
does the popularity baseline; both metric sets are printed side by side and
written to `eval/metrics-two-tower.json` and `eval/metrics-popularity.json`.
Needs the `train` extra (torch).

Each run is a new Ray Train run named after the version and its start time, kept
in the version's `runs/` directory (or under `--storage-path`): a run never
resumes another's state, and a model's checkpoint (`model.pt`, with the model's
shape in `model.json`) sits next to the data it was trained on. Ray is joined or
started as every command does (`--address`, else `RAY_ADDRESS`, else a local
instance).
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

import numpy as np
import pyarrow as pa
import ray
import ray.train
import torch
from ray.train import CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch import nn

from recsys_ray.build.manifest import Manifest
from recsys_ray.config import RecsysConfig
from recsys_ray.io import storage
from recsys_ray.train.features import FeatureSpec, item_inputs, model_inputs, user_inputs
from recsys_ray.train.feed import EveryRowDataConfig, read_manifest, training_datasets
from recsys_ray.train.schema import TrainingSchema
from recsys_ray.train.scoring import (
    ATTRIBUTES,
    EmbeddingScorer,
    catalog_attributes,
    item_rows,
    new_user_row,
    read_vocabulary,
    user_rows,
)

HELP = "train an example two-tower model on a built training-data version with Ray Train and evaluate it"
MODEL_NAME = "two-tower"
EVAL_KS = (10, 20)


class TwoTower(nn.Module):
    """Vocabulary-index embeddings, the mean history embedding and projected features on each side."""

    def __init__(self, cardinalities: dict[str, int], user_width: int, item_width: int, dim: int):
        super().__init__()
        self.user_embedding = nn.Embedding(cardinalities["user_idx"], dim, padding_idx=0)
        self.item_embedding = nn.Embedding(cardinalities["item_idx"], dim, padding_idx=0)
        self.category_embedding = nn.Embedding(cardinalities["item_category_idx"], dim, padding_idx=0)
        self.brand_embedding = nn.Embedding(cardinalities["item_brand_idx"], dim, padding_idx=0)
        self.item_id_bias = nn.Embedding(cardinalities["item_idx"], 1, padding_idx=0)
        self.user_projection = nn.Linear(user_width, dim)
        self.item_projection = nn.Linear(item_width, dim)
        self.item_feature_bias = nn.Linear(item_width, 1)
        for embedding in (self.user_embedding, self.item_embedding, self.category_embedding,
                          self.brand_embedding):
            nn.init.normal_(embedding.weight, std=0.05)
            with torch.no_grad():
                embedding.weight[0].zero_()
        nn.init.zeros_(self.item_id_bias.weight)

    def user_vector(self, user_idx, history, user_features):
        vector = self.user_embedding(user_idx) + self.user_projection(user_features)
        if history.shape[1]:
            mask = (history != 0).unsqueeze(-1).to(vector.dtype)
            summed = (self.item_embedding(history) * mask).sum(dim=1)
            vector = vector + summed / mask.sum(dim=1).clamp(min=1.0)
        return vector

    def item_vector(self, item_idx, item_category_idx, item_brand_idx, item_features):
        return (self.item_embedding(item_idx) + self.category_embedding(item_category_idx)
                + self.brand_embedding(item_brand_idx) + self.item_projection(item_features))

    def item_bias(self, item_idx, item_features):
        return self.item_id_bias(item_idx).squeeze(1) + self.item_feature_bias(item_features).squeeze(1)

    def forward(self, batch: dict) -> torch.Tensor:
        users = self.user_vector(batch["user_idx"], batch["history"], batch["user_features"])
        items = self.item_vector(batch["item_idx"], batch["item_category_idx"], batch["item_brand_idx"],
                                 batch["item_features"])
        return (users * items).sum(dim=1) + self.item_bias(batch["item_idx"], batch["item_features"])


def build_model(shape: dict) -> TwoTower:
    return TwoTower(shape["cardinalities"], shape["user_width"], shape["item_width"], shape["dim"])


def _global_mean(total: float, count: int) -> tuple[float, int]:
    """Mean of a sum and a row count over all workers (one all-reduce)."""
    pair = torch.tensor([total, float(count)], dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(pair)
    total, count = pair.tolist()
    return (total / count if count else float("nan")), int(count)


def train_loop_per_worker(config: dict) -> None:
    """One Train worker: epochs over its share of the train split, each followed by a test pass."""
    torch.manual_seed(config["seed"])
    model = ray.train.torch.prepare_model(build_model(config["shape"]))
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
                loss = loss_fn(model(batch), batch["label"])
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
                total += loss_fn(local_model(batch), batch["label"]).item()
                count += len(batch["label"])
        test_loss, test_rows = _global_mean(total, count)
        metrics = {"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
                   "train_rows": train_rows, "test_rows": test_rows, "train_loss_history": history}
        with tempfile.TemporaryDirectory() as checkpoint_dir:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save(local_model.state_dict(), os.path.join(checkpoint_dir, "model.pt"))
                with open(os.path.join(checkpoint_dir, "model.json"), "w") as f:
                    json.dump(config["shape"], f)
                checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
            ray.train.report(metrics, checkpoint=checkpoint)


def _tensors(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in inputs.items()}


def model_scorer(model: TwoTower, manifest: Manifest, spec: FeatureSpec, attributes: pa.Table,
                 options: storage.StorageOptions | None = None, batch_size: int = 8192) -> EmbeddingScorer:
    """The trained model's `EmbeddingScorer`: item vectors of every item index and user vectors
    of every user of `features/users`, as of the cutoff (see `recsys_ray.train.scoring`)."""
    schema = TrainingSchema.from_manifest(manifest)
    item_vocabulary = read_vocabulary(manifest, "item_id", options)
    items = item_rows(schema, item_vocabulary, storage.read_table(manifest.file_uri(manifest.features["items"]),
                                                                 options), attributes)
    users = user_rows(storage.read_table(manifest.file_uri(manifest.features["users"]), options),
                      read_vocabulary(manifest, "user_id", options), item_vocabulary)
    model.eval()
    with torch.no_grad():
        item_tensors = _tensors(item_inputs(items, spec))
        item_vectors = model.item_vector(item_tensors["item_idx"], item_tensors["item_category_idx"],
                                         item_tensors["item_brand_idx"], item_tensors["item_features"])
        item_bias = model.item_bias(item_tensors["item_idx"], item_tensors["item_features"])

        def user_vectors(table: pa.Table) -> np.ndarray:
            parts = []
            for start in range(0, table.num_rows, batch_size):
                t = _tensors(user_inputs(table.slice(start, batch_size), spec))
                parts.append(model.user_vector(t["user_idx"], t["history"], t["user_features"]).numpy())
            return np.concatenate(parts) if parts else np.zeros((0, item_vectors.shape[1]), np.float32)

        vectors = user_vectors(users)
        new_user = user_vectors(new_user_row(schema))[0]
    return EmbeddingScorer(user_ids=users.column("user_id").combine_chunks(),
                           user_vectors=vectors.astype(np.float32), new_user_vector=new_user.astype(np.float32),
                           item_vectors=item_vectors.numpy().astype(np.float32),
                           item_bias=item_bias.numpy().astype(np.float32))


def train(manifest_uri: str, cfg: RecsysConfig, *, epochs: int = 3, num_workers: int = 2,
          cpus_per_worker: float = 0.5, batch_size: int = 512, lr: float = 0.005, dim: int = 32,
          seed: int = 0, storage_path: str | None = None, evaluate: bool = True) -> dict:
    """Train the example model on the version at `manifest_uri` as a new Ray Train run, then
    (with `evaluate`) rank the evaluation set with it and with popularity.

    The run is named `{version}-{UTC start time}-{random}` and kept under
    `storage_path`, by default the version's `runs/` directory (on a multi-node
    cluster it must be shared storage, e.g. s3://). Returns the last epoch's
    metrics, the run's directory and where the model's checkpoint was saved,
    and with `evaluate` the full-ranking metrics of both models
    (`eval_metrics`: {model name: metrics}) and the files they were written to
    (`eval_metrics_files`).
    """
    options = storage.StorageOptions.from_config(cfg.storage)
    manifest = read_manifest(manifest_uri, options)
    schema = TrainingSchema.from_manifest(manifest)
    spec = FeatureSpec.from_schema(schema)
    shape = {"cardinalities": spec.cardinalities, "user_width": spec.user.width, "item_width": spec.item.width,
             "dim": dim}
    runs = storage_path or storage.join(manifest.uri, "runs")
    filesystem, runs_path = storage.resolve(runs, options)
    name = f"{manifest.version}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    splits = training_datasets(manifest_uri, cfg.storage)
    # Blocks of a few batches each, so that every worker gets rows even from a small version.
    datasets = {
        split: dataset.repartition(target_num_rows_per_block=4 * batch_size)
        .map_batches(model_inputs, fn_kwargs={"spec": spec}, batch_format="pyarrow")
        for split, dataset in splits.items()
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"epochs": epochs, "batch_size": batch_size, "lr": lr, "shape": shape, "seed": seed},
        # Fractional CPUs leave room for Ray Data to read and convert the shards.
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        datasets=datasets,
        dataset_config=EveryRowDataConfig(),
        run_config=RunConfig(name=name, storage_path=runs_path, storage_filesystem=filesystem,
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    result = trainer.fit()
    out = {**result.metrics, "run": storage.join(runs, name),
           "checkpoint": storage.to_uri(filesystem, result.checkpoint.path)}
    if evaluate:
        with result.checkpoint.as_directory() as checkpoint_dir:
            model = build_model(shape)
            model.load_state_dict(torch.load(os.path.join(checkpoint_dir, "model.pt"), weights_only=True))
        attributes = train_attributes(splits["train"])
        scorer = model_scorer(model, manifest, spec, attributes, options)
        out.update(evaluate_models(manifest, {MODEL_NAME: scorer, "popularity": "popularity"}, options, seed))
    return out


def train_attributes(train: "ray.data.Dataset") -> pa.Table:
    """`catalog_attributes` of every item of the train split, reduced per block on Ray Data."""
    partials = train.select_columns(ATTRIBUTES.names).map_batches(catalog_attributes, batch_format="pyarrow")
    tables = [ATTRIBUTES.empty_table(), *ray.get(partials.to_arrow_refs())]
    return catalog_attributes(pa.concat_tables([t.select(ATTRIBUTES.names).cast(ATTRIBUTES) for t in tables]))


def evaluate_models(manifest: Manifest, scorers: dict, options: storage.StorageOptions | None = None,
                    seed: int | None = None) -> dict:
    """Full-ranking metrics of each scorer on the evaluation set, each written to `eval/metrics-{name}.json`."""
    from recsys_ray.evaluation.run import evaluate, write_metrics

    metrics, files = {}, {}
    for model_name, scorer in scorers.items():
        metrics[model_name] = evaluate(manifest, scorer, ks=EVAL_KS, options=options, seed=seed)
        files[model_name] = write_metrics(manifest, model_name, metrics[model_name])
    return {"eval_metrics": metrics, "eval_metrics_files": files}


def metrics_table(metrics: dict[str, dict]) -> str:
    """The models' metrics side by side, one row per metric."""
    names = list(metrics)
    keys = [k for k in next(iter(metrics.values())) if all(isinstance(m.get(k), (int, float)) for m in metrics.values())]
    width = max(len(k) for k in keys) if keys else 6
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    for key in keys:
        lines.append(f"{key:<{width}}  " + "  ".join(
            f"{metrics[n][key]:>12d}" if isinstance(metrics[n][key], int) else f"{metrics[n][key]:>12.4f}"
            for n in names))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="version directory or its manifest.json (local or s3://)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=512, help="rows per worker per step")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-eval", action="store_true", help="skip the full-ranking evaluation after training")
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
                    dim=args.dim, seed=args.seed, storage_path=args.storage_path, evaluate=not args.no_eval)
    print(json.dumps({k: v for k, v in metrics.items() if k != "eval_metrics"}, indent=2))
    if "eval_metrics" in metrics:
        print(f"\nfull ranking on the evaluation set ({metrics['eval_metrics'][MODEL_NAME].get('users', '?')} users)")
        print(metrics_table(metrics["eval_metrics"]))
    return 0


if __name__ == "__main__":
    from recsys_ray.cli import run_command

    sys.exit(run_command(sys.modules[__name__], sys.argv[1:], "python -m recsys_ray.train.example"))
