"""Write synthetic interactions and a catalog: `recsys-ray generate --out DIR`.

Writes DIR/interactions.<ext> and DIR/items.<ext> (local or s3://), chunk by
chunk, so memory stays bounded at tens of millions of rows. Parquet files get
one row group per chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_ray import synthetic
from recsys_ray.io import storage
from recsys_ray.io.formats import FORMATS

HELP = (
    "Write synthetic interactions and a catalog to OUT/interactions.<ext> and OUT/items.<ext>: "
    "Zipf-skewed users and items, type mix view 50%, click 25%, like 12%, purchase 8%, "
    "add_to_cart 5%, over 90 days. Users fall into --taste-groups latent groups that prefer some "
    "categories and brands, drifting over the window, so a model can beat popularity. "
    "The rows depend only on --seed and the sizes, not on the "
    "format or --chunk-rows. With --dirty-fraction, "
    "that share of interactions is invalid (one rejection reason each) and timestamps and "
    "ratings are written as text."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = synthetic.SyntheticConfig()
    parser.add_argument("--out", required=True, help="output directory, local or s3://bucket/prefix")
    parser.add_argument("--format", choices=FORMATS, default="parquet", help="file format (default parquet)")
    parser.add_argument("--users", type=int, metavar="N", default=defaults.users,
                        help="number of users (default %(default)s)")
    parser.add_argument("--items", type=int, metavar="N", default=defaults.items,
                        help="catalog size (default %(default)s)")
    parser.add_argument("--interactions", type=int, metavar="N", default=defaults.interactions,
                        help="number of interactions (default %(default)s)")
    parser.add_argument("--seed", type=int, metavar="S", default=defaults.seed,
                        help="random seed (default %(default)s)")
    parser.add_argument("--user-skew", type=float, metavar="A", default=defaults.user_skew,
                        help="Zipf exponent of user activity (default %(default)s)")
    parser.add_argument("--item-skew", type=float, metavar="A", default=defaults.item_skew,
                        help="Zipf exponent of item popularity (default %(default)s)")
    parser.add_argument("--end", metavar="ISO", default=defaults.end.isoformat(),
                        help="ISO-8601 end of the time window (default %(default)s)")
    parser.add_argument("--days", type=float, metavar="D", default=defaults.days,
                        help="length of the window (default %(default)s)")
    parser.add_argument("--dirty-fraction", type=float, metavar="F", default=0.0,
                        help="share of interactions replaced by invalid rows (default 0)")
    parser.add_argument("--duplicate-fraction", type=float, metavar="F",
                        help="share of interactions overwritten by exact copies of others "
                        "(default half of --dirty-fraction)")
    parser.add_argument("--taste-groups", type=int, metavar="G", default=defaults.taste_groups,
                        help="latent user groups with preferred categories and brands; 0 draws users "
                        "and items independently, as before taste groups (default %(default)s)")
    parser.add_argument("--taste-strength", type=float, metavar="S", default=defaults.taste_strength,
                        help="weight factor of a group's preferred categories, and of its brands "
                        "(default %(default)s)")
    parser.add_argument("--taste-drift", type=float, metavar="D", default=defaults.taste_drift,
                        help="share of a group's events that follow its late tastes at the end of "
                        "the window (default %(default)s)")
    parser.add_argument("--chunk-rows", type=int, metavar="N", default=defaults.chunk_rows,
                        help="rows generated and written at a time (default %(default)s)")
    parser.add_argument("--config", metavar="FILE", help="YAML config file (storage endpoint, validation limits)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


@dataclass
class GenerateSummary:
    """What `write_synthetic` wrote."""

    files: dict[str, str]
    rows: dict[str, int]
    bytes: dict[str, int]
    invalid: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"wrote {self.rows['interactions']:,} interactions and {self.rows['items']:,} items "
                 f"in {self.seconds:.2f}s"]
        for name, uri in self.files.items():
            lines.append(f"  {uri} ({self.bytes[name] / 1e6:,.1f} MB)")
        if self.invalid or self.duplicates:
            invalid = ", ".join(f"{k} {v:,}" for k, v in sorted(self.invalid.items())) or "none"
            lines.append(f"  invalid interactions {sum(self.invalid.values()):,} ({invalid}); "
                         f"exact duplicates {self.duplicates:,}")
        return "\n".join(lines)


def write_synthetic(cfg: synthetic.SyntheticConfig, out: str, fmt: str = "parquet",
                    options: storage.StorageOptions | None = None) -> GenerateSummary:
    """Generate `cfg`'s catalog and interactions into `out` as `fmt` files."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    started = time.perf_counter()
    summary = GenerateSummary(files={}, rows={}, bytes={})

    def interactions() -> Iterator[pa.Table]:
        for table, plan in synthetic.interaction_chunks(cfg):
            for reason, count in plan.reason_counts.items():
                summary.invalid[reason] = summary.invalid.get(reason, 0) + count
            summary.duplicates += len(plan.duplicate_rows)
            yield table

    for name, chunks in (("items", synthetic.item_chunks(cfg)), ("interactions", interactions())):
        uri = storage.join(out, f"{name}.{fmt}")
        rows, size = write_chunks(uri, chunks, fmt, options)
        summary.files[name], summary.rows[name], summary.bytes[name] = uri, rows, size
    summary.seconds = time.perf_counter() - started
    return summary


def write_chunks(uri: str, chunks: Iterable[pa.Table], fmt: str,
                 options: storage.StorageOptions | None = None) -> tuple[int, int]:
    """Write tables of one schema to a single `fmt` file at `uri`; returns (rows, bytes).

    The file appears whole: locally it is renamed into place when complete; on
    S3 the upload completes only at the end and is deleted if writing fails.
    """
    rows = 0
    with storage.atomic_output(uri, options) as stream:
        writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        if fmt == "json":
            stream.write(b"[")
        try:
            for table in chunks:
                if fmt == "parquet":
                    writer = writer or pq.ParquetWriter(stream, table.schema, compression="zstd")
                    writer.write_table(table, row_group_size=max(table.num_rows, 1))
                elif fmt == "csv":
                    table = _text_timestamps(table)
                    writer = writer or pacsv.CSVWriter(stream, table.schema)
                    writer.write_table(table)
                else:
                    lines = ndjson_lines(table)
                    if fmt == "json" and lines:
                        # JSON text never holds a raw newline, so newlines split rows only.
                        lines = (b"\n" if rows == 0 else b",\n") + lines.rstrip(b"\n").replace(b"\n", b",\n")
                    stream.write(lines)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if fmt == "json":
            stream.write(b"\n]\n")
        size = stream.tell()
    return rows, size


def _text_timestamps(table: pa.Table) -> pa.Table:
    for index, column in enumerate(table.columns):
        if pa.types.is_timestamp(column.type):
            table = table.set_column(index, table.field(index).name, synthetic.iso_timestamps(column))
    return table


def ndjson_lines(table: pa.Table) -> bytes:
    """One JSON object per row, newline-terminated, built with vectorized Arrow string kernels."""
    if table.num_rows == 0:
        return b""
    table = _text_timestamps(table)
    pieces: list[pa.Array | str] = []
    for index, name in enumerate(table.column_names):
        pieces.append(("{" if index == 0 else ",") + json.dumps(name) + ":")
        pieces.append(_json_values(table.column(name).combine_chunks()))
    pieces.append("}\n")
    lines = pc.binary_join_element_wise(*pieces, "")
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, np.int32)[[lines.offset, lines.offset + len(lines)]]
    return data.slice(int(bounds[0]), int(bounds[1] - bounds[0])).to_pybytes()


def _json_values(column: pa.Array) -> pa.Array:
    """JSON literals of a column's values: quoted text, numbers, booleans or null."""
    typ = column.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        text = column.cast(pa.string())
        if pc.any(pc.match_substring_regex(text, r'[\x00-\x1f"\\]')).as_py():
            values = [None if v is None else json.dumps(v) for v in text.to_pylist()]
            return pc.fill_null(pa.array(values, pa.string()), "null")
        return pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), "null")
    if pa.types.is_floating(typ):
        finite = pc.fill_null(pc.is_finite(column), False)
        column = pc.if_else(finite, column, pa.scalar(None, typ))
    if pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ):
        text = pc.cast(column, pa.string())
        if pa.types.is_boolean(typ):
            text = pc.utf8_lower(text)
        return pc.fill_null(text, "null")
    raise TypeError(f"cannot write a {typ} column as JSON")


def main(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from recsys_ray.cli import UsageError, describe_validation_error, load_config

    recsys = load_config(args)
    try:
        cfg = synthetic.SyntheticConfig(
            users=args.users, items=args.items, interactions=args.interactions, seed=args.seed,
            user_skew=args.user_skew, item_skew=args.item_skew, end=args.end, days=args.days,
            dirty_fraction=args.dirty_fraction, duplicate_fraction=args.duplicate_fraction,
            max_id_length=recsys.validation.max_id_length, chunk_rows=args.chunk_rows,
            taste_groups=args.taste_groups, taste_strength=args.taste_strength, taste_drift=args.taste_drift,
        )
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, {name: "--" + name.replace("_", "-")
                                                         for name in synthetic.SyntheticConfig.model_fields}))
    _, latest = recsys.validation.time_range()
    if cfg.end > latest:
        print(f"warning: --end {cfg.end.isoformat()} is later than the validator accepts "
              f"({latest.isoformat()}); late events will be rejected as timestamp_out_of_range",
              file=sys.stderr)
    try:
        summary = write_synthetic(cfg, args.out, args.format, storage.StorageOptions.from_config(recsys.storage))
    except OSError as exc:
        print(f"error: cannot write to {args.out}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**asdict(summary), "config": cfg.model_dump(mode="json"),
                          "generated_at": datetime.now(timezone.utc).isoformat()}, indent=2))
    else:
        print(summary.text())
    return 0


if __name__ == "__main__":
    from recsys_ray.cli import run_command

    sys.exit(run_command(sys.modules[__name__], sys.argv[1:], "python -m recsys_ray.jobs.generate"))
