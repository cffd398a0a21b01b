from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray.stages import vocab

EVENTS = pa.table({
    "user_id": ["u2", "u1", "u2", "u3", "u1", "u2", "u4"],
    "item_id": ["b", "a", "a", "c", "b", "b", "zz"],
})
CATALOG = pa.table({
    "item_id": ["a", "b", "c", "d"],
    "title": ["A", "B", "C", "D"],
    "category": ["books", "toys", None, "toys"],
    "brand": ["Acme", "Acme", "Zed", "Zed"],
})
ATTRIBUTES = vocab.item_attributes(CATALOG)


def plain_counts(events, catalog):
    """Counts per column written out row by row: what the vocabularies must count."""
    category = dict(zip(catalog.column("item_id").to_pylist(), catalog.column("category").to_pylist()))
    brand = dict(zip(catalog.column("item_id").to_pylist(), catalog.column("brand").to_pylist()))
    counts = {name: Counter() for name in vocab.VOCABULARY_COLUMNS}
    for user, item in zip(events.column("user_id").to_pylist(), events.column("item_id").to_pylist()):
        counts["user_id"][user] += 1
        counts["item_id"][item] += 1
        if category.get(item) is not None:
            counts["item_category"][category[item]] += 1
        if brand.get(item) is not None:
            counts["item_brand"][brand[item]] += 1
    return counts


def as_counts(partials, column):
    table = vocab.column_counts(partials, column)
    return Counter(dict(zip(table.column("value").to_pylist(), table.column("count").to_pylist())))


def test_partials_count_events_and_catalog_attributes():
    partials = vocab.vocab_partials(EVENTS, ATTRIBUTES)
    assert partials.schema == vocab.VOCAB_PARTIALS
    expected = plain_counts(EVENTS, CATALOG)
    for column in vocab.VOCABULARY_COLUMNS:
        assert as_counts(partials, column) == expected[column], column
    # "zz" is outside the catalog and "c" has no category: neither counts for a category.
    assert as_counts(partials, "item_category") == Counter({"toys": 3, "books": 2})
    assert as_counts(partials, "item_brand") == Counter({"Acme": 5, "Zed": 1})
    keys = list(zip(partials.column("column").to_pylist(), partials.column("value").to_pylist()))
    assert keys == sorted(keys)


def test_partials_of_any_partition_sum_to_the_one_batch_counts():
    rng = np.random.default_rng(3)
    n = 2_000
    events = pa.table({"user_id": [f"u{i}" for i in rng.integers(0, 50, n)],
                       "item_id": [f"i{i:02d}" for i in rng.integers(0, 40, n)]})
    catalog = pa.table({"item_id": [f"i{i:02d}" for i in range(30)],  # i30..i39 are not in the catalog
                        "title": ["t"] * 30,
                        "category": [None if i % 7 == 0 else f"c{i % 4}" for i in range(30)],
                        "brand": [f"b{i % 5}" for i in range(30)]})
    attributes = vocab.item_attributes(catalog)
    whole = vocab.vocab_partials(events, attributes)
    # Batches of whole users, as the build partitions them, and arbitrary row slices.
    by_user = pc.utf8_slice_codeunits(events.column("user_id"), 1, 2)
    user_batches = [events.filter(pc.equal(by_user, str(d))) for d in range(10)]
    slices = [events.slice(lo, 337) for lo in range(0, n, 337)]
    for batches in (user_batches, slices):
        combined = vocab.combine_vocab_partials([vocab.vocab_partials(b, attributes) for b in batches])
        assert combined.equals(whole)
        # as the build counts: ids per batch, the attributes from the combined item counts
        ids = vocab.combine_vocab_partials([vocab.vocab_partials(b, vocab.item_attributes(None),
                                                                 columns=vocab.EVENT_COLUMNS) for b in batches])
        assert set(ids.column("column").to_pylist()) == set(vocab.EVENT_COLUMNS)
        assert vocab.with_attribute_counts(ids, attributes).equals(whole)
        assert vocab.with_attribute_counts(whole, attributes).equals(whole)  # attribute rows are replaced
    expected = plain_counts(events, catalog)
    for column in vocab.VOCABULARY_COLUMNS:
        assert as_counts(whole, column) == expected[column], column


def test_combine_sums_the_same_value_and_keeps_columns_apart():
    first = pa.table({"column": ["item_id", "user_id"], "value": ["x", "x"], "count": [2, 1]})
    second = pa.table({"column": ["item_id", "item_brand"], "value": ["x", "x"], "count": [5, 7]})
    combined = vocab.combine_vocab_partials([first, second])
    assert combined.to_pylist() == [
        {"column": "item_brand", "value": "x", "count": 7},
        {"column": "item_id", "value": "x", "count": 7},
        {"column": "user_id", "value": "x", "count": 1},
    ]
    assert vocab.combine_vocab_partials([]).num_rows == 0
    assert vocab.combine_vocab_partials(pa.concat_tables([first, second])).equals(combined)


def test_vocabulary_order_reserved_indices_and_ties():
    counts = pa.table({"value": ["pear", "apple", "fig", "kiwi", "date", "Zebra"],
                       "count": pa.array([3, 5, 3, 1, 5, 3], pa.int64())})
    vocabulary = vocab.make_vocabulary(counts)
    assert vocabulary.schema == vocab.VOCABULARY
    # Count descending, then value ascending (byte order: upper case sorts first).
    assert vocabulary.column("value").to_pylist() == ["apple", "date", "Zebra", "fig", "pear", "kiwi"]
    assert vocabulary.column("index").to_pylist() == [2, 3, 4, 5, 6, 7]
    assert vocabulary.column("count").to_pylist() == [5, 5, 3, 3, 3, 1]
    assert vocab.vocabulary_cardinality(vocabulary) == 8
    # The result depends on the counts, not on their row order.
    shuffled = counts.take(pa.array([5, 2, 0, 4, 1, 3]))
    assert vocab.make_vocabulary(shuffled).equals(vocabulary)


def test_vocabulary_equals_a_plain_construction():
    rng = np.random.default_rng(5)
    for min_frequency in (1, 2, 4):
        values = [f"v{i}" for i in rng.integers(0, 60, 400)]
        counted = Counter(values)
        kept = sorted((v for v, c in counted.items() if c >= min_frequency), key=lambda v: (-counted[v], v))
        counts = pa.table({"value": list(counted), "count": pa.array(list(counted.values()), pa.int64())})
        vocabulary = vocab.make_vocabulary(counts, min_frequency)
        assert vocabulary.to_pylist() == [{"value": v, "index": i + 2, "count": counted[v]}
                                          for i, v in enumerate(kept)]


def test_min_frequency_leaves_rare_values_out_and_they_map_to_oov():
    counts = pa.table({"value": ["a", "b", "c", "d"], "count": pa.array([4, 2, 1, 2], pa.int64())})
    vocabulary = vocab.make_vocabulary(counts, min_frequency=2)
    assert vocabulary.column("value").to_pylist() == ["a", "b", "d"]
    assert vocabulary.column("index").to_pylist() == [2, 3, 4]
    assert vocab.lookup_indices(pa.array(["c", "a", "d"]), vocabulary).to_pylist() == [1, 2, 4]
    assert vocab.make_vocabulary(counts, min_frequency=5).num_rows == 0
    assert vocab.vocabulary_cardinality(vocab.make_vocabulary(counts, min_frequency=5)) == 2
    with pytest.raises(ValueError, match="min_frequency"):
        vocab.make_vocabulary(counts, min_frequency=0)


def test_make_vocabulary_refuses_uncombined_counts():
    counts = pa.table({"value": ["a", "a"], "count": pa.array([1, 2], pa.int64())})
    with pytest.raises(ValueError, match="one row per value"):
        vocab.make_vocabulary(counts)


def test_lookup_maps_null_to_padding_and_unseen_values_to_oov():
    vocabulary = vocab.make_vocabulary(vocab.column_counts(vocab.vocab_partials(EVENTS, ATTRIBUTES), "item_id"))
    assert dict(zip(vocabulary.column("value").to_pylist(), vocabulary.column("index").to_pylist())) == {
        "b": 2, "a": 3, "c": 4, "zz": 5}
    values = pa.chunked_array([["a", None], ["test-only", "zz", "b"], []])
    looked_up = vocab.lookup_indices(values, vocabulary)
    assert looked_up.type == pa.int32()
    assert looked_up.to_pylist() == [3, 0, 1, 5, 2]
    assert vocab.lookup_indices(pa.array([], pa.string()), vocabulary).to_pylist() == []
    assert vocab.lookup_indices(pa.array(["a", None]), vocab.VOCABULARY.empty_table()).to_pylist() == [1, 0]


def test_a_vocabulary_lookup_gives_the_indices_of_a_table_lookup():
    rng = np.random.default_rng(1)
    vocabulary = vocab.make_vocabulary(pa.table({"value": [f"v{i}" for i in range(300)],
                                                 "count": pa.array(rng.integers(1, 9, 300), pa.int64())}), 3)
    lookup = vocab.VocabularyLookup.of(vocabulary)
    values = pa.chunked_array([pa.array([f"v{i}" for i in rng.integers(0, 400, 2_000)]),
                               pa.array([None, "v1", None], pa.string())])
    assert vocab.lookup_indices(values, lookup).equals(vocab.lookup_indices(values, vocabulary))
    lists = pa.array([["v1", None, "new"], None, []], pa.list_(pa.string()))
    assert vocab.lookup_list_indices(lists, lookup).equals(vocab.lookup_list_indices(lists, vocabulary))
    empty = vocab.lookups({"item_id": vocab.VOCABULARY.empty_table()})["item_id"]
    assert vocab.lookup_indices(pa.array(["a", None]), empty).to_pylist() == [1, 0]


def test_list_lookup_keeps_offsets_nulls_and_slices():
    vocabulary = vocab.make_vocabulary(pa.table({"value": ["x", "y"], "count": pa.array([2, 1], pa.int64())}))
    lists = pa.array([["y", "x", "new"], None, [], [None, "x"], ["y"]], pa.list_(pa.string()))
    looked_up = vocab.lookup_list_indices(lists, vocabulary)
    assert looked_up.type == pa.list_(pa.int32())
    assert looked_up.to_pylist() == [[3, 2, 1], None, [], [0, 2], [3]]
    assert vocab.lookup_list_indices(lists.slice(2, 3), vocabulary).to_pylist() == [[], [0, 2], [3]]
    assert vocab.lookup_list_indices(pa.chunked_array([lists.slice(0, 2), lists.slice(3)]),
                                     vocabulary).to_pylist() == [[3, 2, 1], None, [0, 2], [3]]
    large = vocab.lookup_list_indices(lists.cast(pa.large_list(pa.string())), vocabulary)
    assert large.type == pa.large_list(pa.int32()) and large.to_pylist() == looked_up.to_pylist()
    # A null list whose offsets still span values (allowed by Arrow) keeps the others aligned.
    spanning = pa.ListArray.from_arrays(pa.array([0, 2, 3], pa.int32()), pa.array(["x", "x", "y"]),
                                        mask=pa.array([True, False]))
    assert vocab.lookup_list_indices(spanning, vocabulary).to_pylist() == [None, [3]]
    with pytest.raises(TypeError, match="list"):
        vocab.lookup_list_indices(pa.array(["x"]), vocabulary)


def test_list_lookup_equals_element_lookup():
    rng = np.random.default_rng(0)
    vocabulary = vocab.make_vocabulary(pa.table({"value": [f"v{i}" for i in range(50)],
                                                 "count": pa.array(rng.integers(1, 9, 50), pa.int64())}))
    lists = [[f"v{i}" for i in rng.integers(0, 80, rng.integers(0, 6))] for _ in range(300)]
    looked_up = vocab.lookup_list_indices(pa.array(lists), vocabulary).to_pylist()
    assert looked_up == [vocab.lookup_indices(pa.array(values, pa.string()), vocabulary).to_pylist()
                         for values in lists]


def test_attributes_without_a_catalog_or_a_column():
    assert vocab.item_attributes(None).num_rows == 0
    partials = vocab.vocab_partials(EVENTS, vocab.item_attributes(None))
    assert set(partials.column("column").to_pylist()) == {"user_id", "item_id"}
    no_brand = vocab.item_attributes(CATALOG.drop_columns(["brand"]))
    assert no_brand.column("item_brand").null_count == 4
    assert vocab.vocab_partials(EVENTS.slice(0, 0), ATTRIBUTES).num_rows == 0
    with pytest.raises(ValueError, match="no vocabulary"):
        vocab.vocab_partials(EVENTS, ATTRIBUTES, columns=["price"])


def test_test_only_ids_map_to_oov_end_to_end():
    train = EVENTS.slice(0, 5)  # u4 and item zz appear only later
    partials = vocab.vocab_partials(train, ATTRIBUTES)
    users = vocab.make_vocabulary(vocab.column_counts(partials, "user_id"))
    items = vocab.make_vocabulary(vocab.column_counts(partials, "item_id"))
    assert vocab.lookup_indices(pa.array(["u4", "u2", "u1"]), users).to_pylist() == [1, 3, 2]  # u1, u2: 2 each
    assert vocab.lookup_indices(pa.array(["zz"]), items).to_pylist() == [1]


def _snapshot(rng, n=3_000, users=60, items=45):
    """Random events over two days; users u00-u59, items i00-i44 (i30-i44 outside the catalog)."""
    start = 1_700_000_000_000_000
    return pa.table({
        "user_id": [f"u{i:02d}" for i in rng.integers(0, users, n)],
        "item_id": [f"i{i:02d}" for i in rng.integers(0, items, n)],
        "interaction_type": pa.array(rng.choice(["view", "click", "purchase"], n).tolist(), pa.string()),
        "timestamp": pa.array(start + rng.integers(0, 2 * 86_400_000_000, n), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "rating": pa.array([None] * n, pa.float64()),
    })


@pytest.mark.parametrize("min_frequency", [1, 3])
@pytest.mark.parametrize("strategy", ["time", "leave_last_out"])
def test_vocabularies_from_partitions_equal_counting_every_event(min_frequency, strategy):
    from recsys_ray.stages import features, split

    rng = np.random.default_rng(11)
    events = _snapshot(rng)
    catalog = pa.table({"item_id": [f"i{i:02d}" for i in range(30)], "title": ["t"] * 30,
                        "category": [None if i % 7 == 0 else f"c{i % 4}" for i in range(30)],
                        "brand": [f"b{i % 5}" for i in range(30)]})
    attributes = vocab.item_attributes(catalog)
    cutoff_us = 1_700_000_000_000_000 + 86_400_000_000
    kwargs = {"cutoff_us": cutoff_us, "strategy": strategy, "positive_types": ("click", "purchase")}
    whole = vocab.vocab_partials(split.train_events(events, **kwargs), attributes)
    expected = {column: vocab.make_vocabulary(vocab.column_counts(whole, column), min_frequency)
                for column in vocab.VOCABULARY_COLUMNS}
    by_user = pc.utf8_slice_codeunits(events.column("user_id"), 2, 3)
    parts = [events.filter(pc.equal(by_user, str(d))) for d in range(10)]
    user_counts = [vocab.vocab_partials_for_partition(p, **kwargs, columns=("user_id",)) for p in parts]
    summed = features.sum_item_partials(pa.concat_tables(
        [features.item_partials_for_partition(p, **kwargs) for p in parts]))
    got = vocab.vocabularies_from_partitions(user_counts, summed, attributes, min_frequency)
    assert set(got) == set(vocab.VOCABULARY_COLUMNS)
    for column in vocab.VOCABULARY_COLUMNS:
        assert got[column].equals(expected[column]), column
    assert got["item_category"].num_rows > 0 and got["user_id"].num_rows > 0


def test_vocabularies_from_partitions_refuse_a_user_counted_in_two_partitions():
    first = pa.table({"column": ["user_id"], "value": ["u1"], "count": pa.array([2], pa.int64())})
    items = pa.table({"item_id": ["a"], "total": pa.array([2], pa.int64())})
    with pytest.raises(ValueError, match="one row per value"):
        vocab.vocabularies_from_partitions([first, first], items, vocab.item_attributes(None))


def test_vocabularies_from_partitions_of_nothing_are_empty():
    empty_items = pa.table({"item_id": pa.array([], pa.string()), "total": pa.array([], pa.int64())})
    got = vocab.vocabularies_from_partitions([], empty_items, vocab.item_attributes(None))
    assert all(table.num_rows == 0 and table.schema == vocab.VOCABULARY for table in got.values())


def test_attribute_counts_sum_the_counts_of_each_attributes_items():
    items = pa.table({"value": ["a", "b", "c", "zz"], "count": pa.array([2, 3, 1, 9], pa.int64())})
    got = {column: dict(zip(t.column("value").to_pylist(), t.column("count").to_pylist()))
           for column, t in vocab.attribute_counts(items, ATTRIBUTES).items()}
    # c has no category and zz is outside the catalog: neither counts for a category.
    assert got == {"item_category": {"books": 2, "toys": 3}, "item_brand": {"Acme": 5, "Zed": 1}}
