"""The batch build on a real local Ray instance, on local disk and on S3 (moto).

Property checks compare the build's output with independent pandas
computations on the same input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray import schemas
from recsys_ray.build import BuildError, build_training_data, dataflow
from recsys_ray.config import RecsysConfig
from recsys_ray.io.formats import InputError

POSITIVE = {"click", "like", "add_to_cart", "purchase"}
BASE_TS = 1_700_000_000


def make_events(n=3000, users=80, items=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": [f"u{i:03d}" for i in rng.integers(0, users, n)],
        "item_id": [f"i{i:03d}" for i in rng.integers(0, items, n)],
        "interaction_type": rng.choice(["view", "click", "like", "add_to_cart", "purchase"], n,
                                       p=[0.5, 0.25, 0.12, 0.05, 0.08]),
        "timestamp": BASE_TS + rng.integers(0, 90 * 86400, n),
        "rating": np.where(rng.random(n) < 0.3, rng.integers(1, 6, n).astype(float), np.nan),
    })


def write_inputs(directory: Path, events: pd.DataFrame, n_items=60) -> tuple[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    inter = directory / "interactions.parquet"
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), inter)
    items = directory / "items.csv"
    pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(n_items)],
                  "title": [f"Item {i}" for i in range(n_items)],
                  "price": np.linspace(1, 50, n_items)}).to_csv(items, index=False)
    return str(inter), str(items)


def build(ray_session, out, **build):
    cfg = RecsysConfig.load(build={"out": str(out), "version": "v1", **build})
    context = ray_session.data.DataContext.get_current()
    before = {name: getattr(context, name) for name in dataflow.TUNED_CONTEXT_FIELDS}
    manifest = build_training_data(cfg)
    # The build's Ray Data tuning does not leak into the caller's process.
    assert {name: getattr(context, name) for name in dataflow.TUNED_CONTEXT_FIELDS} == before
    return manifest


def read_split(out, manifest, name) -> pd.DataFrame:
    frames = [pq.read_table(os.path.join(str(out), s.path)).to_pandas() for s in manifest.shards[name]]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def built(ray_session, tmp_path_factory):
    base = tmp_path_factory.mktemp("build")
    events = make_events()
    inter, items = write_inputs(base / "in", events)
    out = base / "out"
    manifest = build(ray_session, out, interactions=inter, items=items, seed=7, shards=3)
    return events, manifest, out, inter, items


def test_manifest_is_complete(built):
    events, manifest, out, *_ = built
    on_disk = json.loads((out / "manifest.json").read_text())
    for key in ("version", "created_at", "config", "cutoff", "inputs", "counts", "shards", "features", "schema"):
        assert key in on_disk
    assert on_disk["config"]["seed"] == 7 and on_disk["config"]["negatives"] == 4
    assert on_disk["inputs"]["interactions"][0]["size"] > 0
    assert [f["name"] for f in on_disk["schema"]] == schemas.TRAINING.names
    assert len(on_disk["shards"]["train"]) == 3
    for split in ("train", "test"):
        for shard in on_disk["shards"][split]:
            assert pq.read_metadata(out / shard["path"]).num_rows == shard["rows"]
    assert (out / "features" / "items.parquet").exists()
    assert list((out / "features" / "users").glob("*.parquet"))


def test_row_accounting(built):
    events, manifest, *_ = built
    c = manifest.counts.model_dump()
    assert c["input_rows"] == len(events)
    assert c["valid"] + sum(c["rejected"].values()) == c["input_rows"]
    assert c["events"] + c["duplicates"] == c["valid"]
    expected_dups = events.duplicated(["user_id", "item_id", "interaction_type", "timestamp"]).sum()
    assert c["duplicates"] == expected_dups


def test_positives_are_exactly_the_expected_set(built):
    events, manifest, out, *_ = built
    e = events.drop_duplicates(["user_id", "item_id", "interaction_type", "timestamp"])
    cutoff = pd.Timestamp(manifest.cutoff).timestamp()
    e = e.assign(split=np.where(e.timestamp >= cutoff, "test", "train"))
    expected = (e[e.interaction_type.isin(POSITIVE)].groupby(["user_id", "item_id", "split"]).timestamp.max()
                .reset_index())
    rows = pd.concat([read_split(out, manifest, "train"), read_split(out, manifest, "test")])
    got = rows[rows.label == 1][["user_id", "item_id", "split", "timestamp"]]
    got = got.assign(timestamp=got.timestamp.astype("int64") // 10**6)
    merged = expected.merge(got, on=["user_id", "item_id", "split"], how="outer", indicator=True)
    assert (merged._merge == "both").all()
    assert (merged.timestamp_x == merged.timestamp_y).all()


def test_negatives_never_seen_distinct_and_k_per_positive(built):
    events, manifest, out, *_ = built
    rows = pd.concat([read_split(out, manifest, "train"), read_split(out, manifest, "test")])
    seen = set(zip(events.user_id, events.item_id))
    negatives = rows[rows.label == 0]
    assert not any((u, i) in seen for u, i in zip(negatives.user_id, negatives.item_id))
    assert rows.label.dtype == np.float32
    # each positive owns K negatives with its timestamp and split; distinct within the positive
    positives = rows[rows.label == 1]
    per_key = negatives.groupby(["user_id", "split", "timestamp"]).item_id.agg(["count", "nunique"])
    pos_per_key = positives.groupby(["user_id", "split", "timestamp"]).size()
    joined = per_key.join(pos_per_key.rename("positives"), how="outer").fillna(0)
    assert (joined["count"] == 4 * joined["positives"]).all()
    assert manifest.counts.negative_shortfall == 0
    assert manifest.counts.train_negatives == 4 * manifest.counts.train_positives


def test_features_match_a_reference_and_come_from_the_training_window(built):
    events, manifest, out, *_ = built
    e = events.drop_duplicates(["user_id", "item_id", "interaction_type", "timestamp"])
    cutoff = pd.Timestamp(manifest.cutoff).timestamp()
    train = e[e.timestamp < cutoff]
    users = pq.read_table(out / "features" / "users").to_pandas().set_index("user_id")
    ref = train.groupby("user_id").agg(total=("item_id", "size"), unique=("item_id", "nunique"),
                                       rating=("rating", "mean"), last=("timestamp", "max"))
    ref["days"] = train.assign(day=train.timestamp // 86400).groupby("user_id").day.nunique()
    ref["purchases"] = train[train.interaction_type == "purchase"].groupby("user_id").size()
    ref = ref.fillna({"purchases": 0})
    assert set(users.index) == set(ref.index)
    joined = users.join(ref)
    assert (joined.user_total_interactions == joined.total).all()
    assert (joined.user_unique_items == joined.unique).all()
    assert (joined.user_days_active == joined.days).all()
    assert np.allclose(joined.user_purchase_rate, joined.purchases / joined.total)
    assert np.allclose(joined.user_avg_rating.astype(float), joined.rating, equal_nan=True)
    assert np.allclose(joined.user_recency_days, (cutoff - joined["last"]) / 86400)
    items = pq.read_table(out / "features" / "items.parquet").to_pandas().set_index("item_id")
    item_ref = train.groupby("item_id").agg(users=("user_id", "nunique"), total=("user_id", "size"))
    assert (items.item_unique_users == item_ref.users.loc[items.index]).all()
    assert np.allclose(items.item_popularity, item_ref.users.loc[items.index] / train.user_id.nunique())
    views = train[train.interaction_type == "view"].groupby("item_id").size()
    clicks = train[train.interaction_type == "click"].groupby("item_id").size()
    ctr = (clicks / views).reindex(items.index)
    assert np.allclose(items.item_ctr.astype(float), ctr, equal_nan=True)


@pytest.fixture(scope="module")
def built_at_cutoff(built, ray_session, tmp_path_factory):
    _, _, _, inter, items = built
    out = tmp_path_factory.mktemp("build-cutoff") / "out"
    return build(ray_session, out, interactions=inter, items=items, seed=7, shards=3, feature_time="cutoff"), out


def test_cutoff_mode_rows_carry_the_feature_tables(built_at_cutoff):
    manifest, out = built_at_cutoff
    assert manifest.config["feature_time"] == "cutoff"
    rows = pd.concat([read_split(out, manifest, "train"), read_split(out, manifest, "test")])
    assert list(rows.columns) == schemas.TRAINING.names
    users = pq.read_table(out / "features" / "users").to_pandas().set_index("user_id")
    items = pq.read_table(out / "features" / "items.parquet").to_pandas().set_index("item_id")
    user_cols = [c for c in users.columns]
    item_cols = [c for c in items.columns]
    known_users = rows[rows.user_id.isin(users.index)]
    assert len(known_users) > 0.8 * len(rows)
    for _, row in known_users.sample(200, random_state=1).iterrows():
        expected = users.loc[row.user_id]
        for name in user_cols:
            if name.startswith("history_"):
                assert list(row[name]) == list(expected[name]), name
            elif pd.isna(expected[name]):
                assert pd.isna(row[name]), name
            else:
                assert row[name] == expected[name], name
    for _, row in rows[rows.item_id.isin(items.index)].sample(200, random_state=2).iterrows():
        expected = items.loc[row.item_id]
        for name in item_cols:
            assert (pd.isna(row[name]) and pd.isna(expected[name])) or row[name] == expected[name], name


def test_rows_are_shuffled_across_shards(built):
    _, manifest, out, *_ = built
    # every shard mixes many users, and rows are not grouped by user
    for shard in manifest.shards["train"]:
        frame = pq.read_table(out / shard.path).to_pandas()
        assert frame.user_id.nunique() > 10
        assert (frame.user_id != frame.user_id.shift()).mean() > 0.5


def recompute_row(e: pd.DataFrame, catalog: pd.DataFrame, row) -> dict:
    """A row's features recomputed from the raw events strictly before its time."""
    t = row.timestamp.timestamp()
    before = e[e.timestamp < t]
    mine = before[before.user_id == row.user_id].sort_values(["timestamp", "item_id", "interaction_type"])
    item = before[before.item_id == row.item_id]
    views, clicks = (item.interaction_type == "view").sum(), (item.interaction_type == "click").sum()
    return {
        "user_total_interactions": len(mine),
        "user_unique_items": mine.item_id.nunique(),
        "user_n_click": (mine.interaction_type == "click").sum(),
        "user_days_active": (mine.timestamp // 86400).nunique(),
        "user_events_7d": (mine.timestamp >= t - 7 * 86400).sum(),
        "user_events_30d": (mine.timestamp >= t - 30 * 86400).sum(),
        "history_item_ids": list(mine.item_id[-20:]),
        "history_interaction_types": list(mine.interaction_type[-20:]),
        "item_total_interactions": len(item),
        "item_unique_users": item.user_id.nunique(),
        "item_n_view": views,
        "item_ctr": clicks / views if views else None,
        "item_popularity": item.user_id.nunique() / before.user_id.nunique() if len(before) else None,
        "item_events_7d": (item.timestamp >= t - 7 * 86400).sum(),
        "item_price": catalog.price.get(row.item_id),
    }


def assert_rows_equal_recomputation(rows: pd.DataFrame, events: pd.DataFrame, catalog: pd.DataFrame) -> None:
    """Every feature of every row equals `recompute_row` from the de-duplicated raw events."""
    for _, row in rows.iterrows():
        for name, value in recompute_row(events, catalog, row).items():
            got = row[name]
            if isinstance(value, list):
                assert list(got) == value, name
            elif value is None:
                assert pd.isna(got), name
            else:
                assert got == pytest.approx(value, rel=1e-12), (name, got, value)


def test_event_mode_rows_equal_a_recomputation_from_the_raw_events(built):
    events, manifest, out, _, items = built
    assert manifest.config["feature_time"] == "event"
    e = events.drop_duplicates(["user_id", "item_id", "interaction_type", "timestamp"])
    catalog = pd.read_csv(items).set_index("item_id")
    rows = pd.concat([read_split(out, manifest, "train"), read_split(out, manifest, "test")])
    assert_rows_equal_recomputation(rows.sample(300, random_state=5), e, catalog)


def test_events_at_or_after_a_rows_time_change_nothing_in_that_row(built, ray_session, tmp_path):
    events, manifest, out, _, items = built
    rows = read_split(out, manifest, "train")
    cutoff = manifest.cutoff.isoformat()
    # Plant, for some rows' users and items, views of items they already saw at exactly the row's
    # time and a second later: no positive and no seen set changes, only what comes at or after t.
    chosen = rows[rows.label == 1].sample(15, random_state=3)
    seen = events.groupby("user_id").item_id.first()
    planted = []
    for _, row in chosen.iterrows():
        t = int(row.timestamp.timestamp())
        # a user who used the item before t: their first event, and so every users-before count, stays
        earlier = events[(events.item_id == row.item_id) & (events.timestamp < t)].user_id
        for dt in (0, 1):
            planted.append((row.user_id, seen[row.user_id], "view", t + dt, np.nan))
            if len(earlier):
                planted.append((earlier.iloc[0], row.item_id, "view", t + dt, np.nan))
    more = pd.concat([events, pd.DataFrame(planted, columns=events.columns)], ignore_index=True)
    inter_b, _ = write_inputs(tmp_path / "b", more)
    before = build(ray_session, tmp_path / "a", interactions=built[3], items=items, seed=7, shards=3, cutoff=cutoff)
    after = build(ray_session, tmp_path / "b-out", interactions=inter_b, items=items, seed=7, shards=3,
                  cutoff=cutoff)
    key = ["user_id", "item_id", "split", "label", "timestamp"]
    a = pd.concat([read_split(tmp_path / "a", before, s) for s in ("train", "test")]).set_index(key).sort_index()
    b = pd.concat([read_split(tmp_path / "b-out", after, s) for s in ("train", "test")]).set_index(key).sort_index()
    assert a.index.equals(b.index)
    touched = {p[0] for p in planted} | {p[1] for p in planted}
    changed = 0
    for (user, item, split, label, ts), row in a.iterrows():
        if user not in touched and item not in touched:
            continue
        other = b.loc[(user, item, split, label, ts)]
        times = [p[3] for p in planted if p[0] == user or p[1] == item]
        # Vocabulary indices are not features: training-window counts order them, so they may move.
        same = all(np.array_equal(row[c], other[c]) if isinstance(row[c], np.ndarray)
                   else (pd.isna(row[c]) and pd.isna(other[c])) or row[c] == other[c]
                   for c in a.columns if not c.endswith("_idx"))
        if ts.timestamp() <= min(times):
            assert same, (user, item, ts)
        changed += not same
    assert changed > 0, "rows after the planted events see them"


def test_identical_output_at_two_parallelisms(built, ray_session, tmp_path):
    events, manifest, out, inter, items = built
    other = tmp_path / "p5"
    again = build(ray_session, other, interactions=inter, items=items, seed=7, shards=3, parallelism=5)
    assert again.parallelism == 5 and manifest.parallelism != 5
    assert again.counts == manifest.counts
    for split in ("train", "test"):
        for a, b in zip(manifest.shards[split], again.shards[split]):
            assert pq.read_table(out / a.path).equals(pq.read_table(other / b.path))
    # a different seed draws different negatives
    third = build(ray_session, tmp_path / "seed8", interactions=inter, items=items, seed=8, shards=3)
    neg = lambda m, o: set(map(tuple, read_split(o, m, "train").query("label == 0")[["user_id", "item_id"]].values))
    assert neg(third, tmp_path / "seed8") != neg(manifest, out)


def test_planted_future_event_changes_no_train_feature(ray_session, tmp_path):
    events = make_events(seed=3)
    inter, items = write_inputs(tmp_path / "a", events)
    first = build(ray_session, tmp_path / "out_a", interactions=inter, items=items, cutoff="2023-12-15T00:00:00Z")
    planted = pd.concat([events, pd.DataFrame({
        "user_id": ["u001"] * 20, "item_id": ["i002"] * 20, "interaction_type": ["purchase"] * 20,
        "timestamp": BASE_TS + 89 * 86400 + np.arange(20), "rating": [5.0] * 20})])
    inter_b, _ = write_inputs(tmp_path / "b", planted)
    second = build(ray_session, tmp_path / "out_b", interactions=inter_b, items=items,
                   cutoff="2023-12-15T00:00:00Z")
    cols = [c for c in schemas.TRAINING.names if c.startswith(("user_", "item_")) and c not in ("user_id", "item_id")]
    a = read_split(tmp_path / "out_a", first, "train").sort_values(["user_id", "item_id", "label", "timestamp"])
    b = read_split(tmp_path / "out_b", second, "train").sort_values(["user_id", "item_id", "label", "timestamp"])
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))
    ua = pq.read_table(tmp_path / "out_a" / "features" / "users").to_pandas().sort_values("user_id")
    ub = pq.read_table(tmp_path / "out_b" / "features" / "users").to_pandas().sort_values("user_id")
    pd.testing.assert_frame_equal(ua.reset_index(drop=True), ub.reset_index(drop=True))
    assert second.counts.test_positives >= first.counts.test_positives


def test_leave_last_out_split_through_the_build(ray_session, tmp_path):
    """Each user with two or more positives has their latest positive (and anything
    at or after it) in test; features see only each user's training events; the
    output does not depend on parallelism."""
    events = make_events(n=2500, users=60, items=50, seed=11)
    inter, items = write_inputs(tmp_path / "in", events, n_items=50)
    manifest = build(ray_session, tmp_path / "out", interactions=inter, items=items, seed=3,
                     split_strategy="leave_last_out", shards=2, parallelism=3)
    assert manifest.split_strategy == "leave_last_out"

    e = events.drop_duplicates(["user_id", "item_id", "interaction_type", "timestamp"])
    pos = e[e.interaction_type.isin(POSITIVE)]
    per_user = pos.groupby("user_id").timestamp.agg(["max", "size"])
    user_cutoff = per_user["max"].where(per_user["size"] >= 2).reindex(e.user_id.unique())
    e = e.assign(split=np.where(e.timestamp >= e.user_id.map(user_cutoff).fillna(np.inf), "test", "train"))
    assert (e.split == "test").any() and (e.split == "train").any()
    expected = (e[e.interaction_type.isin(POSITIVE)].groupby(["user_id", "item_id", "split"]).timestamp.max()
                .reset_index())

    out = tmp_path / "out"
    rows = pd.concat([read_split(out, manifest, "train"), read_split(out, manifest, "test")])
    got = rows[rows.label == 1][["user_id", "item_id", "split", "timestamp"]]
    got = got.assign(timestamp=got.timestamp.astype("int64") // 10**6)
    merged = expected.merge(got, on=["user_id", "item_id", "split"], how="outer", indicator=True)
    assert (merged._merge == "both").all() and (merged.timestamp_x == merged.timestamp_y).all()
    # every user with two or more positives has exactly one test positive time
    test_users = set(per_user.index[per_user["size"] >= 2])
    assert set(got[got.split == "test"].user_id) == test_users
    seen = set(zip(events.user_id, events.item_id))
    negatives = rows[rows.label == 0]
    assert not any((u, i) in seen for u, i in zip(negatives.user_id, negatives.item_id))
    assert manifest.counts.negative_shortfall == 0
    assert len(negatives) == 4 * len(got)

    # features from each user's own training window only
    train = e[e.split == "train"]
    users = pq.read_table(out / "features" / "users").to_pandas().set_index("user_id")
    ref = train.groupby("user_id").agg(total=("item_id", "size"), last=("timestamp", "max"))
    assert set(users.index) == set(ref.index)
    joined = users.join(ref)
    assert (joined.user_total_interactions == joined.total).all()
    snapshot_end = pd.Timestamp(manifest.cutoff).timestamp()
    assert snapshot_end > e.timestamp.max()
    assert np.allclose(joined.user_recency_days, (snapshot_end - joined["last"]) / 86400)
    items_table = pq.read_table(out / "features" / "items.parquet").to_pandas().set_index("item_id")
    item_ref = train.groupby("item_id").user_id.nunique()
    assert (items_table.item_unique_users == item_ref.loc[items_table.index]).all()

    again = build(ray_session, tmp_path / "again", interactions=inter, items=items, seed=3,
                  split_strategy="leave_last_out", shards=2, parallelism=2)
    assert again.counts == manifest.counts
    for split in ("train", "test"):
        for a, b in zip(manifest.shards[split], again.shards[split]):
            assert pq.read_table(out / a.path).equals(pq.read_table(tmp_path / "again" / b.path))


def test_rerun_replaces_the_version(built, ray_session, tmp_path):
    events, manifest, out, inter, items = built
    target = tmp_path / "rerun"
    build(ray_session, target, interactions=inter, items=items, shards=4)
    second = build(ray_session, target, interactions=inter, items=items, shards=2)
    files = sorted(p.relative_to(target).as_posix() for p in (target / "train").glob("*.parquet"))
    assert files == [s.path for s in second.shards["train"]] == ["train/part-00000.parquet",
                                                                        "train/part-00001.parquet"]
    assert sum(pq.read_metadata(target / f).num_rows for f in files) == second.counts.train_rows


def test_user_who_has_seen_every_item_does_not_hang(ray_session, tmp_path):
    n_items = 12
    rows = [{"user_id": "greedy", "item_id": f"i{i:03d}", "interaction_type": "click", "timestamp": BASE_TS + i}
            for i in range(n_items)]
    rows += [{"user_id": "almost", "item_id": f"i{i:03d}", "interaction_type": "purchase",
              "timestamp": BASE_TS + 100 + i} for i in range(n_items - 2)]
    rows += [{"user_id": f"other{j}", "item_id": "i000", "interaction_type": "like", "timestamp": BASE_TS + 500 + j}
             for j in range(20)]
    events = pd.DataFrame(rows).assign(rating=np.nan)
    inter, items = write_inputs(tmp_path / "in", events, n_items=n_items)
    manifest = build(ray_session, tmp_path / "out", interactions=inter, items=items, test_fraction=0.2)
    rows_out = pd.concat([read_split(tmp_path / "out", manifest, s) for s in ("train", "test")])
    greedy = rows_out[(rows_out.user_id == "greedy") & (rows_out.label == 0)]
    assert greedy.empty
    almost = rows_out[(rows_out.user_id == "almost") & (rows_out.label == 0)]
    assert set(almost.item_id) == {f"i{n_items - 2:03d}", f"i{n_items - 1:03d}"}
    c = manifest.counts.model_dump()
    expected_short = 4 * 12 + (4 - 2) * 10  # greedy gets none, almost gets 2 of 4 per positive
    assert c["negative_shortfall"] == expected_short


def test_popularity_sampling_prefers_popular_items(ray_session, tmp_path):
    events = make_events(n=4000, users=150, items=60, seed=5)
    # item i000 is used by most users in the training window
    extra = pd.DataFrame({"user_id": [f"u{i:03d}" for i in range(0, 150, 2)], "item_id": "i000",
                          "interaction_type": "view", "timestamp": BASE_TS, "rating": np.nan})
    inter, items = write_inputs(tmp_path / "in", pd.concat([events, extra]))
    uniform = build(ray_session, tmp_path / "u", interactions=inter, items=items, sampling="uniform")
    popular = build(ray_session, tmp_path / "p", interactions=inter, items=items, sampling="popularity",
                    popularity_alpha=1.0)
    def share(m, o):
        neg = read_split(o, m, "train").query("label == 0")
        counts = neg.item_id.value_counts(normalize=True)
        return counts
    pop_items = pq.read_table(tmp_path / "p" / "features" / "items.parquet").to_pandas().set_index("item_id")
    top = pop_items.item_popularity.sort_values().index[-10:]
    bottom = pop_items.item_popularity.sort_values().index[:10]
    p_share, u_share = share(popular, tmp_path / "p"), share(uniform, tmp_path / "u")
    assert p_share.reindex(top).fillna(0).sum() > u_share.reindex(top).fillna(0).sum()
    assert p_share.reindex(bottom).fillna(0).sum() < u_share.reindex(bottom).fillna(0).sum()


def test_bad_rows_are_quarantined_with_reasons(ray_session, tmp_path):
    csv = tmp_path / "mixed.csv"
    csv.write_text(
        "user_id,item_id,interaction_type,timestamp,rating\n"
        "u1,i1,CLICK,2024-01-01T00:00:00Z,\n"
        "u1,i2,view,1704067300,4\n"
        "u2,i1,purchase,1704067400000,\n"
        "u2,i3,click,2024-01-01 00:10:00,5\n"
        ",i1,click,2024-01-01T00:00:00Z,\n"
        "u3,i1,teleport,2024-01-01T00:00:00Z,\n"
        "u3,i1,click,yesterday,\n"
        "u3,i1,click,1800-01-01T00:00:00Z,\n"
        "u3,i1,click,2024-01-01T00:00:00Z,11\n"
        f"{'x' * 200},i1,click,2024-01-01T00:00:00Z,\n"
    )
    manifest = build(ray_session, tmp_path / "out", interactions=str(csv), test_fraction=0.25)
    c = manifest.counts.model_dump()
    assert c["input_rows"] == 10 and c["valid"] == 4
    assert c["rejected"] == {"missing_field": 1, "unknown_interaction_type": 1, "bad_timestamp": 1,
                             "timestamp_out_of_range": 1, "rating_out_of_range": 1, "id_too_long": 1}
    quarantine = pq.read_table(tmp_path / "out" / "quarantine" / "interactions").to_pandas()
    assert len(quarantine) == 6
    assert set(quarantine.source) == {str(csv)}
    assert quarantine[quarantine.reason == "bad_timestamp"].original.str.contains("yesterday").all()


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"\x00\x01\x02\x03binary garbage\xff", "binary"),
])
def test_bad_files_give_clear_errors(ray_session, tmp_path, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(Exception) as err:
        build(ray_session, tmp_path / "out", interactions=str(bad))
    assert message in str(err.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_garbage_parquet_and_wrong_columns(ray_session, tmp_path):
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(BuildError, match="not a valid Parquet file"):
        build(ray_session, tmp_path / "out", interactions=str(garbage))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b,c\n1,2,3\n4,5,6\n")
    with pytest.raises(InputError, match=r"wrong.csv has no column\(s\) \['user_id', 'item_id'"):
        build(ray_session, tmp_path / "out2", interactions=str(wrong))
    assert not (tmp_path / "out2" / "manifest.json").exists()
    # columns present but no row valid: every row is in the quarantine with a reason
    invalid = tmp_path / "invalid.csv"
    invalid.write_text("user_id,item_id,interaction_type,timestamp\nu1,i1,teleport,2024-01-01\n,i2,click,2024-01-01\n")
    with pytest.raises(BuildError, match="no valid interactions among 2 input rows"):
        build(ray_session, tmp_path / "out3", interactions=str(invalid))
    assert not (tmp_path / "out3" / "manifest.json").exists()


def test_a_directory_that_also_holds_the_catalog_is_refused(ray_session, tmp_path, capsys):
    from recsys_ray.cli import main

    assert main(["generate", "--out", str(tmp_path / "data"), "--users", "20", "--items", "10",
                 "--interactions", "200"]) == 0
    capsys.readouterr()
    code = main(["build", "--interactions", str(tmp_path / "data"), "--out", str(tmp_path / "v1"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "items.parquet has no column(s) ['user_id', 'interaction_type', 'timestamp']" in err
    assert "Traceback" not in err
    assert not (tmp_path / "v1" / "manifest.json").exists()


def test_build_on_s3_from_a_tenant_raw_zone(ray_session, s3_bucket, tmp_path):
    from recsys_ray.io import layout, storage

    root = f"s3://{s3_bucket}/data"
    events = make_events(n=1500, seed=11)
    table = pa.Table.from_pandas(events, preserve_index=False)
    from recsys_ray.config import ValidationConfig
    from recsys_ray.validation import validate

    landed = validate(table, "interactions", ValidationConfig()).valid
    storage.write_table(layout.raw_object(root, "acme", "interactions", "part-a"), landed.slice(0, 700))
    storage.write_table(layout.raw_object(root, "acme", "interactions", "part-b"), landed.slice(700))
    cfg = RecsysConfig.load(storage={"root": root}, build={"tenant": "acme", "version": "v7", "shards": 2})
    manifest = build_training_data(cfg)
    assert manifest.uri == f"{root}/tenants/acme/training/v7"
    assert manifest.counts.input_rows == 1500
    assert storage.exists(f"{manifest.uri}/manifest.json")
    total = sum(storage.read_table(f"{manifest.uri}/{s.path}").num_rows for s in manifest.shards["train"])
    assert total == manifest.counts.train_rows


def test_cli_runs_the_build(ray_session, tmp_path, capfd):
    from recsys_ray.cli import main

    inter, items = write_inputs(tmp_path / "in", make_events(n=800, seed=2))
    code = main(["build", "--interactions", inter, "--items", items, "--out", str(tmp_path / "out"),
                 "--negatives", "2", "--seed", "3", "--quiet"])
    assert code == 0
    out, err = capfd.readouterr()
    assert out.startswith(f"version out at {tmp_path / 'out'}\n") and err == ""
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["version"] == "out" and manifest["tenant"] is None and manifest["config"]["tenant"] is None
    assert manifest["config"]["negatives"] == 2
    assert manifest["counts"]["train_negatives"] == 2 * manifest["counts"]["train_positives"]
    assert main(["build", "--interactions", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o2")]) == 2


def test_cli_reports_one_line_per_stage_start_and_end(ray_session, tmp_path, capfd):
    """Off a terminal: no progress bars, execution plans or per-operator progress lines."""
    from recsys_ray.cli import main

    inter, items = write_inputs(tmp_path / "in", make_events(n=800, seed=2))
    assert main(["build", "--interactions", inter, "--items", items, "--out", str(tmp_path / "v2")]) == 0
    _, err = capfd.readouterr()
    lines = err.strip().splitlines()
    stages = ["validate_and_partition", "cutoff", "features", "catalog", "vocabularies_and_eval",
              "examples_and_shards", "report"]
    assert [line.split(" ", 1)[1].split(" ...")[0] for line in lines if line.endswith(" ...")] == \
        [f"stage {name}" for name in stages]
    assert len([line for line in lines if " done in " in line]) == len(stages)
    assert len(lines) == 2 * len(stages), err
