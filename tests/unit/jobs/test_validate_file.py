import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray import cli, synthetic
from recsys_ray.config import RecsysConfig
from recsys_ray.jobs import generate, validate_file

CFG = synthetic.SyntheticConfig(users=200, items=100, interactions=1_500, seed=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Clean and dirty interactions plus a catalog, in each format."""
    root = tmp_path_factory.mktemp("files")
    dirty = CFG.model_copy(update={"dirty_fraction": 0.04, "chunk_rows": 600})
    summaries = {}
    for fmt in ("parquet", "csv", "json", "ndjson"):
        generate.write_synthetic(CFG, str(root / "clean" / fmt), fmt)
        summaries[fmt] = generate.write_synthetic(dirty, str(root / "dirty" / fmt), fmt)
    return root, summaries


def run_validate(capsys, *args):
    code = cli.main(["validate", *args])
    return code, capsys.readouterr()


def snapshot(root):
    return sorted((p, p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json", "ndjson"])
def test_clean_file_exits_0(files, capsys, fmt):
    root, _ = files
    code, out = run_validate(capsys, str(root / "clean" / fmt / f"interactions.{fmt}"), "--dataset", "interactions")
    assert code == 0, out.err
    assert "rows             1,500" in out.out
    assert "rejected             0" in out.out
    code, out = run_validate(capsys, str(root / "clean" / fmt / f"items.{fmt}"), "--dataset", "items")
    assert code == 0 and "valid              100" in out.out


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json", "ndjson"])
def test_dirty_file_reports_reasons_duplicates_and_first_errors(files, capsys, fmt):
    root, summaries = files
    before = snapshot(root)
    path = root / "dirty" / fmt / f"interactions.{fmt}"
    code, out = run_validate(capsys, str(path), "--dataset", "interactions", "--json", "--errors", "4")
    assert code == 1, out.err
    report = json.loads(out.out)
    expected = summaries[fmt]
    assert report["rows"] == 1_500
    assert report["rejected_by_reason"] == expected.invalid
    assert report["rejected"] == sum(expected.invalid.values()) == 60
    assert report["valid"] == 1_500 - 60
    assert report["duplicates"] == expected.duplicates == 30
    assert len(report["errors"]) == 4
    assert [e["row"] for e in report["errors"]] == sorted(e["row"] for e in report["errors"])
    assert {"row", "reason", "field", "message", "original"} <= set(report["errors"][0])
    assert snapshot(root) == before, "validate writes nothing"

    code, out = run_validate(capsys, str(path), "--dataset", "interactions")
    assert code == 1
    for reason in synthetic.INTERACTION_REASONS:
        assert reason in out.out
    assert "first 10 rejected row(s)" in out.out and "(1,410 unique; 30 repeated events)" in out.out


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_file_read_in_chunks_counts_like_the_whole_file(files, fmt):
    root, _ = files
    path = str(root / "dirty" / fmt / f"interactions.{fmt}")
    cfg = RecsysConfig(validation={"max_timestamp": "2027-01-01T00:00:00Z"})
    whole = validate_file.validate_file(path, "interactions", cfg, max_errors=1_000)
    batched = validate_file.validate_file(path, "interactions", cfg, max_errors=1_000, chunk_rows=128)
    assert batched == whole
    assert [e["row"] for e in whole.errors] == sorted(e["row"] for e in whole.errors)


def test_format_flag_overrides_the_name(files, capsys, tmp_path):
    root, _ = files
    odd = tmp_path / "events.txt"
    odd.write_bytes((root / "clean" / "csv" / "interactions.csv").read_bytes())
    code, out = run_validate(capsys, str(odd), "--dataset", "interactions")
    assert code == 2 and "--format" in out.err
    code, out = run_validate(capsys, str(odd), "--dataset", "interactions", "--format", "csv")
    assert code == 0, out.err


def test_duplicate_items_are_counted(tmp_path, capsys):
    catalog = synthetic.generate_items(CFG)
    pq.write_table(pa.concat_tables([catalog, catalog.slice(0, 5)]), tmp_path / "items.parquet")
    code, out = run_validate(capsys, str(tmp_path / "items.parquet"), "--dataset", "items", "--json")
    assert code == 0
    assert json.loads(out.out)["duplicates"] == 5


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "no such file"),
        ("garbage.parquet", b"\x00\x01not parquet at all", "not a Parquet file"),
        ("garbage.csv", b"PAR1\x00\x00\x00binary", "binary"),
        ("truncated.json", b'[{"user_id": "u1", ', "not valid JSON"),
        ("empty.csv", b"", "empty"),
        ("wrong.csv", b"item_id,title\ni1,Lamp\n", "user_id"),
    ],
)
def test_unreadable_files_exit_2_with_the_reason(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, out = run_validate(capsys, str(path), "--dataset", "interactions")
    assert code == 2
    assert message in out.err and out.out == ""
    code, out = run_validate(capsys, str(path), "--dataset", "interactions", "--json")
    assert code == 2 and json.loads(out.out)["error"]["code"]


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["validate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0" in text and "1 when some rows" in text and "2 when the file" in text
