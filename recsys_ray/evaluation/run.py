"""`evaluate`: a model's ranking metrics on a version's evaluation set, with Ray Data.

The driver reads the small per-version inputs once: the item vocabulary
(`vocab/item_id.parquet`), for popularity the training-window distinct users
of each item (`item_unique_users` of `features/items.parquet`, the item
features as of the cutoff), and for a model's own scorer the user vocabulary.
Every block of `eval/` is then scored by `scoring.block_partials` in a
`map_batches` task, which returns only integer metric partials (one row per
ranking); the driver combines them exactly (`combine_metric_partials`) and
finalises the means. The result does not depend on the number of blocks.

`write_metrics` stores the result as `eval/metrics-{model}.json` in the version.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pyarrow as pa

from recsys_ray.build.manifest import Manifest
from recsys_ray.evaluation import scoring
from recsys_ray.evaluation.metrics import DEFAULT_KS
from recsys_ray.evaluation.scoring import Popularity, RandomScorer, Scorer
from recsys_ray.io import storage
from recsys_ray.io.storage import StorageOptions

log = logging.getLogger(__name__)

BUILT_IN_MODELS: tuple[str, ...] = ("popularity", "random")
METRICS_FILE = "metrics-{model}.json"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class EvaluationError(RuntimeError):
    """The version cannot be evaluated; the message says why in the user's terms."""


def evaluate(manifest: Manifest, scorer: "str | Scorer", *, ks: Sequence[int] = DEFAULT_KS,
             options: StorageOptions | None = None, seed: int | None = None, blocks: int | None = None,
             chunk_users: int | None = None) -> dict:
    """The metrics of `scorer` on the version's evaluation set (see docs/evaluation.md).

    `scorer` is "popularity", "random" or a picklable `Scorer`. `seed` is the
    random model's (default: the build's seed). `blocks` re-splits the evaluation
    set into that many blocks before scoring, and `chunk_users` sets how many
    users a task ranks at a time; neither changes the result. Runs on the
    current Ray cluster (the caller joins one, e.g. with `runtime.ensure_ray`).
    """
    import ray

    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    item_vocabulary = read_vocabulary(manifest, "item_id", options)
    rankable = item_vocabulary.num_rows  # item-vocabulary values from index 2
    model, user_vocabulary = _model(manifest, scorer, item_vocabulary, options, seed)

    files = eval_files(manifest, options)
    if not files:
        return scoring.finish_metrics(scoring.empty_partials(ks), rankable)
    fs, _ = storage.resolve(files[0], options)
    with _data_context():
        # No hive partitioning: a version named like `date=2024-06-01` must not add a column.
        ds = ray.data.read_parquet([storage.resolve(uri, options)[1] for uri in files], filesystem=fs,
                                   partitioning=None).select_columns(["user_id", *scoring.LIST_COLUMNS])
        if blocks:
            ds = ds.repartition(blocks)
        partials = ds.map_batches(
            scoring.block_partials, batch_size=None, batch_format="pyarrow",
            fn_kwargs={"model": model, "item_vocabulary": item_vocabulary, "user_vocabulary": user_vocabulary,
                       "ks": ks, "chunk_users": chunk_users})
        parts = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
                 for b in partials.iter_batches(batch_size=None, batch_format="pyarrow")]
    combined = pa.concat_tables([scoring.empty_partials(ks), *parts]).cast(scoring.BLOCK_PARTIALS)
    result = scoring.finish_metrics(combined, rankable)
    if manifest.eval is not None and result["users"] != manifest.eval.users:
        raise EvaluationError(f"scored {result['users']} users but the manifest lists {manifest.eval.users} "
                              f"in {manifest.file_uri(manifest.eval.path)}")
    return result


def write_metrics(manifest: Manifest, model_name: str, metrics: dict,
                  options: StorageOptions | None = None) -> str:
    """Write `metrics` as JSON to `eval/metrics-{model_name}.json` of the version; returns its URI."""
    if not _MODEL_NAME.fullmatch(model_name):
        raise ValueError(f"model name {model_name!r} must be letters, digits, '.', '_' or '-'")
    uri = metrics_uri(manifest, model_name)
    storage.write_bytes(uri, (json.dumps(metrics, indent=2) + "\n").encode(), options)
    return uri


def metrics_uri(manifest: Manifest, model_name: str) -> str:
    """Where `write_metrics` puts a model's metrics: `{eval dir}/metrics-{model}.json`."""
    eval_dir = manifest.eval.path if manifest.eval is not None else "eval"
    return manifest.file_uri(f"{eval_dir.rstrip('/')}/{METRICS_FILE.format(model=model_name)}")


def read_vocabulary(manifest: Manifest, column: str, options: StorageOptions | None = None) -> pa.Table:
    """The version's vocabulary of `column` (`value`, `index`, `count`)."""
    relative = manifest.vocabularies.get(column)
    if relative is None:
        raise EvaluationError(f"the version {manifest.uri} has no {column} vocabulary (built before "
                              "vocabularies existed?); build it again")
    return storage.read_table(manifest.file_uri(relative), options)


def item_distinct_users(manifest: Manifest, item_vocabulary: pa.Table,
                        options: StorageOptions | None = None):
    """Training-window distinct users of each item-vocabulary index (int64, length = cardinality),
    from `item_unique_users` in the version's item features (one row per item with training events)."""
    relative = manifest.features.get("items")
    if relative is None:
        raise EvaluationError(f"the version {manifest.uri} has no item features")
    table = storage.read_table(manifest.file_uri(relative), options)
    return scoring.distinct_users_by_index(item_vocabulary, table.column("item_id"),
                                           table.column("item_unique_users"))


def eval_files(manifest: Manifest, options: StorageOptions | None = None) -> list[str]:
    """URIs of the evaluation set's Parquet files (none for an empty set)."""
    if manifest.eval is None:
        raise EvaluationError(f"the version {manifest.uri} has no evaluation set (built before eval/ "
                              "existed?); build it again")
    root = manifest.file_uri(manifest.eval.path)
    if not storage.exists(root, options):
        if manifest.eval.users == 0:
            return []
        raise EvaluationError(f"the evaluation set {root} is missing")
    return [entry.uri for entry in storage.list_files(root, options, suffixes=(".parquet",))]


def _model(manifest: Manifest, scorer, item_vocabulary: pa.Table, options: StorageOptions | None,
           seed: int | None):
    from recsys_ray.stages.vocab import vocabulary_cardinality

    if isinstance(scorer, str):
        if scorer == "popularity":
            return Popularity(item_distinct_users(manifest, item_vocabulary, options)), None
        if scorer == "random":
            seed = int(manifest.config.get("seed", 0)) if seed is None else int(seed)
            return RandomScorer(vocabulary_cardinality(item_vocabulary), seed), None
        raise ValueError(f"unknown model {scorer!r}; built-in models: {', '.join(BUILT_IN_MODELS)}")
    if not callable(scorer):
        raise TypeError(f"scorer must be a model name or a callable, got {type(scorer).__name__}")
    return scorer, read_vocabulary(manifest, "user_id", options)


@contextmanager
def _data_context() -> Iterator[None]:
    """A scorer's own error reaches the caller as itself; no execution plans printed."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    fields = {"raise_original_map_exception": True, "print_on_execution_start": False}
    saved = {name: getattr(ctx, name) for name in fields}
    for name, value in fields.items():
        setattr(ctx, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)
