"""Statistics of continuous columns, summable across shards: count, nulls, mean, spread, range.

`column_partials` summarises one table; `combine_partials` merges summaries in
the order given (Chan et al.'s pairwise update of mean and squared deviations),
so the same shards in the same order always give the same figures, whatever
wrote them. Values are taken as float64; nulls are counted, never averaged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc


def column_partials(table: pa.Table, columns: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per column: count (non-null), nulls, mean, m2 (sum of squared deviations), min, max."""
    out = {}
    for name in columns:
        column = table.column(name)
        values = pc.drop_null(pc.cast(column, pa.float64())).to_numpy()
        n = len(values)
        mean = float(values.mean()) if n else 0.0
        out[name] = {"count": n, "nulls": column.null_count, "mean": mean,
                     "m2": float(((values - mean) ** 2).sum()) if n else 0.0,
                     "min": float(values.min()) if n else math.inf, "max": float(values.max()) if n else -math.inf}
    return out


def combine_partials(parts: Iterable[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Merge `column_partials` results, in order."""
    total: dict[str, dict[str, float]] = {}
    for part in parts:
        for name, b in part.items():
            a = total.get(name)
            if a is None:
                total[name] = dict(b)
                continue
            n = a["count"] + b["count"]
            delta = b["mean"] - a["mean"]
            mean = a["mean"] + delta * b["count"] / n if n else 0.0
            m2 = a["m2"] + b["m2"] + delta * delta * a["count"] * b["count"] / n if n else 0.0
            total[name] = {"count": n, "nulls": a["nulls"] + b["nulls"], "mean": mean, "m2": m2,
                           "min": min(a["min"], b["min"]), "max": max(a["max"], b["max"])}
    return total


def finalize(partial: dict[str, float]) -> dict[str, float | int | None]:
    """count, null_count, mean, std (population, ddof 0), min, max; None where there are no values."""
    n = int(partial["count"])
    return {"count": n, "null_count": int(partial["nulls"]),
            "mean": partial["mean"] if n else None, "std": math.sqrt(partial["m2"] / n) if n else None,
            "min": partial["min"] if n else None, "max": partial["max"] if n else None}


def is_continuous(field: pa.Field) -> bool:
    return pa.types.is_integer(field.type) or pa.types.is_floating(field.type)


