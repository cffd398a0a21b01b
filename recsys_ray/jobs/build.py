"""Build a training-data version: `recsys-ray build` / `python -m recsys_ray.jobs.build`.

The same arguments work locally and as a Ray job:

    ray job submit --working-dir . -- python -m recsys_ray.jobs.build \\
        --interactions s3://bucket/events/ --items s3://bucket/items/ --out s3://bucket/training/v1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Any

HELP = "Build a training-data version (validated rows, time split, features, negatives, shards) with Ray Data."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("inputs")
    src.add_argument("--interactions", help="interaction files: a file, directory or glob (comma-separated for several); local or s3://")
    src.add_argument("--items", help="catalog files (optional); without a catalog negatives come from items seen in interactions")
    src.add_argument("--root", help="storage root (local path or s3://bucket/prefix); with --tenant, build from the tenant's raw zone")
    src.add_argument("--tenant", help="tenant whose raw zone to read and under which to write the version")
    out = parser.add_argument_group("output")
    out.add_argument("--out", help="version URI (default {root}/tenants/{tenant}/training/{version})")
    out.add_argument("--version", help="version name (default: the last segment of --out, else the UTC time, "
                     "e.g. v20260101T000000Z)")
    out.add_argument("--shards", type=int, help="Parquet shards per split (default: from --rows-per-shard)")
    out.add_argument("--rows-per-shard", type=int, help="target rows per shard (default 1,000,000)")
    opt = parser.add_argument_group("options")
    opt.add_argument("--config", help="YAML config file with the same fields (flags win)")
    opt.add_argument("--seed", type=int, help="seed for negative sampling and shuffling (default 42)")
    opt.add_argument("--negatives", type=int, help="negatives per positive (default 4)")
    opt.add_argument("--sampling", choices=["uniform", "popularity"], help="negative sampling distribution")
    opt.add_argument("--popularity-alpha", type=float, help="exponent for popularity sampling (default 0.75)")
    opt.add_argument("--positive-types", help="comma-separated positive interaction types "
                     "(default click,like,add_to_cart,purchase)")
    opt.add_argument("--split-strategy", choices=["time", "leave_last_out"], help="global time cutoff (default) "
                     "or per-user leave-last-out")
    opt.add_argument("--test-fraction", type=float, help="share of events at or after the cutoff (default 0.1)")
    opt.add_argument("--cutoff", help="explicit ISO-8601 cutoff instead of --test-fraction")
    opt.add_argument("--parallelism", type=int, help="blocks per stage (default: automatic)")
    opt.add_argument("--heavy-item-events", type=int, help="event mode: an item with more events is cut into "
                     "time slices of about this many (default: an average partition's events, at least 100,000)")
    feat = parser.add_argument_group("features")
    feat.add_argument("--feature-time", choices=["event", "cutoff"],
                      help="event (default): each row's features from events strictly before its own time; "
                      "cutoff: every row gets the features as of the cutoff")
    feat.add_argument("--windows", help="comma-separated windows for user_events_{N}d / item_events_{N}d "
                      "(default 7d,30d; empty for none)")
    feat.add_argument("--history", type=int, help="the user's last N events as history lists (default 20; 0: none)")
    feat.add_argument("--min-frequency", type=int, help="vocabulary values counted fewer times in the training "
                      "window map to index 1, out of vocabulary (default 1)")
    feat.add_argument("--eval-negatives", type=int, help="sampled candidates per user in the evaluation set "
                      "(default 100)")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, as in a Ray job, else a "
                                          "new local Ray of its own)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary (no progress bars or stage lines)")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")


# The config key each flag sets: every build option, and the storage root.
FLAGS = {"storage.root": "--root", **{f"build.{name}": "--" + name.replace("_", "-") for name in (
    "interactions", "items", "tenant", "out", "version", "shards", "rows_per_shard", "seed", "negatives",
    "sampling", "popularity_alpha", "positive_types", "split_strategy", "test_fraction", "cutoff", "parallelism",
    "heavy_item_events", "feature_time", "windows", "history", "min_frequency", "eval_negatives")}}


def config_from_args(args: argparse.Namespace):
    """The build's RecsysConfig; a bad flag or file raises `recsys_ray.cli.UsageError`."""
    from recsys_ray.cli import load_config

    return load_config(args, FLAGS)


def summarize(manifest) -> str:
    """A few lines on what a build wrote (`manifest` is a `recsys_ray.build.manifest.Manifest`)."""
    c = manifest.counts
    lines = [
        f"version {manifest.version} at {manifest.uri}",
        f"  input rows {c.input_rows:,}: valid {c.valid:,}, rejected {sum(c.rejected.values()):,} "
        f"{c.rejected or ''}, duplicates {c.duplicates:,}",
        f"  cutoff {manifest.cutoff.isoformat()}",
    ]
    for name in ("train", "test"):
        shards = manifest.shards[name]
        lines.append(f"  {name}: {getattr(c, name + '_positives'):,} positives + "
                     f"{getattr(c, name + '_negatives'):,} negatives in {len(shards)} shard(s) under "
                     f"{manifest.uri}/{name}/")
    if c.negative_shortfall:
        lines.append(f"  negative shortfall: {c.negative_shortfall:,} (users who have seen almost every item)")
    timings = manifest.timings_s
    lines.append("  stage timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
                 + f"; total {sum(timings.values()):.2f}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import os

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Ray reads its log level when imported (after this point): no "Started a local Ray" line.
        os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")
    from recsys_ray.build.plan import BuildError, plan_build
    from recsys_ray.io.formats import InputError

    cfg = config_from_args(args)
    try:
        plan = plan_build(cfg)  # input mistakes are reported before Ray is imported or started
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from recsys_ray.build.progress import progress_on_stderr

    if args.quiet:
        os.environ["RECSYS_PROGRESS"] = "0"
    from recsys_ray.build.run import build_training_data
    from recsys_ray.runtime import ensure_ray

    with contextlib.nullcontext() if args.quiet else progress_on_stderr():
        ensure_ray(args.address)
        try:
            manifest = build_training_data(cfg, plan)
        except (BuildError, InputError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps({**manifest.model_dump(mode="json"), "uri": manifest.uri}, indent=2) if args.json
          else summarize(manifest))
    return 0


if __name__ == "__main__":
    from recsys_ray.cli import run_command

    sys.exit(run_command(sys.modules[__name__], sys.argv[1:], "python -m recsys_ray.jobs.build"))
