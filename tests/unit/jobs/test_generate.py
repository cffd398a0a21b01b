import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray import cli, synthetic
from recsys_ray.config import ValidationConfig
from recsys_ray.io import formats
from recsys_ray.jobs import generate
from recsys_ray.validation import deduplicate_events, validate

VCFG = ValidationConfig()
SIZES = ["--users", "300", "--items", "200", "--interactions", "2000", "--seed", "9"]


def run_generate(capsys, *args):
    code = cli.main(["generate", *args])
    return code, capsys.readouterr()


def decoded(path, fmt, dataset):
    return formats.decode(path.read_bytes(), fmt, dataset)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json", "ndjson"])
def test_round_trip_each_format(tmp_path, capsys, fmt):
    code, out = run_generate(capsys, "--out", str(tmp_path), "--format", fmt, *SIZES,
                             "--dirty-fraction", "0.05", "--chunk-rows", "700", "--json")
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"interactions.{fmt}", f"items.{fmt}"])
    assert summary["rows"] == {"items": 200, "interactions": 2000}
    assert summary["files"]["interactions"] == str(tmp_path / f"interactions.{fmt}")

    interactions = decoded(tmp_path / f"interactions.{fmt}", fmt, "interactions")
    assert interactions.num_rows == 2000
    result = validate(interactions, "interactions", VCFG)
    assert result.reason_counts == summary["invalid"]
    assert set(summary["invalid"]) == set(synthetic.INTERACTION_REASONS)
    assert sum(summary["invalid"].values()) == 100
    assert deduplicate_events(result.valid)[1] == summary["duplicates"] > 0

    catalog = validate(decoded(tmp_path / f"items.{fmt}", fmt, "items"), "items", VCFG)
    assert catalog.rejected.num_rows == 0 and catalog.valid.num_rows == 200


def test_every_format_carries_the_same_rows(tmp_path, capsys):
    valid = {}
    for fmt in ("parquet", "csv", "json", "ndjson"):
        assert run_generate(capsys, "--out", str(tmp_path / fmt), "--format", fmt, *SIZES,
                            "--dirty-fraction", "0.05")[0] == 0
        rows = validate(decoded(tmp_path / fmt / f"interactions.{fmt}", fmt, "interactions"), "interactions", VCFG)
        valid[fmt] = rows.valid
        items = validate(decoded(tmp_path / fmt / f"items.{fmt}", fmt, "items"), "items", VCFG).valid
        assert items.equals(validate(synthetic.generate_items(
            synthetic.SyntheticConfig(users=300, items=200, seed=9)), "items", VCFG).valid)
    assert valid["parquet"].num_rows == 2000 - 100
    for fmt in ("csv", "json", "ndjson"):
        assert valid[fmt].equals(valid["parquet"]), fmt


def test_clean_parquet_is_typed_and_chunked_into_row_groups(tmp_path, capsys):
    code, out = run_generate(capsys, "--out", str(tmp_path), *SIZES, "--chunk-rows", "700")
    assert code == 0
    assert "wrote 2,000 interactions and 200 items" in out.out and "invalid" not in out.out
    parquet = pq.ParquetFile(tmp_path / "interactions.parquet")
    assert parquet.metadata.num_row_groups == 3
    assert parquet.schema_arrow.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert parquet.schema_arrow.field("rating").type == pa.float64()
    table = parquet.read()
    expected = synthetic.generate_interactions(synthetic.SyntheticConfig(
        users=300, items=200, interactions=2000, seed=9))
    assert table.equals(expected)


def test_same_seed_same_bytes(tmp_path, capsys):
    for name in ("a", "b"):
        assert run_generate(capsys, "--out", str(tmp_path / name), "--format", "csv", *SIZES,
                            "--dirty-fraction", "0.1")[0] == 0
    for name in ("interactions.csv", "items.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert run_generate(capsys, "--out", str(tmp_path / "c"), "--format", "csv", *SIZES[:-1], "10")[0] == 0
    assert (tmp_path / "c" / "interactions.csv").read_bytes() != (tmp_path / "a" / "interactions.csv").read_bytes()


def test_end_and_days_set_the_window(tmp_path, capsys):
    assert run_generate(capsys, "--out", str(tmp_path), *SIZES, "--end", "2025-03-01T00:00:00Z", "--days", "7")[0] == 0
    ts = pq.read_table(tmp_path / "interactions.parquet").column("timestamp").to_pylist()
    assert min(ts).isoformat() >= "2025-02-22" and max(ts).isoformat() < "2025-03-01"


@pytest.mark.parametrize("bad, message", [
    (["--users", "0"], "--users must be >= 1, got 0"),
    (["--dirty-fraction", "1.5"], "--dirty-fraction must be < 1.0, got 1.5"),
    (["--end", "soon"], "--end: input should be a valid datetime"),
])
def test_invalid_arguments_exit_2_naming_the_flag(tmp_path, capsys, bad, message):
    code, out = run_generate(capsys, "--out", str(tmp_path), *bad)
    assert code == 2 and out.err.startswith(f"recsys-ray generate: {message}")
    assert "pydantic" not in out.err and "Traceback" not in out.err
    assert not any(tmp_path.iterdir())


def test_future_end_warns(tmp_path, capsys):
    code, out = run_generate(capsys, "--out", str(tmp_path), *SIZES, "--end", "2999-01-01")
    assert code == 0 and "timestamp_out_of_range" in out.err


def test_empty_outputs_are_valid_files(tmp_path, capsys):
    for fmt in ("parquet", "csv", "json", "ndjson"):
        assert run_generate(capsys, "--out", str(tmp_path / fmt), "--format", fmt, "--interactions", "0",
                            "--items", "3")[0] == 0
        path = tmp_path / fmt / f"interactions.{fmt}"
        if fmt == "ndjson":
            assert path.read_bytes() == b""
        else:
            assert decoded(path, fmt, "interactions").num_rows == 0


def test_failed_write_leaves_no_file(tmp_path):
    def chunks():
        yield synthetic.generate_items(synthetic.SyntheticConfig(items=10))
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        generate.write_chunks(str(tmp_path / "items.parquet"), chunks(), "parquet")
    assert list(tmp_path.iterdir()) == []


def test_ndjson_lines_escape_text():
    table = pa.table({
        "title": ['say "hi"', "back\\slash", "two\nlines", "tab\there", "naïve ☕", None],
        "price": [1.5, None, float("nan"), 3.0, 0.0, -2.0],
        "n": pa.array([1, 2, None, 4, 5, 6], pa.int64()),
        "flag": [True, False, None, True, True, False],
    })
    lines = generate.ndjson_lines(table).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["title"] for r in records] == table.column("title").to_pylist()
    assert [r["price"] for r in records] == [1.5, None, None, 3.0, 0.0, -2.0]
    assert [r["n"] for r in records] == [1, 2, None, 4, 5, 6]
    assert [r["flag"] for r in records] == [True, False, None, True, True, False]


def test_taste_options_reach_the_generator(tmp_path, capsys):
    code, out = run_generate(capsys, "--out", str(tmp_path / "a"), *SIZES, "--taste-groups", "3",
                             "--taste-strength", "2.5", "--taste-drift", "0.5", "--json")
    assert code == 0, out.err
    config = json.loads(out.out)["config"]
    assert (config["taste_groups"], config["taste_strength"], config["taste_drift"]) == (3, 2.5, 0.5)
    expected = synthetic.generate_interactions(synthetic.SyntheticConfig(
        users=300, items=200, interactions=2000, seed=9, taste_groups=3, taste_strength=2.5, taste_drift=0.5))
    assert pq.read_table(tmp_path / "a" / "interactions.parquet").equals(expected)
    assert run_generate(capsys, "--out", str(tmp_path / "b"), *SIZES, "--taste-groups", "0")[0] == 0
    independent = pq.read_table(tmp_path / "b" / "interactions.parquet")
    assert independent.equals(synthetic.generate_interactions(synthetic.SyntheticConfig(
        users=300, items=200, interactions=2000, seed=9, taste_groups=0)))
    assert not independent.equals(expected)


@pytest.mark.parametrize("bad", [["--taste-groups", "-1"], ["--taste-strength", "0.5"], ["--taste-drift", "2"]])
def test_invalid_taste_options_exit_2(tmp_path, capsys, bad):
    code, out = run_generate(capsys, "--out", str(tmp_path), *bad)
    assert code == 2 and out.err.startswith(f"recsys-ray generate: {bad[0]} must be ") and "Traceback" not in out.err
