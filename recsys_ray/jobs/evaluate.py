"""Evaluate a baseline model on a version's evaluation set:
`recsys-ray evaluate --manifest URI --model popularity|random [--k 10,20]`."""

from __future__ import annotations

import argparse
import logging
import sys

HELP = ("Rank every item for each user of a version's evaluation set with a baseline model (popularity: "
        "training-window distinct users; random), print Recall, NDCG, HitRate, MRR and coverage at each K, "
        "full and sampled, and write them to eval/metrics-{model}.json.")

MODELS = ("popularity", "random")


def parse_ks(text: str) -> list[int]:
    """`--k` values: comma-separated positive integers ("10,20"), returned sorted without repeats."""
    ks = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(
                f"--k takes comma-separated positive integers such as 10,20; got {text!r}")
        ks.add(int(part))
    return sorted(ks)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="version directory or its manifest.json (local or s3://)")
    parser.add_argument("--model", required=True, choices=MODELS, help="the baseline to evaluate")
    parser.add_argument("--k", type=parse_ks, default=[10, 20], metavar="K[,K...]",
                        help="cut-offs (default 10,20)")
    parser.add_argument("--seed", type=int, help="the random model's seed (default: the build's seed)")
    parser.add_argument("--config", help="YAML config file (storage section)")
    parser.add_argument("--address", help="Ray address (default: the current cluster, or a new local one)")


def format_metrics(result: dict, ks: list[int]) -> str:
    """A compact table: one row per K, one column per metric (full, then sampled)."""
    names = ["recall", "ndcg", "hit", "mrr", "coverage"]
    sampled = ["sampled_recall", "sampled_ndcg", "sampled_hit", "sampled_mrr"]
    header = ["K", *names, *sampled]
    rows = [[str(k), *(f"{result[f'{name}@{k}']:.5f}" for name in names + sampled)] for k in ks]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    return "\n".join([f"users {result['users']:,}", *lines])


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from recsys_ray.build.manifest import manifest_location, read_manifest
    from recsys_ray.cli import load_config
    from recsys_ray.errors import version_read_error
    from recsys_ray.io.storage import StorageOptions

    cfg = load_config(args)
    options = StorageOptions.from_config(cfg.storage)
    try:
        manifest = read_manifest(args.manifest, options)
    except FileNotFoundError as exc:
        print(f"error: {exc} (the build writes manifest.json last)", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"error: {manifest_location(args.manifest)[0]} is not a recsys_ray manifest: "
              f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot read {manifest_location(args.manifest)[0]}: {exc}", file=sys.stderr)
        return 1

    from recsys_ray.evaluation.run import EvaluationError, eval_files, evaluate, write_metrics
    from recsys_ray.build.progress import ray_data_console_for_builds
    from recsys_ray.runtime import ensure_ray

    try:
        eval_files(manifest, options)  # fail before starting Ray
        ensure_ray(args.address)
        with ray_data_console_for_builds():  # Ray Data's console: warnings and errors, no progress logs
            result = evaluate(manifest, args.model, ks=args.k, options=options, seed=args.seed)
        written = write_metrics(manifest, args.model, result, options)
    except Exception as exc:  # a worker's error arrives wrapped; show a missing or unreadable file plainly
        message = version_read_error(exc, manifest.uri, EvaluationError)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(format_metrics(result, args.k))
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    from recsys_ray.cli import run_command

    sys.exit(run_command(sys.modules[__name__], sys.argv[1:], "python -m recsys_ray.jobs.evaluate"))
