"""`recsys-ray`: one console script, one module per subcommand.

Each subcommand module defines HELP, `add_arguments(parser)` and `main(args) -> int`;
modules are imported only when their command runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, str] = {
    "demo": "recsys_ray.jobs.demo",
    "generate": "recsys_ray.jobs.generate",
    "build": "recsys_ray.jobs.build",
    "validate": "recsys_ray.jobs.validate_file",
    "serve": "recsys_ray.serve.cli",
    "consume": "recsys_ray.kafka.cli",
    "report": "recsys_ray.jobs.report",
}

_SUMMARIES: dict[str, str] = {
    "demo": "generate sample data and build a training-data version on local disk",
    "generate": "write synthetic interactions and a catalog",
    "build": "build a training-data version with Ray Data",
    "validate": "validate a file and print the report, writing nothing",
    "serve": "run the HTTP ingestion service on Ray Serve",
    "consume": "run the Kafka consumer on Ray",
    "report": "write a version's report.html, optionally with drift against a previous version",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="recsys-ray", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=_SUMMARIES.get(name, ""), add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name])
    command_parser = argparse.ArgumentParser(prog=f"recsys-ray {name}", description=module.HELP)
    module.add_arguments(command_parser)
    return int(module.main(command_parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
