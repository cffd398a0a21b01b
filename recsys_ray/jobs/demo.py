"""`recsys-ray demo`: generate sample data and build a training-data version on local disk.

Everything lands under one storage root (default ./recsys-data): the sample
inputs in `{root}/demo-input/` and the version in
`{root}/tenants/demo/training/{version}/`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

HELP = "Generate sample data and build a training-data version on the embedded default (local Ray, local disk)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=os.environ.get("RECSYS_STORAGE_ROOT", "./recsys-data"),
                        help="storage root (default ./recsys-data)")
    parser.add_argument("--interactions", type=int, default=100_000, help="interactions to generate (default 100,000)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--dirty-fraction", type=float, default=0.01,
                        help="share of invalid rows injected to show the quarantine (default 0.01)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--version", default="demo")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    os.environ.setdefault("RECSYS_PROGRESS", "0")
    from recsys_ray import synthetic
    from recsys_ray.cli import load_config
    from recsys_ray.io import storage
    from recsys_ray.jobs.build import summarize
    from recsys_ray.jobs.generate import write_synthetic
    from recsys_ray.build.progress import progress_on_stderr
    from recsys_ray.build.run import build_training_data

    root = os.path.abspath(args.root) if not storage.is_s3(args.root) else args.root
    inputs = storage.join(root, "demo-input")
    started = time.perf_counter()
    generated = write_synthetic(
        synthetic.SyntheticConfig(users=args.users, items=args.items, interactions=args.interactions,
                                  seed=args.seed, dirty_fraction=args.dirty_fraction),
        inputs,
    )
    print(generated.text())
    cfg = load_config(args, {"build.version": "--version", "build.seed": "--seed"}, storage={"root": root},
                      build={"interactions": generated.files["interactions"], "items": generated.files["items"],
                             "tenant": "demo"})
    with progress_on_stderr():
        manifest = build_training_data(cfg)
    print(summarize(manifest))
    print(f"done in {time.perf_counter() - started:.1f}s; read it with "
          f"recsys_ray.train.training_datasets('{manifest.uri}')")
    return 0
