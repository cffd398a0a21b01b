"""Exchange files: each producer's rows of each shard in one file, read back per shard,
named so that a retried producer replaces its own files; through them the rows of a
snapshot split into partitions equal the one-batch reference."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys_ray.build import exchange
from recsys_ray.build.writer import EXCHANGE_DIR
from recsys_ray.io import storage
from recsys_ray.stages import asof, eval_set, features, training_rows
from recsys_ray.stages.split import timestamp_micros
from tests.unit.stages.test_eval_set import cutoff_us as eval_cutoff_us
from tests.unit.stages.test_eval_set import events as eval_events
from tests.unit.stages.test_examples import EVENTS, POSITIVE, UNIFORM
from tests.unit.stages.test_training_rows import CATALOG, options

LOCAL = storage.StorageOptions()


def partitions(events, key, n):
    of = np.array([zlib.crc32(v.encode()) % n for v in events.column(key).to_pylist()])
    return [events.filter(pa.array(of == b)) for b in range(n)]


def exchange_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def test_each_shard_of_a_producer_is_one_file_and_reads_back(tmp_path):
    opts = options(shards={"train": 3, "test": 2})
    rows = training_rows.user_rows(EVENTS, opts)
    parts = exchange.write_parts(rows, kind="users", producer="p0", out=str(tmp_path),
                                 options=LOCAL)
    assert parts.schema == exchange.PARTS
    assert sum(parts["rows"].to_pylist()) == rows.num_rows
    keys = set(zip(rows["split"].to_pylist(), rows["_shard"].to_pylist()))
    assert set(zip(parts["split"].to_pylist(), parts["shard"].to_pylist())) == keys
    assert all(path.startswith(f"{EXCHANGE_DIR}/users/") for path in parts["path"].to_pylist())
    for part in parts.to_pylist():
        back = exchange.read_parts([part["path"]], opts.user_rows_schema, str(tmp_path), LOCAL)
        assert back.num_rows == part["rows"]
        assert set(back["split"].to_pylist()) == {part["split"]} and set(back["_shard"].to_pylist()) == {part["shard"]}
    assert exchange.read_parts([], opts.user_rows_schema, str(tmp_path), LOCAL).num_rows == 0


def test_a_retried_producer_replaces_its_files_and_partitions_never_share_names(tmp_path):
    opts = options()
    first, second = partitions(EVENTS, "user_id", 2)
    written = exchange.user_row_parts(first, options=opts, out=str(tmp_path), storage_options=LOCAL)
    before = exchange_files(tmp_path)
    again = exchange.user_row_parts(first, options=opts, out=str(tmp_path), storage_options=LOCAL)
    assert again.equals(written) and exchange_files(tmp_path) == before
    other = exchange.user_row_parts(second, options=opts, out=str(tmp_path), storage_options=LOCAL)
    assert not set(other["path"].to_pylist()) & set(written["path"].to_pylist())
    assert exchange.producer_name(first.select(["user_id"])) != exchange.producer_name(second.select(["user_id"]))
    assert exchange.user_row_parts(first.slice(0, 0), options=opts, out=str(tmp_path),
                                   storage_options=LOCAL).num_rows == 0


def test_producer_names_come_from_the_smallest_key_of_every_column():
    keys = pa.table({"item_id": ["b", "a", "a"], "_slice": pa.array([0, 2, 1], pa.int32())})
    same_smallest = pa.table({"item_id": ["a", "c"], "_slice": pa.array([1, 0], pa.int32())})
    other_slice = pa.table({"item_id": ["a"], "_slice": pa.array([2], pa.int32())})
    assert exchange.producer_name(keys) == exchange.producer_name(same_smallest)
    assert exchange.producer_name(keys) != exchange.producer_name(other_slice)


def test_shard_plan_groups_files_by_shard_in_order():
    parts = pa.table({"kind": ["items", "users", "users", "users"], "split": ["train", "train", "test", "train"],
                      "shard": pa.array([1, 1, 0, 0], pa.int32()), "path": ["c", "b", "x", "a"],
                      "rows": pa.array([1, 2, 3, 4], pa.int64())}, schema=exchange.PARTS)
    assert exchange.shard_plan(parts) == [
        {"split": "test", "shard": 0, "users": ["x"], "items": [], "eval": [], "item_inputs": []},
        {"split": "train", "shard": 0, "users": ["a"], "items": [], "eval": [], "item_inputs": []},
        {"split": "train", "shard": 1, "users": ["b"], "items": ["c"], "eval": [], "item_inputs": []},
    ]


@pytest.mark.parametrize("feature_time", ["event", "cutoff"])
def test_shards_from_exchange_files_equal_the_one_batch_rows(tmp_path, feature_time):
    opts = options(feature_time, shards={"train": 3, "test": 2})
    out = str(tmp_path)
    user_parts = partitions(EVENTS, "user_id", 3)
    item_partitions = 2 if feature_time == "event" else 0
    metas = [exchange.user_row_parts(p, options=opts, out=out, storage_options=LOCAL,
                                     item_partitions=item_partitions) for p in user_parts]
    item_side = None
    if feature_time == "event":
        first_seen = np.sort(timestamp_micros(asof.user_first_seen(EVENTS).rename_columns(["user_id", "timestamp"])))
        inputs = pa.concat_tables(metas).filter(pc.equal(pa.concat_tables(metas)["kind"], exchange.ITEM_INPUTS))
        item_plan = exchange.shard_plan(inputs)
        assert {entry["split"] for entry in item_plan} == {"items"} and len(item_plan) == 2
        item_metas = [exchange.item_partition_parts(pa.Table.from_pylist([entry]), windows=opts.windows,
                                                    catalog=CATALOG, user_first_seen=first_seen, carry=None, out=out,
                                                    storage_options=LOCAL) for entry in item_plan]
        for path in inputs["path"].to_pylist():
            storage.delete(storage.join(out, path), LOCAL)
        metas = [m.filter(pc.invert(pc.equal(m["kind"], exchange.ITEM_INPUTS))) for m in metas] + item_metas
    else:  # the frozen table of item features as of the cutoff
        partials = training_rows.item_partials_for_partition(EVENTS, windows=opts.windows, **opts.split_kwargs)
        train_users = training_rows.user_features_at_cutoff(EVENTS, windows=(), history=0,
                                                            **opts.split_kwargs).num_rows
        item_side = training_rows.item_side_at_cutoff(features.sum_item_partials(partials), train_users, CATALOG,
                                                      opts.windows)
    vocabs = training_rows.vocabularies_of(EVENTS, CATALOG, opts)
    plan = exchange.shard_plan(pa.concat_tables(metas))
    written, metas = [], []
    for entry in plan:
        meta = exchange.write_shard(pa.Table.from_pylist([entry]), out, LOCAL, opts, item_side, vocabs)
        assert meta.schema == exchange.SHARD_META
        # a retried writer finds its files and writes the same shard
        assert exchange.write_shard(pa.Table.from_pylist([entry]), out, LOCAL, opts, item_side, vocabs).equals(meta)
        others = [e for e in plan if e is not entry]
        exchange.delete_shard_parts(plan, meta, out, LOCAL)  # freed once the shard's result is in
        for path in entry["users"] + entry["items"]:
            assert not (tmp_path / path).exists()
        for other in others[len(metas):]:  # later shards keep theirs
            assert all((tmp_path / path).exists() for path in other["users"] + other["items"])
        written.append(storage.read_table(storage.join(out, meta["path"][0].as_py()), LOCAL))
        metas.append(meta)
    assert not exchange_files(tmp_path / EXCHANGE_DIR)
    result = pa.concat_tables(written)
    assert result.equals(training_rows.one_batch_rows(EVENTS, CATALOG, opts))
    assert pc.sum(pc.equal(result["label"], 1.0)).as_py() > 0
    meta = pa.concat_tables(metas)
    assert meta["rows"].to_pylist() == [t.num_rows for t in written]
    assert meta["positives"].to_pylist() == [pc.sum(t["label"]).as_py() for t in written]


def test_eval_set_in_user_ranges_equals_the_one_batch_set_in_user_order(tmp_path):
    rng = np.random.default_rng(5)
    rows = [(f"u{rng.integers(40):02d}", f"i{rng.integers(40):02d}", str(rng.choice(["view", *POSITIVE])),
             int(rng.integers(0, 60))) for _ in range(400)]
    events = eval_events(rows)
    eval_options = {"cutoff_us": eval_cutoff_us(30), "strategy": "time", "positive_types": POSITIVE,
                    "candidates": UNIFORM, "negatives": 4, "seed": 7}
    whole = eval_set.build_eval_set(events, **eval_options)
    assert whole.num_rows >= 10
    out = str(tmp_path)
    parts = partitions(events, "user_id", 3)
    samples = pa.concat_tables([eval_set.user_sample(p, size=4) for p in parts])
    bounds = eval_set.range_bounds(samples, 3)
    assert bounds
    metas = [exchange.eval_row_parts(p, eval_options=eval_options, bounds=bounds, out=out, storage_options=LOCAL)
             for p in parts]
    plan = exchange.shard_plan(pa.concat_tables(metas))
    assert {entry["split"] for entry in plan} == {"eval"} and all(entry["eval"] for entry in plan)
    written = [exchange.write_eval_file(pa.Table.from_pylist([entry]), out, LOCAL) for entry in plan]
    for entry, meta in zip(plan, written):
        exchange.delete_shard_parts(plan, meta, out, LOCAL)
    assert all(not path.startswith(EXCHANGE_DIR) for path in exchange_files(tmp_path))
    files = sorted(tmp_path.glob("eval/*.parquet"))
    assert [f.name for f in files] == [f"part-{entry['shard']:05d}.parquet" for entry in plan]
    assert sum(meta.column("users")[0].as_py() for meta in written) == whole.num_rows
    assert pa.concat_tables([pq.read_table(f) for f in files]).equals(whole)


def test_item_inputs_meet_by_item_and_slice_whatever_their_user_partition(tmp_path):
    opts = options("event")
    out = str(tmp_path)
    metas = pa.concat_tables([exchange.user_row_parts(p, options=opts, out=out, storage_options=LOCAL,
                                                      item_partitions=3) for p in partitions(EVENTS, "user_id", 3)])
    inputs = metas.filter(pc.equal(metas["kind"], exchange.ITEM_INPUTS))
    assert set(inputs["split"].to_pylist()) == {"items"}
    expected = pa.concat_tables([training_rows.item_events(EVENTS), training_rows.item_queries(EVENTS, opts)])
    assert sum(inputs["rows"].to_pylist()) == expected.num_rows
    seen: dict[str, int] = {}
    for entry in exchange.shard_plan(inputs):
        rows = exchange.read_parts(entry[exchange.ITEM_INPUTS], training_rows.ITEM_SHUFFLE, out, LOCAL)
        assert set(exchange.item_partition_of(rows["item_id"], rows["_slice"], 3).tolist()) == {entry["shard"]}
        for item in rows["item_id"].to_pylist():
            assert seen.setdefault(item, entry["shard"]) == entry["shard"]
    # the same (item, slice) always goes to the same partition, and slices of one item may part
    ids = pa.array(["i1", "i1", "i2", "i1"])
    assert list(exchange.item_partition_of(ids, pa.array([0, 0, 0, 0], pa.int32()), 5)) == \
        list(exchange.item_partition_of(ids, pa.array([None, 0, None, 0], pa.int32()), 5))
    spread = exchange.item_partition_of(pa.array(["hot"] * 40), pa.array(range(40), pa.int32()), 4)
    assert len(set(spread.tolist())) > 1
