"""Validate a file without writing anything: `recsys-ray validate FILE --dataset interactions`.

The file is decoded by the same decoder and checked by the same validator as
HTTP uploads, Kafka messages and the batch build, so the report says exactly
which rows those would quarantine and why.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from recsys_ray import hashing, ingest, validation
from recsys_ray.config import RecsysConfig
from recsys_ray.io import formats, reader, storage
from recsys_ray.io.formats import InputError
from recsys_ray.schemas import DATASETS

HELP = (
    "Validate a local or s3:// file as interactions or items and print what would be accepted, "
    "rejected (by reason) and dropped as duplicates, plus the first rejected rows. Nothing is "
    "written. Rows are numbered from 0, not counting a CSV header. Exit status: 0 when every row "
    "is valid (duplicates allowed), 1 when some rows would be rejected, 2 when the file cannot "
    "be read as the dataset at all (missing, unknown format, not decodable, required columns "
    "absent); the reason is printed to stderr."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the file to check: a local path or s3:// URI")
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="what the file holds")
    parser.add_argument("--format", choices=formats.FORMATS, help="file format (default: from the file name)")
    parser.add_argument("--errors", type=int, default=10, metavar="N",
                        help="how many rejected rows to show (default %(default)s)")
    parser.add_argument("--config", help="YAML config file (validation limits, storage endpoint)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


@dataclass
class FileReport:
    """What validating one file found."""

    file: str
    dataset: str
    format: str
    rows: int = 0
    valid: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.rejected else 0

    def text(self) -> str:
        unique = self.valid - self.duplicates
        what = "repeated events" if self.dataset == "interactions" else "repeated item ids, last kept"
        lines = [
            f"{self.file} ({self.format}, {self.dataset})",
            f"  rows      {self.rows:>12,}",
            f"  valid     {self.valid:>12,}  ({unique:,} unique; {self.duplicates:,} {what})",
            f"  rejected  {self.rejected:>12,}",
        ]
        width = max((len(r) for r in self.rejected_by_reason), default=0)
        for reason, count in sorted(self.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {reason:<{width}}  {count:>10,}")
        if self.errors:
            lines.append(f"  first {len(self.errors)} rejected row(s):")
            for error in self.errors:
                original = error["original"]
                if len(original) > 160:
                    original = original[:157] + "..."
                lines.append(f"    row {error['row']}: {error['reason']} ({error['field']}): {error['message']}")
                lines.append(f"      {original}")
        return "\n".join(lines)


def validate_file(uri: str, dataset: str, cfg: RecsysConfig, fmt: str | None = None, *,
                  max_errors: int = 10, chunk_rows: int = reader.DEFAULT_CHUNK_ROWS) -> FileReport:
    """Read and validate the file at `uri` as `dataset` with `cfg` (a RecsysConfig), through the
    same reader and landing core as the service, `chunk_rows` rows at a time.

    Duplicates are counted over the whole file, as the build drops them: those
    within each chunk, then repeats across chunks of the identities each kept.
    Raises `InputError` when the file as a whole cannot be read as `dataset`.
    """
    options = storage.StorageOptions.from_config(cfg.storage)
    fmt = fmt or formats.format_from_path(uri)
    if fmt is None:
        raise InputError("unsupported_format", f"cannot tell the format of {uri} from its name; "
                                 f"pass --format ({', '.join(formats.FORMATS)})")
    if not storage.exists(uri, options):
        raise InputError("not_found", f"no such file: {uri}")
    vcfg = cfg.validation.with_window_fixed()  # one time window, however many chunks
    key = validation.IDENTITY[dataset]
    tally = ingest.PreparedFile(dataset, keep_rejected=max_errors)
    kept: list[np.ndarray] = []
    for chunk in reader.read_file(uri, fmt, dataset, options=options, chunk_rows=chunk_rows, name=uri):
        validation.require_columns(chunk.table.schema, dataset, source=uri)
        prepared = ingest.prepare_batch(chunk.table, dataset, vcfg, source=uri, row_offset=chunk.row_offset)
        tally.add(prepared)
        kept.append(hashing.hash_strings(prepared.valid.column(key)))
    _, across_chunks = validation.deduplicate(pa.table({key: np.concatenate(kept) if kept else np.array([], np.uint64)}), dataset)
    return FileReport(file=uri, dataset=dataset, format=fmt, rows=tally.rows,
                      valid=tally.accepted + tally.duplicates, rejected=tally.rejected,
                      rejected_by_reason=dict(tally.reason_counts), duplicates=tally.duplicates + across_chunks,
                      errors=tally.errors(["row", "reason", "field", "message", "original"]))


def main(args: argparse.Namespace) -> int:
    from recsys_ray.cli import load_config

    cfg = load_config(args)
    try:
        report = validate_file(args.file, args.dataset, cfg, args.format, max_errors=max(args.errors, 0))
    except InputError as exc:
        if args.json:
            print(json.dumps({"file": args.file, "dataset": args.dataset,
                              "error": {"code": exc.code, "message": exc.message, "details": exc.details}},
                             indent=2, default=str))
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), indent=2, default=str) if args.json else report.text())
    return report.exit_code


if __name__ == "__main__":
    from recsys_ray.cli import run_command

    sys.exit(run_command(sys.modules[__name__], sys.argv[1:], "python -m recsys_ray.jobs.validate_file"))
