"""`recsys-ray`: one console script, one module per subcommand.

Each subcommand module defines HELP, `add_arguments(parser)` and `main(args) -> int`;
modules are imported only when their command runs, so `--help` stays fast.
`run_command` runs one the same way for every entry point (`recsys-ray NAME`
and `python -m MODULE`): a mistake in its arguments or configuration
(`UsageError`, from `load_config`) is one line on stderr and exit code 2, and
SIGTERM or Ctrl-C stops it with one line and the signal's conventional exit
status (143, 130) instead of a traceback or Ray's crash dump.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

COMMANDS: dict[str, str] = {
    "demo": "recsys_ray.jobs.demo",
    "generate": "recsys_ray.jobs.generate",
    "build": "recsys_ray.jobs.build",
    "validate": "recsys_ray.jobs.validate_file",
    "serve": "recsys_ray.serve.cli",
    "consume": "recsys_ray.kafka.cli",
    "report": "recsys_ray.jobs.report",
    "evaluate": "recsys_ray.jobs.evaluate",
}

_SUMMARIES: dict[str, str] = {
    "demo": "generate sample data and build a training-data version on local disk",
    "generate": "write synthetic interactions and a catalog",
    "build": "build a training-data version with Ray Data",
    "validate": "validate a file and print the report, writing nothing",
    "serve": "run the HTTP ingestion service on Ray Serve",
    "consume": "run the Kafka consumer on Ray",
    "report": "write a version's report.html, optionally with drift against a previous version",
    "evaluate": "ranking metrics of a baseline model (popularity, random) on a version's evaluation set",
}


class UsageError(Exception):
    """A mistake in a command's arguments or configuration, said in one line (exit code 2)."""


class Stopped(BaseException):
    """The process was asked to stop (SIGTERM, SIGINT): unwinds the running command.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, _frame: Any) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal stops the process at once
    raise Stopped(signum)


def stop_on_sigterm() -> None:
    """SIGTERM raises `Stopped` in the main thread (as Ctrl-C raises KeyboardInterrupt)."""
    signal.signal(signal.SIGTERM, _raise_stopped)


def exit_by_signal(signum: int) -> int:
    """End the process the conventional way for `signum`: shut Ray down, then die of the signal.

    The parent sees the process killed by the signal (a shell's `$?` is
    128 + signum: 143 for SIGTERM, 130 for SIGINT), which is what systemd counts
    as a clean stop. A process that cannot die of its own signal (PID 1 in a
    container ignores it) gets 128 + signum back to exit with.
    """
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum


def run_command(module: ModuleType, argv: list[str], prog: str) -> int:
    """Parse `argv` with the module's arguments and run its `main`; returns the exit code."""
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    try:
        return int(module.main(args) or 0)
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except (Stopped, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        print(f"{prog}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return exit_by_signal(signum)


def load_config(args: argparse.Namespace, flags: Mapping[str, str] | None = None, **sections: dict[str, Any]):
    """The command's `RecsysConfig`: its `--config` file, the `RECSYS_*` environment, then its flags.

    `flags` maps a config key to the flag that sets it (`{"build.negatives":
    "--negatives"}`); the flag's value is read from `args`, and unset flags keep
    the file's or the default value. `sections` are further overrides the
    command sets itself (`build={"tenant": "demo"}`). A bad value or file is a
    `UsageError` that names the flag, or the config key when the value came from
    the file or the environment: `--negatives must be >= 0, got -1`.
    """
    import yaml
    from pydantic import ValidationError

    from recsys_ray.config import RecsysConfig

    overrides: dict[str, dict[str, Any]] = {name: dict(values) for name, values in sections.items()}
    given: dict[str, str] = {}
    for key, flag in (flags or {}).items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        section, _, field = key.partition(".")
        overrides.setdefault(section, {})[field] = value
        if value is not None:
            given[key] = flag
    try:
        return RecsysConfig.load(getattr(args, "config", None), **overrides)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, given)) from None
    except (ValueError, OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read the configuration: {exc}") from None


_REQUIREMENTS = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "literal_error": "must be {expected}",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "missing": "is required",
    "extra_forbidden": "is not a known setting",
}


def describe_validation_error(exc, flags: Mapping[str, str] | None = None) -> str:
    """One line per problem of a pydantic ValidationError, without pydantic's URLs.

    Each names the flag for its field if `flags` has one (keyed by the dotted
    field path, e.g. `build.negatives`), else the dotted path itself.
    """
    flags = flags or {}
    problems = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"])
        name = flags.get(path) or flags.get(".".join(str(part) for part in error["loc"][:2])) or path
        kind = error["type"]
        template = _REQUIREMENTS.get(kind)
        if template is not None:
            text = f"{name} {template.format(**error.get('ctx', {}))}"
        else:
            # A validator's own message already says what it got.
            message = str(error["ctx"]["error"]) if kind == "value_error" else error["msg"]
            text = f"{name}: {message[:1].lower()}{message[1:]}"
        value = error.get("input")
        if kind not in ("missing", "extra_forbidden", "value_error") and isinstance(value, (str, int, float)):
            text += f", got {value!r}"
        problems.append(text)
    return "; ".join(problems)


def _print_usage(parser: argparse.ArgumentParser, problem: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"recsys-ray: {problem}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="recsys-ray", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=_SUMMARIES.get(name, ""), add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from recsys_ray import __version__

        print(f"recsys-ray {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        if name.startswith("-"):
            return _print_usage(parser, f"unknown option {name!r}; options go after the command")
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; commands: {', '.join(COMMANDS)}"
        return _print_usage(parser, f"unknown command {name!r}{hint}")
    return run_command(importlib.import_module(COMMANDS[name]), argv[1:], f"recsys-ray {name}")


if __name__ == "__main__":
    # Through the package's module, so that the commands' `UsageError` and `Stopped` are this one's.
    from recsys_ray.cli import main as package_main

    sys.exit(package_main())
