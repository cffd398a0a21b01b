"""Model-ready output of a real build (vocabularies, index columns, the evaluation set and the
manifest's schema statistics), each recomputed independently with pandas from the raw
generated inputs, and identical when the build runs at another parallelism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys_ray.build import build_training_data
from recsys_ray.config import RecsysConfig

POSITIVE = {"click", "like", "add_to_cart", "purchase"}


@pytest.fixture(scope="module")
def raw(demo_build):
    events = pq.read_table(demo_build["inputs"] / "interactions.parquet").to_pandas()
    events = events.drop_duplicates(["user_id", "item_id", "interaction_type", "timestamp", "rating"]).copy()
    events["ts"] = pd.to_datetime(events.timestamp, utc=True, format="mixed")
    catalog = pq.read_table(demo_build["inputs"] / "items.parquet").to_pandas().drop_duplicates("item_id", keep="last")
    cutoff = pd.Timestamp(demo_build["manifest"].cutoff)
    assert demo_build["manifest"].counts.events == len(events)
    return events, catalog, cutoff


def eval_table(version_dir, manifest):
    """The evaluation set's Parquet files, in name order (`eval/` also holds metrics-*.json)."""
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f) for f in sorted((version_dir / manifest.eval.path).glob("*.parquet"))])


def vocabulary(out, column: str) -> pd.DataFrame:
    return pq.read_table(out / "vocab" / f"{column}.parquet").to_pandas()


def expected_vocabulary(counts: pd.Series) -> pd.DataFrame:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))
    return pd.DataFrame({"value": [v for v, _ in ordered], "index": np.arange(2, len(ordered) + 2, dtype=np.int32),
                         "count": np.array([c for _, c in ordered], dtype=np.int64)})


def shard_rows(out, manifest, split: str) -> pd.DataFrame:
    return pd.concat([pq.read_table(out / s.path).to_pandas() for s in manifest.shards[split]], ignore_index=True)


def test_vocabularies_count_training_window_events_in_index_order(demo_build, raw):
    events, catalog, cutoff = raw
    train = events[events.ts < cutoff]
    out = demo_build["out"]
    expected = {"user_id": train.user_id.value_counts(), "item_id": train.item_id.value_counts()}
    with_attributes = train.merge(catalog[["item_id", "category", "brand"]], on="item_id", how="inner")
    for column, attribute in (("item_category", "category"), ("item_brand", "brand")):
        expected[column] = with_attributes[attribute].dropna().value_counts()
    for column, counts in expected.items():
        got = vocabulary(out, column)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), expected_vocabulary(counts), check_dtype=False)
        assert got["index"].min() == 2  # 0 (padding/null) and 1 (out of vocabulary) are reserved, not stored
        index_column = {"user_id": "user_idx", "item_id": "item_idx"}.get(column, f"{column}_idx")
        assert demo_build["manifest"].column(index_column).cardinality == len(got) + 2


def test_index_columns_look_up_the_vocabularies(demo_build):
    out, manifest = demo_build["out"], demo_build["manifest"]
    lookups = {c: dict(zip(vocabulary(out, c).value, vocabulary(out, c)["index"]))
               for c in ("user_id", "item_id", "item_category", "item_brand")}
    index = lambda column, value: 0 if value is None or value != value else lookups[column].get(value, 1)
    for split in ("train", "test"):
        rows = shard_rows(out, manifest, split)
        for column, idx in (("user_id", "user_idx"), ("item_id", "item_idx"), ("item_category", "item_category_idx"),
                            ("item_brand", "item_brand_idx")):
            assert rows[idx].tolist() == [index(column, v) for v in rows[column]], (split, idx)
        assert [list(h) for h in rows.history_item_idx] == [[index("item_id", v) for v in ids]
                                                            for ids in rows.history_item_ids]


def test_evaluation_set_equals_a_brute_force_construction(demo_build, raw):
    events, catalog, cutoff = raw
    out, manifest = demo_build["out"], demo_build["manifest"]
    got = eval_table(out, manifest).to_pandas().set_index("user_id")
    before = events[events.ts < cutoff]
    seen = before.groupby("user_id").item_id.agg(lambda s: sorted(set(s), key=str.encode))
    test_positive = events[(events.ts >= cutoff) & events.interaction_type.isin(POSITIVE)]
    expected = {}
    for user, items in test_positive.groupby("user_id").item_id:
        already = set(seen.get(user, []))
        relevant = sorted(set(items) - already, key=str.encode)
        if relevant:
            expected[user] = relevant
    assert list(got.index) == sorted(expected, key=str.encode) and len(got) == manifest.eval.users  # in user order
    all_items = set(catalog.item_id)
    ever = events.groupby("user_id").item_id.agg(set)
    for user, row in got.iterrows():
        assert list(row.relevant_item_ids) == expected[user]
        assert list(row.seen_item_ids) == seen.get(user, [])
        sampled = list(row.sampled_candidate_ids)
        unseen = all_items - ever[user]
        assert len(sampled) == len(set(sampled)) == min(manifest.eval.sampled_candidates, len(unseen))
        assert set(sampled) <= unseen and sampled == sorted(sampled, key=str.encode)


def test_schema_statistics_are_the_train_splits(demo_build):
    out, manifest = demo_build["out"], demo_build["manifest"]
    train = shard_rows(out, manifest, "train")
    continuous = [c for c in manifest.columns if "continuous" in c.tags]
    assert continuous
    for column in continuous:
        values = train[column.name].astype(float)
        present = values.dropna()
        stats = column.stats
        assert (stats.count, stats.null_count) == (len(present), int(values.isna().sum())), column.name
        assert stats.mean == pytest.approx(present.mean(), rel=1e-9, abs=1e-12), column.name
        assert stats.std == pytest.approx(present.std(ddof=0), rel=1e-6, abs=1e-9), column.name
        assert (stats.min, stats.max) == (present.min(), present.max()), column.name


def test_vocabularies_and_evaluation_set_are_the_same_at_another_parallelism(demo_build, ray_session, tmp_path):
    other = 3 if demo_build["manifest"].parallelism != 3 else 5
    again = build_training_data(RecsysConfig.load(build={**demo_build["build"], "parallelism": other,
                                                         "out": str(tmp_path / "p5")}))
    assert again.parallelism == other
    for name in ("vocab/user_id.parquet", "vocab/item_id.parquet", "vocab/item_category.parquet",
                 "vocab/item_brand.parquet"):
        assert pq.read_table(tmp_path / "p5" / name).equals(pq.read_table(demo_build["out"] / name)), name
    assert eval_table(tmp_path / "p5", again).equals(eval_table(demo_build["out"], demo_build["manifest"]))
    assert again.columns == demo_build["manifest"].columns
