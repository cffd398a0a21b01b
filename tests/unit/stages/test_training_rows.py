"""Training rows: labels, negatives and shards with every feature column, in both feature-time modes,
and the build's distributed path (user batches, item batches, shard writers) equal to one batch."""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray import schemas
from recsys_ray.stages import asof, examples, features, heavy, split, training_rows, vocab
from recsys_ray.stages.split import timestamp_micros
from tests.unit.stages import test_asof_properties as brute
from tests.unit.stages.test_examples import CUTOFF_US, EVENTS, POSITIVE, UNIFORM, at

CATALOG = pa.table({"item_id": [f"i{n:02d}" for n in range(20)],
                    "category": [f"c{n % 3}" for n in range(20)],
                    "brand": pa.array([None if n % 4 == 0 else f"b{n % 2}" for n in range(20)], pa.string()),
                    "price": [float(n) for n in range(20)]})


def options(feature_time="event", strategy="time", negatives=3, windows=(7, 30), history=3, shards=None,
            candidates=UNIFORM, cutoff_us=CUTOFF_US, events=EVENTS, catalog=CATALOG):
    """Row options with the vocabularies of `events` and `catalog`."""
    opts = training_rows.RowOptions(cutoff_us=cutoff_us, strategy=strategy, positive_types=POSITIVE,
                                    candidates=candidates, negatives=negatives, seed=42,
                                    shards_per_split=shards or {"train": 2, "test": 1},
                                    feature_time=feature_time, windows=windows, history=history)
    return with_vocabularies(opts, events, catalog)


def with_vocabularies(opts, events, catalog):
    return replace(opts, vocabularies=vocab.lookups(training_rows.vocabularies_of(events, catalog, opts)))


def by_key(table):
    return {(r["user_id"], r["item_id"], r["split"], r["label"], r["timestamp"]): r for r in table.to_pylist()}


def heavy_plan(user_parts, limit):
    """`dataflow.find_heavy_items` without Ray: candidates per batch, histograms, slices."""
    blocks = len(user_parts)
    candidates = pa.concat_tables([heavy.candidate_counts(p, (limit + blocks) // blocks) for p in user_parts])
    ids = tuple(sorted(set(candidates["item_id"].to_pylist())))
    ts = np.concatenate([timestamp_micros(p) for p in user_parts])
    edges = split.bin_edges(int(ts.min()), int(ts.max()))
    histograms = pa.concat_tables([heavy.time_histograms(p, ids, edges) for p in user_parts])
    return heavy.plan_slices(histograms, edges, limit)


def distributed(events, catalog, opts, user_batches=3, item_batches=2, heavy_limit=None):
    """What the build does, without Ray: user batches, then (event mode) a shuffle of events and
    queries by item and slice (one batch a concatenation of blocks that share one schema, as in
    a Ray Data shuffle), heavy items cut into slices of about `heavy_limit` events, each batch's
    rows grouped by shard, then each shard from its groups."""
    def batch_of(values, n):
        return np.array([zlib.crc32(v.encode()) % n for v in values.to_pylist()])

    user_of = batch_of(events.column("user_id"), user_batches)
    user_parts = [events.filter(pa.array(user_of == b)) for b in range(user_batches)]
    vocabs = vocab.vocabularies_from_partitions(
        [vocab.vocab_partials_for_partition(part, **opts.split_kwargs, columns=("user_id",)) for part in user_parts],
        features.sum_item_partials(pa.concat_tables([features.item_partials_for_partition(part, **opts.split_kwargs)
                                                     for part in user_parts])),
        vocab.item_attributes(catalog))
    opts = replace(opts, vocabularies=vocab.lookups(vocabs))
    rows = [training_rows.user_rows(part, opts) for part in user_parts]
    item_rows = []
    if opts.feature_time == "event":
        first_seen = np.sort(np.concatenate([timestamp_micros(asof.user_first_seen(p).rename_columns(
            ["user_id", "timestamp"])) for p in user_parts]))
        carry = None
        if heavy_limit is not None:
            opts = replace(opts, heavy_items=heavy_plan(user_parts, heavy_limit))
            carry = heavy.carry_table(pa.concat_tables([heavy.slice_summaries(p, opts.heavy_items)
                                                        for p in user_parts]), opts.heavy_items)
        pieces = [training_rows.item_events(p, opts.heavy_items) for p in user_parts]
        pieces += [training_rows.item_queries(p, opts) for p in user_parts]

        def routing(p):
            return pc.binary_join_element_wise(p.column("item_id"), pc.cast(p.column("_slice"), pa.string()), "/")

        for b in range(item_batches):
            mine = [p.filter(pa.array(batch_of(routing(p), item_batches) == b)) for p in pieces]
            batch = pa.concat_tables(mine)
            item_rows.append(training_rows.item_rows(batch, windows=opts.windows, catalog=catalog,
                                                     user_first_seen=first_seen, vocabularies=opts.vocabularies,
                                                     carry=carry))
        item_side = None
    else:
        partials = [training_rows.item_partials_for_partition(p, windows=opts.windows, **opts.split_kwargs)
                    for p in user_parts]
        train_users = sum(training_rows.user_features_at_cutoff(p, windows=(), history=0, **opts.split_kwargs).num_rows
                          for p in user_parts)
        item_side = training_rows.indexed_item_side(training_rows.item_side_at_cutoff(
            features.sum_item_partials(pa.concat_tables(partials)), train_users, catalog, opts.windows),
            opts.vocabularies)
    def groups(tables):
        return {(split, shard): part for table in tables for split, shard, part in examples.shard_groups(table)}

    user_groups = [groups([r]) for r in rows]
    item_groups = [groups([r]) for r in item_rows]
    out = []
    for split_name in ("test", "train"):
        for shard in range(opts.shards_per_split[split_name]):
            mine = [g[(split_name, shard)] for g in user_groups if (split_name, shard) in g]
            user_part = pa.concat_tables(mine) if mine else opts.user_rows_schema.empty_table()
            items = item_side
            if item_side is None:
                theirs = [g[(split_name, shard)] for g in item_groups if (split_name, shard) in g]
                items = pa.concat_tables(theirs) if theirs else opts.item_rows_schema.empty_table()
            out.extend(training_rows.finish_shard_chunks(user_part, items, opts, chunk_rows=5))
    return pa.concat_tables(out)


# cutoff mode: today's features, as of the cutoff


def test_cutoff_mode_rows_carry_training_window_features():
    result = training_rows.one_batch_rows(EVENTS, CATALOG, options("cutoff"))
    assert result.schema == schemas.training_schema((7, 30), 3)
    rows = result.to_pylist()
    u0 = [r for r in rows if r["user_id"] == "u0"]
    # u0's training window: view i00 (0), click i01 (1), view zz (2), purchase i01 (5); the like at the cutoff is test.
    assert {r["user_total_interactions"] for r in u0} == {4}
    assert {r["user_n_like"] for r in u0} == {0}
    assert {r["user_last_ts"] for r in u0} == {at(5)}
    assert [r["user_recency_days"] for r in u0] == [pytest.approx(5 / (24 * 60))] * len(u0)
    assert {tuple(r["history_item_ids"]) for r in u0} == {("i01", "zz", "i01")}
    assert {tuple(r["history_interaction_types"]) for r in u0} == {("click", "view", "purchase")}
    assert {r["user_events_7d"] for r in u0} == {4}
    i06 = [r for r in rows if r["item_id"] == "i06" and r["label"] == 1.0]
    assert {r["item_n_purchase"] for r in i06} == {1} and {r["item_n_click"] for r in i06} == {0}
    assert {(r["item_category"], r["item_brand"], r["item_price"]) for r in i06} == {("c0", "b0", 6.0)}
    # i18 and i19 are only negatives of u4; their one training event is u5's view.
    rare = [r for r in rows if r["item_id"] in ("i18", "i19")]
    assert rare and all(r["item_total_interactions"] == 1 and r["item_n_view"] == 1 for r in rare)


def test_cutoff_mode_user_columns_are_the_feature_tables():
    opts = options("cutoff")
    result = training_rows.one_batch_rows(EVENTS, None, opts)
    per_user = training_rows.user_features_at_cutoff(EVENTS, windows=(7, 30), history=3, **opts.split_kwargs)
    table = {r["user_id"]: r for r in per_user.to_pylist()}
    base = {r["user_id"]: r for r in features.user_features(
        EVENTS.filter(pc.less(EVENTS["timestamp"], pa.scalar(at(10), schemas.TIMESTAMP))), CUTOFF_US).to_pylist()}
    for row in result.to_pylist():
        expected = table.get(row["user_id"])
        if expected is None:
            assert row["user_total_interactions"] is None
            continue
        assert all(row[name] == value for name, value in expected.items())
        assert all(row[name] == value for name, value in base[row["user_id"]].items())
        assert row["item_category"] is None  # no catalog


def test_cutoff_mode_user_with_only_test_events_is_cold():
    table = brute.event_table([("late", "i01", "click", CUTOFF_US + 5, None), ("early", "i02", "click", 1, None)])
    candidates = examples.make_candidates(pa.array(["i01", "i02", "i03"]), None, "uniform", 0.75)
    result = training_rows.one_batch_rows(table, None, options("cutoff", negatives=1, candidates=candidates)).to_pylist()
    late = [r for r in result if r["user_id"] == "late"]
    assert len(late) == 2 and all(r["split"] == "test" for r in late)
    assert all(r["user_total_interactions"] is None and r["history_item_ids"] is None for r in late)
    assert all(r["user_total_interactions"] == 1 for r in result if r["user_id"] == "early")


def test_cutoff_mode_leave_last_out():
    result = training_rows.one_batch_rows(EVENTS, None, options("cutoff", strategy="leave_last_out", negatives=2))
    positives = {(r["user_id"], r["item_id"], r["split"]) for r in result.to_pylist() if r["label"] == 1.0}
    assert positives == {
        ("u0", "i01", "train"), ("u0", "i02", "test"),
        ("u1", "i03", "train"), ("u1", "i04", "test"),
        ("u2", "i06", "train"), ("u2", "i07", "train"), ("u2", "i06", "test"),
        ("u4", "i00", "train"),   # a single positive: stays in training
        ("u5", "i10", "train"),
    }


# event mode: every row as of its own time


def test_event_mode_rows_leave_out_their_own_event():
    rows = training_rows.one_batch_rows(EVENTS, CATALOG, options()).to_pylist()
    positive = [r for r in rows if r["user_id"] == "u0" and r["item_id"] == "i01" and r["label"] == 1.0]
    # u0's latest positive on i01 is the purchase at minute 5: view i00, click i01, view zz came before.
    assert len(positive) == 1 and positive[0]["user_total_interactions"] == 3
    assert positive[0]["history_item_ids"] == ["i00", "i01", "zz"]
    assert positive[0]["item_n_click"] == 1 and positive[0]["item_n_purchase"] == 0  # not its own purchase
    negatives = [r for r in rows if r["user_id"] == "u0" and r["label"] == 0.0 and r["timestamp"] == at(5)]
    assert len(negatives) == 3 and {r["user_total_interactions"] for r in negatives} == {3}
    early = [r for r in rows if r["user_id"] == "u1" and r["timestamp"] == at(2)]
    assert early and all(r["user_total_interactions"] == 0 and r["history_item_ids"] == [] for r in early)


@pytest.mark.parametrize("seed", range(60))
def test_event_mode_rows_equal_a_per_row_recomputation(seed):
    rng = random.Random(seed)
    events_rows, _, _ = brute.random_snapshot(rng)
    events_rows = [r for r in events_rows if r[0] != "nobody"]
    if not events_rows:
        return
    table = brute.event_table(events_rows)
    items = sorted({r[1] for r in events_rows} | {"i7", "i8"})
    candidates = examples.make_candidates(pa.array(items), None, "uniform", 0.75)
    cutoff = sorted(r[3] for r in events_rows)[len(events_rows) * 3 // 4]
    opts = options(windows=brute.WINDOWS, history=brute.HISTORY, candidates=candidates, cutoff_us=cutoff,
                   negatives=2, shards={"train": 2, "test": 2})
    catalog = brute.CATALOG
    result = training_rows.one_batch_rows(table, catalog, opts)
    assert result.schema == schemas.training_schema(brute.WINDOWS, brute.HISTORY)
    for row in brute.as_rows(result):
        t = int(pc.cast(pc.cast(pa.scalar(row["timestamp"], schemas.TIMESTAMP), pa.timestamp("us")),
                        pa.int64()).as_py())
        expected = {**brute.expected_user(events_rows, row["user_id"], t),
                    **brute.expected_item(events_rows, row["item_id"], t)}
        for name, value in expected.items():
            got = row[name]
            if isinstance(value, float) and got is not None:
                assert math.isclose(got, value, rel_tol=0, abs_tol=0) or got == value, (name, row)
            else:
                assert got == value, (name, got, value, row)
    assert distributed(table, catalog, opts).equals(result)
    for limit in (1, 3):  # every item with more events cut into slices, windows across them
        assert distributed(table, catalog, opts, heavy_limit=limit).equals(result), limit


# the distributed path


@pytest.mark.parametrize("feature_time", ["event", "cutoff"])
@pytest.mark.parametrize("strategy", ["time", "leave_last_out"])
def test_user_batches_item_batches_and_shards_equal_one_batch(feature_time, strategy):
    opts = options(feature_time, strategy=strategy)
    whole = training_rows.one_batch_rows(EVENTS, CATALOG, opts)
    assert whole.num_rows > 30
    for user_batches, item_batches in ((1, 1), (3, 2), (6, 5)):
        assert distributed(EVENTS, CATALOG, opts, user_batches, item_batches).equals(whole)
        if feature_time == "event":
            for limit in (1, 2, 4):
                assert distributed(EVENTS, CATALOG, opts, user_batches, item_batches, heavy_limit=limit).equals(whole)


def test_a_planted_event_at_or_after_a_rows_time_changes_nothing_in_that_row():
    opts = options()
    before = by_key(training_rows.one_batch_rows(EVENTS, CATALOG, opts))
    # u2's click on i06 at minute 11 is a test positive. Plant views of items the users have already
    # seen (so no negative changes) at exactly that time and later, on u2, on i06, and on u1, whose
    # positive at minute 12 must see them.
    t = at(11)
    t_us = int(t.timestamp() * 1e6)
    planted = brute.event_table([("u2", "i07", "view", t_us, 5.0), ("u2", "i06", "view", t_us + 60_000_000, 1.0),
                                 ("u4", "i06", "view", t_us, None), ("u1", "i03", "view", t_us, None)])
    plain = EVENTS.drop_columns(["event_id"])
    after = by_key(training_rows.one_batch_rows(pa.concat_tables([plain, planted.cast(plain.schema)]), CATALOG, opts))
    touched = [k for k in before if k[0] in ("u1", "u2", "u4") or k[1] == "i06"]
    assert any(k[4] == t for k in touched)
    for key in touched:
        if key[4] <= t:
            assert after[key] == before[key], key
    assert any(after[k] != before[k] for k in before if k[4] > t and k in after), "later rows do see the events"


def test_item_rows_of_a_batch_without_queries_or_without_events():
    opts = options()
    only_events = training_rows.item_events(EVENTS)
    empty = training_rows.item_rows(only_events, windows=(7, 30), catalog=None, user_first_seen=np.array([0]),
                                    vocabularies=opts.vocabularies)
    assert empty.num_rows == 0 and empty.schema == opts.item_rows_schema
    queries = training_rows.item_queries(EVENTS, opts)
    cold = training_rows.item_rows(queries, windows=(7, 30), catalog=CATALOG, user_first_seen=np.array([0]),
                                   vocabularies=opts.vocabularies)
    assert cold.num_rows == queries.num_rows
    assert set(cold["item_total_interactions"].to_pylist()) == {0}
    assert cold["item_category"].null_count < cold.num_rows


def test_shard_chunks_join_slices_to_the_whole_shard():
    opts = options()
    rows = training_rows.user_rows(EVENTS, opts)
    part = rows.filter(pc.equal(rows["split"], "train"))
    first_seen = np.sort(timestamp_micros(asof.user_first_seen(EVENTS).rename_columns(["user_id", "timestamp"])))
    items = training_rows.item_rows(pa.concat_tables([training_rows.item_events(EVENTS),
                                                      training_rows.item_queries(EVENTS, opts)]),
                                    windows=opts.windows, catalog=CATALOG, user_first_seen=first_seen,
                                    vocabularies=opts.vocabularies)
    whole = pa.concat_tables(training_rows.finish_shard_chunks(part, items, opts))
    chunks = list(training_rows.finish_shard_chunks(part, items, opts, chunk_rows=7))
    assert [c.num_rows for c in chunks][:-1] == [7] * (len(chunks) - 1)
    assert pa.concat_tables(chunks).equals(whole) and whole.num_rows == part.num_rows
    assert whole["item_total_interactions"].null_count == 0
    empty = list(training_rows.finish_shard_chunks(part.slice(0, 0), items, opts))
    assert len(empty) == 1 and empty[0].num_rows == 0 and empty[0].schema == opts.schema


def test_index_columns_agree_with_the_vocabularies():
    opts = options()
    rows = training_rows.one_batch_rows(EVENTS, CATALOG, opts)
    vocabs = training_rows.vocabularies_of(EVENTS, CATALOG, opts)
    index = {column: dict(zip(v["value"].to_pylist(), v["index"].to_pylist())) for column, v in vocabs.items()}
    for row in rows.to_pylist():
        assert row["user_idx"] == index["user_id"].get(row["user_id"], 1)
        assert row["item_idx"] == index["item_id"].get(row["item_id"], 1)
        category = row["item_category"]
        assert row["item_category_idx"] == (0 if category is None else index["item_category"].get(category, 1))
        assert row["history_item_idx"] == [index["item_id"].get(i, 1) for i in row["history_item_ids"]]
    # items with no training event (only test events, or only drawn as negatives) map to 1
    test_only_items = {r["item_id"] for r in rows.to_pylist()} - set(index["item_id"])
    assert all(r["item_idx"] == 1 for r in rows.to_pylist() if r["item_id"] in test_only_items)
