"""Row validation shared by HTTP ingestion, the Kafka consumer and the batch build.

`validate(table, dataset, cfg)` turns any decoded table (CSV strings, JSON
numbers, Parquet timestamps...) into rows of the canonical schema plus rejected
rows, each with a reason code and its original values. It is vectorized Arrow
and NumPy; Python touches only the rejected rows, to keep their original values.
`deduplicate` (and `deduplicate_runs`, for many tables at once) says what a
duplicate is, the same way everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import hashing, schemas
from recsys_ray.config import ValidationConfig
from recsys_ray.io.formats import InputError


@dataclass(frozen=True)
class ValidationResult:
    valid: pa.Table
    rejected: pa.Table

    @property
    def reason_counts(self) -> dict[str, int]:
        return reason_counts(self.rejected)


def reason_counts(rejected: pa.Table) -> dict[str, int]:
    if rejected.num_rows == 0:
        return {}
    counts = rejected.group_by("reason", use_threads=False).aggregate([("reason", "count")])
    return dict(zip(counts["reason"].to_pylist(), counts["reason_count"].to_pylist()))


_MESSAGES = {
    "missing_field": "{field} is required and missing or empty",
    "id_too_long": "{field} is longer than {max_id_length} characters",
    "unknown_interaction_type": "interaction_type must be one of "
    + ", ".join(schemas.INTERACTION_TYPES),
    "bad_timestamp": "timestamp is neither ISO-8601 nor epoch seconds/milliseconds",
    "timestamp_out_of_range": "timestamp is outside the accepted range {time_range}",
    "bad_rating": "rating is not a number",
    "rating_out_of_range": "rating must be between {rating_min:g} and {rating_max:g}",
    "bad_price": "price is not a number",
    "price_out_of_range": "price must be >= 0",
    "bad_payload": "{field} has an unsupported type",
}


class _Checks:
    """Collects (mask, reason, field) checks; the first failing check names the row's reason."""

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self.items: list[tuple[np.ndarray, str, str]] = []

    def add(self, mask: Any, reason: str, field: str) -> None:
        mask = _to_bool(mask, self.num_rows)
        if mask.any():
            self.items.append((mask, reason, field))

    def first_failure(self) -> np.ndarray:
        """Index into `self.items` of each row's first failure, -1 for valid rows."""
        code = np.full(self.num_rows, -1, dtype=np.int32)
        for idx in range(len(self.items) - 1, -1, -1):
            code[self.items[idx][0]] = idx
        return code


def validate(
    table: pa.Table,
    dataset: str,
    cfg: ValidationConfig,
    *,
    source: str | None = None,
    row_offset: int = 0,
) -> ValidationResult:
    """Split `table` into canonical valid rows and quarantine rows for `dataset`."""
    if dataset == "interactions":
        return validate_interactions(table, cfg, source=source, row_offset=row_offset)
    if dataset == "items":
        return validate_items(table, cfg, source=source, row_offset=row_offset)
    raise ValueError(f"unknown dataset {dataset!r}")


def missing_columns(schema: pa.Schema, dataset: str) -> list[str]:
    """Required columns of `dataset` that `schema` lacks entirely."""
    return [c for c in schemas.required_columns(dataset) if c not in schema.names]


def validate_interactions(
    table: pa.Table, cfg: ValidationConfig, *, source: str | None = None, row_offset: int = 0
) -> ValidationResult:
    n = table.num_rows
    checks = _Checks(n)
    user_id = _id_column(table, "user_id", cfg, checks)
    item_id = _id_column(table, "item_id", cfg, checks)

    itype = _string_column(table, "interaction_type", checks)
    itype = pc.utf8_lower(pc.utf8_trim_whitespace(itype))
    itype_missing = _is_missing_string(itype)
    checks.add(itype_missing, "missing_field", "interaction_type")
    known = pc.is_in(itype, value_set=pa.array(schemas.INTERACTION_TYPES))
    checks.add(np.logical_and(~_to_bool(itype_missing, n), ~_to_bool(known, n)),
               "unknown_interaction_type", "interaction_type")

    ts_raw = table.column("timestamp") if "timestamp" in table.column_names else pa.nulls(n)
    timestamps, ts_present, ts_parsed, ts_in_range = parse_timestamps(ts_raw, cfg)
    checks.add(~ts_present, "missing_field", "timestamp")
    checks.add(ts_present & ~ts_parsed, "bad_timestamp", "timestamp")
    checks.add(ts_parsed & ~ts_in_range, "timestamp_out_of_range", "timestamp")

    rating = _optional_number(table, "rating", checks, "bad_rating")
    in_range = pc.and_(pc.greater_equal(rating, cfg.rating_min), pc.less_equal(rating, cfg.rating_max))
    checks.add(pc.invert(pc.fill_null(in_range, True)), "rating_out_of_range", "rating")

    if "event_id" in table.column_names:
        event_id = _string_column(table, "event_id", checks)
        event_id = pc.utf8_trim_whitespace(event_id)
        event_id = pc.if_else(_is_missing_string(event_id), pa.scalar(None, pa.string()), event_id)
        checks.add(_longer_than(event_id, cfg.max_id_length), "id_too_long", "event_id")
    else:
        event_id = pa.nulls(n, pa.string())

    code = checks.first_failure()
    ok = code < 0
    valid = pa.table(
        {
            "user_id": _take(user_id, ok),
            "item_id": _take(item_id, ok),
            "interaction_type": _take(itype, ok),
            "timestamp": _take(timestamps, ok),
            "rating": _take(rating, ok),
            "event_id": _take(event_id, ok),
        }
    )
    valid = valid.set_column(5, "event_id", fill_event_ids(valid))
    valid = valid.cast(schemas.INTERACTIONS)
    rejected = _rejected_rows(table, "interactions", checks, code, cfg, source, row_offset)
    return ValidationResult(valid, rejected)


def validate_items(
    table: pa.Table, cfg: ValidationConfig, *, source: str | None = None, row_offset: int = 0
) -> ValidationResult:
    n = table.num_rows
    checks = _Checks(n)
    item_id = _id_column(table, "item_id", cfg, checks)
    title = pc.utf8_trim_whitespace(_string_column(table, "title", checks))
    checks.add(_is_missing_string(title), "missing_field", "title")
    optional = {}
    for name in ("category", "brand", "description"):
        column = _string_column(table, name, checks) if name in table.column_names else pa.nulls(n, pa.string())
        column = pc.utf8_trim_whitespace(column)
        optional[name] = pc.if_else(_is_missing_string(column), pa.scalar(None, pa.string()), column)
    price = _optional_number(table, "price", checks, "bad_price")
    checks.add(pc.fill_null(pc.less(price, 0.0), False), "price_out_of_range", "price")

    code = checks.first_failure()
    ok = code < 0
    valid = pa.table(
        {
            "item_id": _take(item_id, ok),
            "title": _take(title, ok),
            "category": _take(optional["category"], ok),
            "brand": _take(optional["brand"], ok),
            "price": _take(price, ok),
            "description": _take(optional["description"], ok),
        }
    ).cast(schemas.ITEMS)
    rejected = _rejected_rows(table, "items", checks, code, cfg, source, row_offset)
    return ValidationResult(valid, rejected)


def fill_event_ids(table: pa.Table) -> pa.Array:
    """Event ids, deriving the missing ones from (user, item, type, timestamp).

    The derived id is a stable hash, so the same event sent twice without an id
    gets the same id and is recognised as a duplicate.
    """
    event_id = table.column("event_id")
    missing = pc.is_null(event_id)
    if table.num_rows == 0 or not pc.any(missing).as_py():
        return event_id
    ts_us = pc.cast(pc.cast(table.column("timestamp"), pa.timestamp("us")), pa.int64())
    key = pc.binary_join_element_wise(
        table.column("user_id"),
        table.column("item_id"),
        table.column("interaction_type"),
        pc.cast(ts_us, pa.string()),
        "\x1f",
    )
    derived = hashing.to_hex_ids(hashing.hash_strings(key), prefix="h")
    return pc.if_else(missing, derived, event_id)


def parse_timestamps(
    column: pa.Array | pa.ChunkedArray, cfg: ValidationConfig
) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """Parse event times given as timestamps, ISO-8601 strings or epoch s/ms numbers.

    Returns (UTC microsecond timestamps, present mask, parsed mask, in-range mask).
    Epoch values below 1e11 are seconds, larger ones milliseconds.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    typ = column.type
    micros = np.zeros(n, dtype=np.float64)
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        present = ~_to_bool(pc.is_null(column), n)
        if pa.types.is_date(typ):
            column = pc.cast(column, pa.timestamp("us"))
        as_int = pc.cast(pc.cast(column, pa.timestamp("us", tz=getattr(column.type, "tz", None))), pa.int64())
        micros = pc.fill_null(as_int, 0).to_numpy(zero_copy_only=False).astype(np.float64)
        parsed = present.copy()
    elif pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        values = pc.cast(column, pa.float64())
        present = ~_to_bool(pc.is_null(values), n)
        raw = pc.fill_null(values, 0.0).to_numpy(zero_copy_only=False)
        parsed = present & np.isfinite(raw)
        micros = _epoch_to_micros(np.where(parsed, raw, 0.0))
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
        present = ~_to_bool(_is_missing_string(text), n)
        whole = _cast_all(text, _TS_UTC)
        if whole is not None:  # the common case: every value is ISO-8601 with a zone
            values = pc.fill_null(whole.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
            if not (present & ((values < -_FAST_LIMIT_US) | (values > _FAST_LIMIT_US))).any():
                return _timestamp_result(values.astype(np.float64), present, present.copy(), cfg)
        numeric = _to_bool(pc.match_substring_regex(text, r"^[+-]?\d+(\.\d+)?$"), n) & present
        parsed = numeric.copy()
        if numeric.any():
            as_number = pc.cast(pc.if_else(pa.array(numeric), text, "0"), pa.float64())
            micros = _epoch_to_micros(as_number.to_numpy(zero_copy_only=False))
        iso = present & ~numeric
        if iso.any():
            idx = np.flatnonzero(iso)
            values, ok = _parse_iso8601(text.filter(pa.array(iso)))
            parsed[idx[ok]] = True
            micros[idx[ok]] = values[ok].astype(np.float64)
    else:
        present = ~_to_bool(pc.is_null(column), n)
        parsed = np.zeros(n, dtype=bool)

    return _timestamp_result(micros, present, parsed, cfg)


def _timestamp_result(
    micros: np.ndarray, present: np.ndarray, parsed: np.ndarray, cfg: ValidationConfig
) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = cfg.time_range()
    lo_us, hi_us = _micros(lo), _micros(hi)
    in_range = parsed & (micros >= lo_us) & (micros <= hi_us)
    safe = np.where(in_range, micros, 0).astype(np.int64)
    timestamps = pa.array(safe, pa.int64(), mask=~in_range).view(schemas.TIMESTAMP)
    return timestamps, present, parsed, in_range


_TS_UTC = pa.timestamp("us", tz="UTC")
_TS_NAIVE = pa.timestamp("us")
# Arrow's ISO-8601 grammar: date, optional time (hh, hh:mm, hh:mm:ss, up to 6 fractional
# digits) and, after a time, an optional zone (Z, +hh, +hhmm, +hh:mm). Values of other
# shapes go straight to the general parser.
_ISO_SHAPE = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$"
# Outside the nanosecond range (1677-09-22 to 2262-04-10, with a day to spare) pandas'
# verdict on a value can depend on the other values parsed with it (a nanosecond value
# elsewhere makes year 1 unparsable), so such values always go through pandas together.
_FAST_LIMIT_US = 2**63 // 1000 - 86_400_000_000
_BISECT_MIN_ROWS = 64


def _parse_iso8601(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parse trimmed, non-empty ISO-8601 strings to UTC epoch microseconds.

    Returns (int64 microseconds, parsed mask). Arrow's cast reads the common
    shapes over the whole column at once; only the values it cannot read (other
    ISO-8601 spellings, calendar errors, garbage) go to pandas, value by value.
    Both give the same instant wherever both accept a value (naive times are UTC).
    """
    n = len(strings)
    values = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    whole = _cast_all(strings, _TS_UTC)
    if whole is not None:
        values[:] = whole.cast(pa.int64()).to_numpy(zero_copy_only=False)
        ok[:] = True
    else:
        shaped = _to_bool(pc.match_substring_regex(strings, _ISO_SHAPE), n)
        if shaped.any():
            tail = pc.utf8_slice_codeunits(strings, 11)
            zoned = _to_bool(pc.or_(pc.or_(pc.match_substring(tail, "Z"), pc.match_substring(tail, "+")),
                                    pc.match_substring(tail, "-")), n)
            for group, typ in ((shaped & zoned, _TS_UTC), (shaped & ~zoned, _TS_NAIVE)):
                idx = np.flatnonzero(group)
                if len(idx):
                    got, good = _cast_bisect(strings.take(pa.array(idx)), typ)
                    values[idx] = got
                    ok[idx] = good
    ok &= (values >= -_FAST_LIMIT_US) & (values <= _FAST_LIMIT_US)
    rest = np.flatnonzero(~ok)
    if len(rest):
        got, good = _parse_iso8601_general(strings.take(pa.array(rest)))
        values[rest[good]] = got[good]
        ok[rest[good]] = True
    return values, ok


def _parse_iso8601_general(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """pandas' ISO-8601 parser, value by value: every spelling it knows, in any mix."""
    dt = pd.to_datetime(pd.Series(strings.to_numpy(zero_copy_only=False)), format="ISO8601", utc=True,
                        errors="coerce")
    ok = dt.notna().to_numpy()
    values = np.zeros(len(strings), dtype=np.int64)
    values[ok] = dt[ok].dt.as_unit("us").astype("int64").to_numpy()
    return values, ok


def _cast_all(strings: pa.Array, typ: pa.DataType) -> pa.Array | None:
    """`strings` cast to `typ`, or None if any value does not convert."""
    try:
        return pc.cast(strings, typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _cast_bisect(strings: pa.Array, typ: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """Cast to a timestamp type by halves: a value that fails takes only its small slice with it.

    Returns (int64 microseconds, converted mask); unconverted slices hold at
    most `_BISECT_MIN_ROWS` values and are left to the general parser.
    """
    n = len(strings)
    values = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    pending = [(0, n)]
    while pending:
        start, stop = pending.pop()
        cast = _cast_all(strings.slice(start, stop - start), typ)
        if cast is not None:
            values[start:stop] = cast.cast(pa.int64()).to_numpy(zero_copy_only=False)
            ok[start:stop] = True
        elif stop - start > _BISECT_MIN_ROWS:
            middle = (start + stop) // 2
            pending += [(start, middle), (middle, stop)]
    return values, ok


def _epoch_to_micros(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        scale = np.where(np.abs(values) < 1e11, 1e6, 1e3)
        return np.round(values * scale)


def _micros(moment: datetime) -> float:
    return float(int(moment.timestamp() * 1_000_000))


def _id_column(table: pa.Table, name: str, cfg: ValidationConfig, checks: _Checks) -> pa.Array:
    column = pc.utf8_trim_whitespace(_string_column(table, name, checks))
    checks.add(_is_missing_string(column), "missing_field", name)
    checks.add(_longer_than(column, cfg.max_id_length), "id_too_long", name)
    return column


def _string_column(table: pa.Table, name: str, checks: _Checks) -> pa.Array:
    """Column `name` as strings; integers become their decimal text."""
    n = table.num_rows
    if name not in table.column_names:
        return pa.nulls(n, pa.string())
    column = table.column(name).combine_chunks()
    typ = column.type
    if pa.types.is_string(typ):
        return column
    if pa.types.is_large_string(typ) or pa.types.is_integer(typ) or pa.types.is_null(typ):
        return pc.cast(column, pa.string())
    if pa.types.is_dictionary(typ):
        return pc.cast(column.dictionary_decode(), pa.string())
    if pa.types.is_floating(typ):
        # JSON or pandas may turn integer ids into floats: 12.0 -> "12".
        values = column.to_numpy(zero_copy_only=False)
        integral = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < 2**53)
        as_text = np.where(integral, np.char.mod("%d", np.where(integral, values, 0).astype(np.int64)),
                           column.cast(pa.string()).to_numpy(zero_copy_only=False))
        return pc.if_else(pc.is_null(column), pa.scalar(None, pa.string()), pa.array(as_text, pa.string()))
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        try:
            return pc.cast(column, pa.string())
        except pa.ArrowInvalid:
            checks.add(pc.invert(pc.is_null(column)), "bad_payload", name)
            return pa.nulls(n, pa.string())
    # Nested or otherwise unsupported values can't be ids or names.
    checks.add(pc.invert(pc.is_null(column)), "bad_payload", name)
    return pa.nulls(n, pa.string())


def _optional_number(table: pa.Table, name: str, checks: _Checks, bad_reason: str) -> pa.Array:
    """Optional numeric column as float64; unparsable text is flagged, NaN means absent."""
    n = table.num_rows
    if name not in table.column_names:
        return pa.nulls(n, pa.float64())
    column = table.column(name).combine_chunks()
    typ = column.type
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ) or pa.types.is_null(typ):
        values = pc.cast(column, pa.float64())
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
        blank = _to_bool(_is_missing_string(text), n)
        numbers = parse_numbers(text, ~blank)
        checks.add(~blank & ~np.isfinite(numbers), bad_reason, name)
        values = pa.array(numbers, pa.float64())
    else:
        checks.add(pc.invert(pc.is_null(column)), bad_reason, name)
        return pa.nulls(n, pa.float64())
    finite = pc.is_finite(values)
    return pc.if_else(pc.fill_null(finite, False), values, pa.scalar(None, pa.float64()))


# Unsigned decimals of at most 15 characters: Arrow and pandas both read these exactly
# (at most 15 significant digits, no exponent, no sign: pandas reads "-0" as +0.0).
_PLAIN_NUMBER = r"^\d+(?:\.\d+)?$"
_PLAIN_NUMBER_MAX_CHARS = 15
# Integers that pandas reads as a different float in integer mode than in float mode:
# negative zero (0.0 vs -0.0) and more than 15 digits (exact integer vs rounded decimal).
_CONTEXT_SENSITIVE_NUMBER = r"^(?:-0+|[+-]?\d{16,})$"


def parse_numbers(text: pa.Array, present: np.ndarray) -> np.ndarray:
    """float64 of the `present` strings of `text`, NaN where a value is not a number (or absent).

    Plain decimals are cast by Arrow over the whole column; anything else
    (signs, exponents, inf, long or malformed text) is read by `pd.to_numeric`.
    """
    numbers = np.full(len(text), np.nan)
    idx = np.flatnonzero(present)
    if len(idx) == 0:
        return numbers
    strings = text.take(pa.array(idx)) if len(idx) < len(text) else text
    plain = _to_bool(pc.and_(pc.match_substring_regex(strings, _PLAIN_NUMBER),
                             pc.less_equal(pc.binary_length(strings), _PLAIN_NUMBER_MAX_CHARS)), len(idx))
    if plain.any():
        numbers[idx[plain]] = pc.cast(strings.filter(pa.array(plain)), pa.float64()).to_numpy(zero_copy_only=False)
    if not plain.all():
        rest = strings.filter(pa.array(~plain))
        if pc.any(pc.match_substring_regex(rest, _CONTEXT_SENSITIVE_NUMBER)).as_py():
            # pandas reads these integers differently depending on the other values it
            # reads with them (float or integer mode), so it reads the whole column as before.
            parsed = pd.to_numeric(pd.Series(text.to_numpy(zero_copy_only=False)), errors="coerce")
            return parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        parsed = pd.to_numeric(pd.Series(rest.to_numpy(zero_copy_only=False)), errors="coerce")
        numbers[idx[~plain]] = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    return numbers


def _is_missing_string(column: pa.Array) -> pa.Array:
    # Byte length: zero exactly when the character length is, without decoding UTF-8.
    return pc.fill_null(pc.equal(pc.binary_length(column), 0), True)


def _longer_than(column: pa.Array, limit: int) -> pa.Array:
    """Values longer than `limit` characters (false for nulls)."""
    by_bytes = pc.fill_null(pc.greater(pc.binary_length(column), limit), False)
    if not pc.any(by_bytes).as_py():
        return by_bytes  # no more bytes than `limit`, so no more characters either
    return pc.fill_null(pc.greater(pc.utf8_length(column), limit), False)


def _to_bool(mask: Any, n: int) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        return mask.astype(bool, copy=False)
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    if isinstance(mask, pa.Array):
        if mask.null_count:
            mask = pc.fill_null(mask, False)
        return mask.to_numpy(zero_copy_only=False).astype(bool)
    return np.full(n, bool(mask))


def _take(column: pa.Array | pa.ChunkedArray, keep: np.ndarray) -> pa.Array:
    if keep.all():  # the usual case: no row rejected, nothing to copy
        return column
    return pc.filter(column, pa.array(keep))


def _rejected_rows(
    table: pa.Table,
    dataset: str,
    checks: _Checks,
    code: np.ndarray,
    cfg: ValidationConfig,
    source: str | None,
    row_offset: int,
) -> pa.Table:
    bad = np.flatnonzero(code >= 0)
    if len(bad) == 0:
        return schemas.QUARANTINE.empty_table()
    lo, hi = cfg.time_range()
    params = {
        "max_id_length": cfg.max_id_length,
        "rating_min": cfg.rating_min,
        "rating_max": cfg.rating_max,
        "time_range": f"[{lo.isoformat()}, {hi.isoformat()}]",
    }
    reasons = [checks.items[i][1] for i in range(len(checks.items))]
    fields = [checks.items[i][2] for i in range(len(checks.items))]
    messages = [_MESSAGES[r].format(field=f, **params) for r, f in zip(reasons, fields)]
    row_codes = code[bad]
    originals = table.take(pa.array(bad)).to_pylist()
    return pa.table(
        {
            "dataset": pa.array([dataset] * len(bad), pa.string()),
            "source": pa.array([source] * len(bad), pa.string()),
            "row": pa.array(bad + row_offset, pa.int64()),
            "reason": pa.array([reasons[c] for c in row_codes], pa.string()),
            "field": pa.array([fields[c] for c in row_codes], pa.string()),
            "message": pa.array([messages[c] for c in row_codes], pa.string()),
            "original": pa.array([json.dumps(o, default=str) for o in originals], pa.string()),
        },
        schema=schemas.QUARANTINE,
    )


# ---- duplicates: the one definition, for one table or for many at once --------------------------

IDENTITY = {"interactions": "event_id", "items": "item_id"}
# Among events with one event_id, the kept one is the first in this order of their values, never
# chosen by position, so the result does not depend on how the input was split.
_EVENT_ORDER = ("event_id", "timestamp", "user_id", "item_id", "interaction_type", "rating")


def deduplicate(table: pa.Table, dataset: str) -> tuple[pa.Table, int]:
    """One row per identity (`IDENTITY[dataset]`): events by `event_id` (derived ids cover
    exact repeats), items by `item_id` with a later row replacing an earlier one (catalog
    updates). Returns the unique rows, sorted by identity, and the number dropped.

    Only the identity column is needed to count: a table of just that column (or
    of its 64-bit hashes) drops as many rows as the whole rows would.
    """
    if table.num_rows < 2:
        return table, 0
    unique, kept = deduplicate_runs(table, dataset, np.array([table.num_rows]))
    return unique, table.num_rows - int(kept[0])


def deduplicate_runs(table: pa.Table, dataset: str, sizes: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """`deduplicate` of each run of `sizes[i]` consecutive rows as if it were alone, in one pass
    (the valid rows of many requests, validated together). Returns the kept rows, run after
    run, each run as `deduplicate` returns it, and how many rows each run kept."""
    sizes = np.asarray(sizes, dtype=np.int64)
    run = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    several = len(sizes) > 1
    key = IDENTITY[dataset]
    keyed, sort_keys = table, []
    if several:
        keyed = keyed.append_column("_run", pa.array(run))
        sort_keys.append(("_run", "ascending"))
    if dataset == "interactions":
        sort_keys += [(name, "ascending") for name in _EVENT_ORDER if name in table.column_names]
    else:
        keyed = keyed.append_column("_position", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        sort_keys += [(key, "ascending"), ("_position", "descending")]
    order = pc.sort_indices(keyed, sort_keys=sort_keys).to_numpy()
    keep = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        ids = table.column(key).take(order).combine_chunks()
        repeated = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
        if several:
            repeated &= run[order[1:]] == run[order[:-1]]
        keep[1:] = ~repeated
    kept = order[keep]
    return table.take(pa.array(kept)), np.bincount(run[kept], minlength=len(sizes))


def deduplicate_events(table: pa.Table) -> tuple[pa.Table, int]:
    """`deduplicate(table, "interactions")`."""
    return deduplicate(table, "interactions")


def deduplicate_items(table: pa.Table) -> tuple[pa.Table, int]:
    """`deduplicate(table, "items")`."""
    return deduplicate(table, "items")


def require_columns(schema: pa.Schema, dataset: str, source: str | None = None) -> None:
    """Raise InputError `missing_columns` if `schema` lacks a column `dataset` requires: such an
    input is a file of another dataset (a catalog among interaction files, say), not one of bad rows."""
    missing = missing_columns(schema, dataset)
    if missing:
        details = {"missing": missing, "required": list(schemas.required_columns(dataset))}
        raise InputError(
            "missing_columns", f"{source or 'the input'} has no column(s) {missing} required for {dataset} "
            f"(its columns are {schema.names}); is it a file of another dataset?",
            {**details, "source": source} if source else details)
