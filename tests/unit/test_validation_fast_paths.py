"""The Arrow fast paths for text timestamps and numbers give exactly what pandas gives.

The reference below is the per-value pandas parsing the validator used for
every value before the fast paths existed; the fast paths must agree with it
on every row, including the rows they hand back to it.
"""

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys_ray import validation
from recsys_ray.config import ValidationConfig

CFG = ValidationConfig(min_timestamp=datetime(1, 1, 1, tzinfo=timezone.utc),
                       max_timestamp=datetime(9999, 12, 31, tzinfo=timezone.utc))

SPELLINGS = [
    "2024-01-01T00:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01 00:00:00", "2024-01-01T00:00:00", "2024-01-01",
    "2024-01-01T10", "2024-01-01T10Z", "2024-01-01 10", "2024-01-01T10:30", "2024-01-01T10:30Z",
    "2024-01-01T10:30:15.5Z", "2024-01-01T10:30:15.123Z", "2024-01-01T10:30:15.123456Z",
    "2024-01-01T10:30:15.1234567Z", "2024-01-01T10:30:15.123456789Z", "2024-01-01T10:30:15+01",
    "2024-01-01T10:30:15+0130", "2024-01-01T10:30:15+01:30", "2024-01-01T10:30:15-05:00",
    "2024-01-01T10:30:15+23:59", "2024-01-01T10:30:15+24:00", "2024-01-01T10+01", "2024-01-01T24:00:00Z",
    "2024-01-01T23:59:60Z", "2024-13-01T00:00:00Z", "2024-00-01T00:00:00Z", "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z", "0001-01-01T00:00:00Z", "1677-09-21T00:00:00Z",
    "1677-09-22T00:00:00Z", "1850-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2262-04-11T23:47:16Z",
    "2262-04-12T00:00:00Z", "2300-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2024-01-01t00:00:00z",
    "2024-01-01T00:00:00z", "20240101T000000Z", "2024-1-1", "2024-01-01T1:2:3Z", "2024-01-01T00:00:00 Z",
    "-2024-01-01", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00,5Z", "2024-01-01T00:00:00.5+01:00",
    "2024-01-01 00:00:00.000001", "2024-01-01T00:00:00-00:00", "2024-W01-1", "2024-001", "2024-01", "2024",
    "not a time", "1704067200", "1704067200000", "1704067200.5", "-5", "", "   ", None,
]


def reference_timestamps(texts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(microseconds, present, parsed) the way the validator parsed text before the fast paths."""
    stripped = [None if t is None else t.strip() for t in texts]
    present = np.array([bool(t) for t in stripped])
    numeric = present & np.array([t is not None and validation_re_numeric(t) for t in stripped])
    micros = np.zeros(len(texts))
    parsed = numeric.copy()
    for i in np.flatnonzero(numeric):
        value = float(stripped[i])
        micros[i] = np.round(value * (1e6 if abs(value) < 1e11 else 1e3))
    iso = present & ~numeric
    if iso.any():
        strings = pd.Series(np.array(stripped, dtype=object))[iso]
        dt = pd.to_datetime(strings, format="ISO8601", utc=True, errors="coerce")
        ok = dt.notna().to_numpy()
        idx = np.flatnonzero(iso)
        parsed[idx[ok]] = True
        micros[idx[ok]] = dt[ok].dt.as_unit("us").astype("int64").to_numpy().astype(np.float64)
    return micros, present, parsed


def validation_re_numeric(value: str) -> bool:
    import re

    return re.fullmatch(r"[+-]?\d+(\.\d+)?", value) is not None


def assert_same_as_reference(texts: list) -> None:
    timestamps, present, parsed, in_range = validation.parse_timestamps(pa.array(texts, pa.string()), CFG)
    micros, ref_present, ref_parsed = reference_timestamps(texts)
    bad = [texts[i] for i in np.flatnonzero(parsed != ref_parsed)]
    assert not bad, f"parsed differently: {bad[:10]}"
    assert (present == ref_present).all()
    lo, hi = (float(int(t.timestamp() * 1_000_000)) for t in CFG.time_range())
    ref_in_range = ref_parsed & (micros >= lo) & (micros <= hi)
    assert (in_range == ref_in_range).all()
    got = timestamps.cast(pa.int64()).to_numpy(zero_copy_only=False)
    wrong = [(texts[i], got[i], micros[i]) for i in np.flatnonzero(in_range) if got[i] != np.int64(micros[i])]
    assert not wrong, f"different instants: {wrong[:10]}"


def test_every_spelling_alone_matches_pandas():
    for spelling in SPELLINGS:
        assert_same_as_reference([spelling])


def test_all_spellings_mixed_in_one_column_match_pandas():
    rng = np.random.default_rng(7)
    texts = list(rng.choice(np.array(SPELLINGS, dtype=object), 5000))
    assert_same_as_reference(texts)


def test_a_clean_column_with_a_few_calendar_errors_is_parsed_row_by_row():
    # The whole-column cast fails on "2023-02-29"; halving keeps the other rows on the fast path.
    texts = [f"2024-03-{1 + i % 28:02d}T10:00:00Z" for i in range(10_000)]
    texts[1234] = "2023-02-29T00:00:00Z"
    texts[8000] = "2024-01-01 10:00:00"  # no zone: UTC
    texts[9999] = "garbage"
    assert_same_as_reference(texts)
    _, _, parsed, _ = validation.parse_timestamps(pa.array(texts), CFG)
    assert list(np.flatnonzero(~parsed)) == [1234, 9999]


def test_nanosecond_values_elsewhere_decide_far_years_as_pandas_does():
    # pandas parses year 1 alone, but not next to a nanosecond value; the validator follows it.
    assert_same_as_reference(["0001-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789Z", "2024-01-01T00:00:00Z"])
    assert_same_as_reference(["0001-01-01T00:00:00Z", "2024-01-01T00:00:00Z"])


def test_fuzzed_near_iso_strings_match_pandas():
    rng = np.random.default_rng(11)
    alphabet = list("0123456789-:T Z+.")
    texts = []
    for base in rng.choice(np.array(SPELLINGS[:40], dtype=object), 4000):
        chars = list(base)
        for _ in range(rng.integers(0, 3)):
            position = rng.integers(0, len(chars))
            action = rng.integers(0, 3)
            if action == 0:
                chars[position] = rng.choice(alphabet)
            elif action == 1:
                del chars[position]
            else:
                chars.insert(position, rng.choice(alphabet))
        texts.append("".join(chars))
    assert_same_as_reference(texts)


NUMBERS = ["4.5", "3", "0", "-0", "-0.0", "+5", ".5", "5.", "1e5", "1E5", "inf", "-inf", "nan", "NaN", "Infinity",
           "1_0", "0x10", "4.5.6", "00004.50", "1e400", "99999999999999999999", "18446744073709551615", "-1",
           "123456789012345", "1234567890123456", "0.1234567890123456789", "4.999999999999999999", "", "abc", None]


@pytest.mark.parametrize("value", NUMBERS)
def test_numbers_match_pandas(value):
    assert_numbers_match([value])


def test_mixed_numbers_match_pandas():
    rng = np.random.default_rng(3)
    plain = [f"{x:.{d}f}" for x, d in zip(rng.random(3000) * 10 ** rng.integers(0, 9, 3000), rng.integers(0, 9, 3000))]
    assert_numbers_match(plain + NUMBERS * 10)


@pytest.mark.parametrize("column", [["4.5", "-0"], ["3", "-0"], ["-0"], [None, "-0"], ["", "-00"], ["7", "-1"],
                                    ["1234567890123456789", "4.5"], ["9007199254740993"], ["9007199254740993", "0.5"],
                                    ["-1", "18446744073709551615"], ["4.5", "abc", "-0"]])
def test_numbers_read_differently_in_float_and_integer_mode_match_pandas(column):
    assert_numbers_match(column)


def assert_numbers_match(texts: list) -> None:
    text = pa.array([None if t is None else t.strip() for t in texts], pa.string())
    present = np.array([bool(t and t.strip()) for t in texts])
    got = validation.parse_numbers(text, present)
    # What the validator did before the fast path: pandas over the whole column.
    expected = pd.to_numeric(pd.Series(text.to_numpy(zero_copy_only=False)),
                             errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    same = (np.isnan(got) & np.isnan(expected)) | ((got == expected) & (np.signbit(got) == np.signbit(expected)))
    wrong = [(texts[i], got[i], expected[i]) for i in np.flatnonzero(~same)]
    assert not wrong, wrong[:10]


def test_rating_reasons_are_unchanged_by_the_fast_path():
    table = pa.table({
        "user_id": ["u"] * 6, "item_id": ["i"] * 6, "interaction_type": ["view"] * 6,
        "timestamp": ["2024-01-01T00:00:00Z"] * 6,
        "rating": ["4.5", "-0", "1e0", "abc", "9", None],
    })
    result = validation.validate(table, "interactions", ValidationConfig())
    assert result.rejected.column("reason").to_pylist() == ["rating_out_of_range", "bad_rating", "rating_out_of_range"]
    assert result.valid.column("rating").to_pylist() == [4.5, 1.0, None]
