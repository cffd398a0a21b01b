from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray import schemas, synthetic
from recsys_ray.config import ValidationConfig
from recsys_ray.validation import deduplicate_events, validate

VCFG = ValidationConfig()
SMALL = synthetic.SyntheticConfig(users=500, items=300, interactions=20_000, seed=7)


def test_default_sizes_are_seed_parity():
    cfg = synthetic.SyntheticConfig()
    assert (cfg.users, cfg.items, cfg.interactions, cfg.days) == (10_000, 5_000, 100_000, 90.0)
    assert len(synthetic.CATEGORIES) == 12 and len(synthetic.BRANDS) == 15
    assert sum(synthetic.TYPE_MIX.values()) == pytest.approx(1.0)
    assert set(synthetic.TYPE_MIX) == set(schemas.INTERACTION_TYPES)


def test_interactions_have_requested_size_ids_and_window():
    table = synthetic.generate_interactions(SMALL)
    assert table.num_rows == SMALL.interactions
    assert table.column_names == ["user_id", "item_id", "interaction_type", "timestamp", "rating"]
    users = table.column("user_id").to_numpy(zero_copy_only=False)
    items = table.column("item_id").to_numpy(zero_copy_only=False)
    assert all(u.startswith("u") and len(u) == 7 for u in users[:100])
    assert {int(u[1:]) for u in users} <= set(range(SMALL.users))
    catalog_ids = set(synthetic.generate_items(SMALL).column("item_id").to_pylist())
    assert set(items) <= catalog_ids
    ts = table.column("timestamp")
    assert pc.min(ts).as_py() >= SMALL.end - timedelta(days=90)
    assert pc.max(ts).as_py() < SMALL.end
    millis = ts.cast(pa.int64()).to_numpy()
    assert np.all(np.diff(millis) >= 0), "the log is in time order"


def test_chunk_size_changes_only_how_rows_are_handed_out():
    cfg = SMALL.model_copy(update={"interactions": 150_000, "dirty_fraction": 0.01})
    whole = synthetic.generate_interactions(cfg)
    chunks = list(synthetic.interaction_chunks(cfg.model_copy(update={"chunk_rows": 40_001})))
    assert [t.num_rows for t, _ in chunks] == [40_001] * 3 + [29_997]
    assert pa.concat_tables([t for t, _ in chunks]).equals(whole)
    clean = synthetic.generate_interactions(cfg.model_copy(update={"dirty_fraction": 0.0}))
    millis = clean.column("timestamp").cast(pa.int64()).to_numpy()
    assert np.all(np.diff(millis) >= 0), "the log is in time order across blocks"
    items = synthetic.SyntheticConfig(items=70_000)
    assert pa.concat_tables(list(synthetic.item_chunks(items.model_copy(update={"chunk_rows": 9_999})))).equals(
        synthetic.generate_items(items))


def test_type_mix_within_tolerance():
    table = synthetic.generate_interactions(synthetic.SyntheticConfig(interactions=100_000, seed=3))
    counts = dict(zip(*np.unique(table.column("interaction_type").to_numpy(zero_copy_only=False),
                                 return_counts=True)))
    for name, share in synthetic.TYPE_MIX.items():
        assert counts[name] / table.num_rows == pytest.approx(share, abs=0.01), name


def test_ratings_only_on_likes_and_purchases_from_one_to_five():
    table = synthetic.generate_interactions(SMALL)
    rated = table.filter(pc.is_valid(table.column("rating")))
    assert set(rated.column("interaction_type").to_pylist()) == set(synthetic.RATED_TYPES)
    assert set(rated.column("rating").to_pylist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    eligible = pc.sum(pc.is_in(table.column("interaction_type"), pa.array(synthetic.RATED_TYPES))).as_py()
    assert rated.num_rows / eligible == pytest.approx(synthetic.RATED_SHARE, abs=0.03)


def _top_share(ids: np.ndarray, fraction: float, population: int) -> float:
    _, counts = np.unique(ids, return_counts=True)
    top = max(1, int(population * fraction))
    return np.sort(counts)[::-1][:top].sum() / len(ids)


def test_zipf_skew_concentrates_items_and_users():
    cfg = synthetic.SyntheticConfig(interactions=100_000, seed=11)
    table = synthetic.generate_interactions(cfg)
    items = table.column("item_id").to_numpy(zero_copy_only=False)
    users = table.column("user_id").to_numpy(zero_copy_only=False)
    assert _top_share(items, 0.01, cfg.items) > 0.40  # exact Zipf(1) over 5,000 items: 0.50
    assert _top_share(users, 0.01, cfg.users) > 0.20  # Zipf(0.8) over 10,000 users: 0.30
    # The most popular items are spread over the id space, not the first ids.
    top_items = [i for i, _ in sorted(zip(*np.unique(items, return_counts=True)), key=lambda kv: -kv[1])[:10]]
    assert top_items != sorted(top_items)

    flat = synthetic.generate_interactions(cfg.model_copy(update={"item_skew": 0.0}))
    assert _top_share(flat.column("item_id").to_numpy(zero_copy_only=False), 0.01, cfg.items) < 0.03


def test_zipf_ranks_follow_the_power_law():
    uniforms = np.random.default_rng(0).random(1_000_000)
    ranks = synthetic.zipf_ranks(uniforms, 5_000, 1.0)
    assert ranks.min() == 0 and ranks.max() == 4_999
    exact = 1.0 / np.arange(1, 5_001)
    exact /= exact.sum()
    observed = np.bincount(ranks, minlength=5_000) / len(ranks)
    assert observed[:50].sum() == pytest.approx(exact[:50].sum(), rel=0.05)
    assert observed[9] == pytest.approx(exact[9], rel=0.1)
    assert np.array_equal(synthetic.zipf_ranks(uniforms[:10], 1, 1.3), np.zeros(10))


def test_same_seed_same_rows_other_seed_other_rows():
    again = synthetic.generate_interactions(SMALL)
    assert synthetic.generate_interactions(SMALL).equals(again)
    other = synthetic.generate_interactions(SMALL.model_copy(update={"seed": 8}))
    assert not other.equals(again)
    assert synthetic.generate_items(SMALL).equals(synthetic.generate_items(SMALL))
    dirty = SMALL.model_copy(update={"dirty_fraction": 0.05})
    assert synthetic.generate_interactions(dirty).equals(synthetic.generate_interactions(dirty))


def test_catalog_is_complete_and_valid():
    cfg = synthetic.SyntheticConfig(items=3_000, chunk_rows=1_000)
    catalog = synthetic.generate_items(cfg)
    assert catalog.num_rows == 3_000
    assert catalog.column("item_id").to_pylist() == [f"i{i:06d}" for i in range(3_000)]
    assert set(catalog.column("category").to_pylist()) == set(synthetic.CATEGORIES)
    assert set(catalog.column("brand").to_pylist()) == set(synthetic.BRANDS)
    prices = catalog.column("price").to_numpy()
    assert prices.min() > 0 and 5 < np.median(prices) < 200
    assert pc.min(pc.utf8_length(catalog.column("title"))).as_py() > 5
    result = validate(catalog, "items", VCFG)
    assert result.rejected.num_rows == 0 and result.valid.num_rows == 3_000
    # Any slice equals the same rows of the whole catalog, across chunk borders.
    assert synthetic.generate_items(cfg, 900, 2_100).equals(catalog.slice(900, 1_200))


def test_clean_interactions_all_validate():
    result = validate(synthetic.generate_interactions(SMALL), "interactions", VCFG)
    assert result.rejected.num_rows == 0
    assert result.valid.num_rows == SMALL.interactions


def test_dirty_rows_are_rejected_exactly_with_their_reasons():
    clean = synthetic.generate_interactions(SMALL)
    dirty, plan = synthetic.inject_dirty_rows_with_plan(clean, 0.05, seed=5)
    assert dirty.num_rows == clean.num_rows
    assert len(plan.invalid_rows) == 1_000 and len(plan.duplicate_rows) == 500
    assert set(plan.reasons) == set(synthetic.INTERACTION_REASONS)

    result = validate(dirty, "interactions", VCFG)
    rejected = dict(zip(result.rejected.column("row").to_pylist(), result.rejected.column("reason").to_pylist()))
    assert rejected == dict(zip(plan.invalid_rows.tolist(), plan.reasons.tolist()))
    assert result.reason_counts == plan.reason_counts

    unique, dropped = deduplicate_events(result.valid)
    assert dropped == len(plan.duplicate_rows)
    # Valid rows keep their values: the clean rows that were not overwritten survive unchanged.
    untouched = np.setdiff1d(np.arange(clean.num_rows), np.concatenate([plan.invalid_rows, plan.duplicate_rows]))
    expected = validate(clean.take(pa.array(untouched)), "interactions", VCFG).valid
    assert set(unique.column("event_id").to_pylist()) == set(expected.column("event_id").to_pylist())


def test_dirty_fraction_zero_changes_only_types():
    clean = synthetic.generate_interactions(SMALL)
    same = synthetic.inject_dirty_rows(clean, 0.0, seed=1, duplicate_fraction=0.0)
    assert same.column("timestamp").type == pa.string()
    assert validate(same, "interactions", VCFG).valid.equals(validate(clean, "interactions", VCFG).valid)


def test_dirty_chunks_plan_exactly_their_rows():
    cfg = SMALL.model_copy(update={"interactions": 100_000, "dirty_fraction": 0.02,
                                   "duplicate_fraction": 0.01, "chunk_rows": 30_000})
    offset, totals, duplicates, valid = 0, {}, 0, []
    for table, plan in synthetic.interaction_chunks(cfg):
        assert table.schema.field("timestamp").type == pa.string()
        result = validate(table, "interactions", VCFG, row_offset=offset)
        rejected = dict(zip(result.rejected.column("row").to_pylist(), result.rejected.column("reason").to_pylist()))
        assert rejected == dict(zip((plan.invalid_rows + offset).tolist(), plan.reasons.tolist()))
        for reason, count in plan.reason_counts.items():
            totals[reason] = totals.get(reason, 0) + count
        duplicates += len(plan.duplicate_rows)
        valid.append(result.valid)
        offset += table.num_rows
    assert set(totals) == set(synthetic.INTERACTION_REASONS)
    assert sum(totals.values()) == pytest.approx(2_000, abs=3)
    assert duplicates == pytest.approx(1_000, abs=3)
    assert deduplicate_events(pa.concat_tables(valid))[1] == duplicates


def test_id_too_long_follows_the_configured_limit():
    clean = synthetic.generate_interactions(SMALL.model_copy(update={"interactions": 70}))
    dirty = synthetic.inject_dirty_rows(clean, 0.5, seed=2, max_id_length=16)
    strict = ValidationConfig(max_id_length=16)
    assert "id_too_long" in validate(dirty, "interactions", strict).reason_counts


def test_tiny_tables_and_whole_table_dirty():
    clean = synthetic.generate_interactions(SMALL.model_copy(update={"interactions": 7}))
    dirty, plan = synthetic.inject_dirty_rows_with_plan(clean, 0.99, seed=0)
    assert len(plan.invalid_rows) == 7 and len(plan.duplicate_rows) == 0
    assert validate(dirty, "interactions", VCFG).valid.num_rows == 0
    empty = synthetic.generate_interactions(SMALL.model_copy(update={"interactions": 0}))
    assert empty.num_rows == 0 and synthetic.inject_dirty_rows(empty, 0.5, seed=0).num_rows == 0


def test_iso_timestamps_round_trip_through_the_validator():
    moments = [datetime(2026, 10, 1, 12, 30, 0, 250_000, tzinfo=timezone.utc),
               datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)]
    text = synthetic.iso_timestamps(pa.array(moments, pa.timestamp("ms", tz="UTC")))
    assert text.to_pylist() == ["2026-10-01T12:30:00.250Z", "2026-01-02T03:04:05.000Z"]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        synthetic.SyntheticConfig(users=0)
    with pytest.raises(ValueError):
        synthetic.SyntheticConfig(dirty_fraction=1.0)
    naive = synthetic.SyntheticConfig(end=datetime(2026, 1, 1))
    assert naive.end.tzinfo is not None


def _fingerprint(table: pa.Table) -> str:
    import hashlib

    values = (table.column("user_id").to_pylist() + table.column("item_id").to_pylist()
              + table.column("interaction_type").to_pylist()
              + table.column("timestamp").cast(pa.int64()).to_pylist() + table.column("rating").to_pylist())
    return hashlib.sha256("|".join(map(str, values)).encode()).hexdigest()


def test_without_taste_groups_the_rows_are_those_of_the_earlier_generator():
    # The digest of SMALL's rows as generated before taste groups existed.
    independent = SMALL.model_copy(update={"taste_groups": 0})
    assert synthetic.taste_model(independent) is None
    assert _fingerprint(synthetic.generate_interactions(independent)) == (
        "ccecac7bda82be8c6adabdfbfa919e543b632587c300625ba97ab53e79dee869")
    assert _fingerprint(synthetic.generate_interactions(SMALL)) != _fingerprint(
        synthetic.generate_interactions(independent))


def _events_with_groups(cfg):
    table = synthetic.generate_interactions(cfg)
    tastes = synthetic.taste_model(cfg)
    users, items = (pc.cast(pc.utf8_slice_codeunits(table.column(name), 1), pa.int64()).to_numpy()
                    for name in ("user_id", "item_id"))
    millis = table.column("timestamp").cast(pa.int64()).to_numpy()
    start = int(cfg.start.timestamp() * 1000)
    fraction = (millis - start) / ((cfg.end - cfg.start).total_seconds() * 1000)
    return tastes, tastes.group_of_user[users], items, fraction


def _share_in(values, preferred_sets, groups):
    return (values[:, None] == preferred_sets[groups]).any(axis=1).mean()


def test_taste_model_follows_the_catalog_and_the_seed():
    tastes = synthetic.taste_model(SMALL)
    catalog = synthetic.generate_items(SMALL)
    assert [synthetic.CATEGORIES[c] for c in tastes.item_category] == catalog.column("category").to_pylist()
    assert [synthetic.BRANDS[b] for b in tastes.item_brand] == catalog.column("brand").to_pylist()
    assert tastes.groups == 30 and set(np.unique(tastes.group_of_user)) == set(range(30))
    assert tastes.categories.shape == (30, 2, synthetic.CATEGORIES_PER_GROUP)
    assert tastes.brands.shape == (30, 2, synthetic.BRANDS_PER_GROUP)
    # The late profile keeps all but one preferred category and brand.
    for group in range(30):
        assert len(set(tastes.categories[group, 0]) & set(tastes.categories[group, 1])) == 1
        assert len(set(tastes.brands[group, 0]) & set(tastes.brands[group, 1])) == 2
    # 30 groups prefer every category (early and late) 5 times and every brand 6 times.
    for profile in (0, 1):
        assert set(np.bincount(tastes.categories[:, profile].ravel(), minlength=12)) == {5}
        assert set(np.bincount(tastes.brands[:, profile].ravel(), minlength=15)) == {6}
    again = synthetic.taste_model(SMALL)
    assert np.array_equal(again.group_of_user, tastes.group_of_user)
    assert np.array_equal(again.categories, tastes.categories)
    other = synthetic.taste_model(SMALL.model_copy(update={"seed": 8}))
    assert not np.array_equal(other.group_of_user, tastes.group_of_user)


def test_groups_prefer_their_categories_and_brands():
    cfg = synthetic.SyntheticConfig(users=2_000, items=3_000, interactions=200_000, seed=5)
    tastes, groups, items, fraction = _events_with_groups(cfg)
    early = fraction < 0.25  # mostly the early profile
    categories = tastes.item_category[items[early]]
    brands = tastes.item_brand[items[early]]
    own = _share_in(categories, tastes.categories[:, 0], groups[early])
    others = _share_in(categories, tastes.categories[:, 0], (groups[early] + 3) % tastes.groups)  # disjoint categories
    assert own > 0.45 and others < 0.25, (own, others)  # 2 of 12 categories: 0.17 without tastes
    assert _share_in(brands, tastes.brands[:, 0], groups[early]) > 0.45  # 3 of 15 brands: 0.2

    flat = cfg.model_copy(update={"taste_strength": 1.0})
    tastes, groups, items, fraction = _events_with_groups(flat)
    share = _share_in(tastes.item_category[items], tastes.categories[:, 0], groups)
    assert share < 0.25, "with strength 1 every group follows the global law"


def test_tastes_drift_to_the_late_profile():
    cfg = synthetic.SyntheticConfig(users=2_000, items=3_000, interactions=200_000, seed=6)
    tastes, groups, items, fraction = _events_with_groups(cfg)
    early, late = ([set(tastes.categories[g, p]) for g in range(tastes.groups)] for p in (0, 1))
    late_only = np.array([sorted(b - a) for a, b in zip(early, late)])
    early_only = np.array([sorted(a - b) for a, b in zip(early, late)])
    category = tastes.item_category[items]
    first, last = fraction < 0.2, fraction >= 0.8

    def share(preferred, rows):
        return _share_in(category[rows], preferred, groups[rows])

    assert share(late_only, last) > 2 * share(late_only, first)
    assert share(early_only, first) > 2 * share(early_only, last)
    still = cfg.model_copy(update={"taste_drift": 0.0})
    tastes, groups, items, fraction = _events_with_groups(still)
    category = tastes.item_category[items]
    last = fraction >= 0.8
    assert _share_in(category[last], late_only, groups[last]) < 0.15, "no drift: the late profile is never used"


def test_guided_draw_is_the_inverse_cdf():
    rng = np.random.default_rng(1)
    sizes = np.array([1, 5, 0, 40, 3, 200])
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    weights = rng.pareto(1.0, bounds[-1]) * (rng.random(bounds[-1]) < 0.8)  # heavy tail, some zeros
    weights[bounds[:-1][sizes > 0]] = 1.0  # every non-empty distribution has some weight
    draw = synthetic.GuidedDraw.from_weights(weights, bounds)
    groups = np.repeat(np.flatnonzero(sizes > 0), 1_000)
    uniforms = rng.random(len(groups))
    drawn = draw.draw(groups, uniforms)
    for group, u, at in zip(groups.tolist(), uniforms.tolist(), drawn.tolist()):
        w = weights[bounds[group]:bounds[group + 1]]
        cumulative = np.cumsum(w) / w.sum()
        expected = bounds[group] + min(int(np.searchsorted(cumulative, u, side="right")), len(w) - 1)
        while weights[expected] == 0:  # past the last positive entry by rounding
            expected -= 1
        assert at == expected
    assert (weights[drawn] > 0).all()


@pytest.mark.parametrize("items, users, groups", [(1, 1, 30), (2, 3, 1), (7, 5, 1000)])
def test_tastes_work_with_tiny_catalogs_and_many_groups(items, users, groups):
    cfg = synthetic.SyntheticConfig(items=items, users=users, interactions=3_000, taste_groups=groups)
    table = synthetic.generate_interactions(cfg)
    assert set(table.column("item_id").to_pylist()) == set(synthetic.generate_items(cfg).column("item_id").to_pylist())
    assert validate(table, "interactions", VCFG).rejected.num_rows == 0
