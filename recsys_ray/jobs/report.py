"""Write a version's build report again: `recsys-ray report --manifest URI [--previous URI|latest] [--out FILE]`."""

from __future__ import annotations

import argparse
import logging
import sys

HELP = ("Write a version's report.html (data quality, activity, long tail, cold start, labels, features), "
        "optionally with drift against a previous version.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="version directory or its manifest.json (local or s3://)")
    parser.add_argument("--previous", help="version to compare against: a version directory or manifest URI, or "
                        "'latest' for the same tenant's previous version in the same folder (by created_at)")
    parser.add_argument("--out", help="where to write the page (default {version}/report.html)")
    parser.add_argument("--config", help="YAML config file (storage and report sections)")
    parser.add_argument("--address", help="Ray address (default: the current cluster, or a new local one)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from recsys_ray.config import RecsysConfig
    from recsys_ray.io.storage import StorageOptions
    from recsys_ray.report.writer import ReportError, previous_version, read_version, write_report

    try:
        cfg = RecsysConfig.load(args.config)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return 2
    options = StorageOptions.from_config(cfg.storage)
    try:
        manifest, root = read_version(args.manifest, options)
        previous, note = args.previous, None
        if previous == "latest":
            previous = previous_version(root, manifest, options)
            if previous is None:
                note = f"No earlier version of tenant {manifest.get('tenant')} next to {root} to compare with."
                print(f"note: {note}", file=sys.stderr)
        elif previous is not None:
            read_version(previous, options)  # fail before starting Ray
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from recsys_ray.runtime import ensure_ray

    ensure_ray(args.address)
    try:
        written = write_report(root, manifest, options, previous=previous, settings=cfg.report, out=args.out,
                               previous_note=note)
    except Exception as exc:  # a worker's error arrives wrapped; show a missing or unreadable file plainly
        from recsys_ray.errors import version_read_error

        message = version_read_error(exc, root, ReportError)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m recsys_ray.jobs.report", description=HELP)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
