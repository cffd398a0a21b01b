import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray import hashing

STRINGS = ["u1", "i-42", "", "u1", "héllo wörld", "view", "a" * 300, "i-42"]


def pandas_hash(values):
    return pd.util.hash_array(np.array(values, dtype=object), categorize=True)


def test_hash_strings_matches_pandas_hash_array():
    result = hashing.hash_strings(pa.array(STRINGS))
    assert result.dtype == np.uint64
    np.testing.assert_array_equal(result, pandas_hash(STRINGS))


def test_hash_strings_of_distinct_strings_are_distinct_and_repeats_equal():
    result = hashing.hash_strings(pa.array(STRINGS))
    assert result[0] == result[3]
    assert result[1] == result[7]
    assert len(set(result.tolist())) == len(set(STRINGS))


def test_hash_strings_null_hashes_like_empty_string():
    result = hashing.hash_strings(pa.array(["x", None, "", None], pa.string()))
    expected = pandas_hash(["x", "", "", ""])
    np.testing.assert_array_equal(result, expected)


def test_hash_strings_chunked_array_equals_contiguous():
    chunked = pa.chunked_array([pa.array(STRINGS[:3]), pa.array(STRINGS[3:5]), pa.array(STRINGS[5:])])
    np.testing.assert_array_equal(hashing.hash_strings(chunked), pandas_hash(STRINGS))
    single = pa.chunked_array([pa.array(STRINGS)])
    np.testing.assert_array_equal(hashing.hash_strings(single), pandas_hash(STRINGS))


def test_hash_strings_of_large_strings_sliced_and_dictionary_arrays():
    values = ["p", "q", None, "p"]
    expected = pandas_hash(["p", "q", "", "p"])
    np.testing.assert_array_equal(hashing.hash_strings(pa.array(values, pa.large_string())), expected)
    np.testing.assert_array_equal(hashing.hash_strings(pa.array(["x"] + values + ["y"]).slice(1, 4)), expected)
    np.testing.assert_array_equal(hashing.hash_strings(pa.array(values).dictionary_encode()), expected)


@pytest.mark.parametrize(
    "empty",
    [pa.array([], pa.string()), pa.chunked_array([], pa.string()), pa.chunked_array([pa.array([], pa.string())])],
)
def test_hash_strings_empty(empty):
    result = hashing.hash_strings(empty)
    assert result.dtype == np.uint64
    assert result.shape == (0,)


def test_hash_strings_of_values_known_distinct_are_the_same_hashes():
    distinct = ["u1", "", "héllo wörld", None, "a" * 300, "view"]
    for values in (pa.array(distinct, pa.string()), pa.array(distinct, pa.large_string()),
                   pa.chunked_array([pa.array(distinct[:2]), pa.array(distinct[2:], pa.string())]),
                   pa.array(["x"] + distinct).slice(1), pa.array(distinct).dictionary_encode()):
        np.testing.assert_array_equal(hashing.hash_strings(values, distinct=True), hashing.hash_strings(values))
    assert hashing.hash_strings(pa.array([], pa.string()), distinct=True).shape == (0,)


def test_hash_strings_does_not_depend_on_neighbours():
    """A string's hash is the same whatever else is in the array (block independence)."""
    alone = hashing.hash_strings(pa.array(["u7"]))
    among = hashing.hash_strings(pa.array(["a", "b", "u7", "c"]))
    assert alone[0] == among[2]


def test_to_hex_ids_matches_python_formatting():
    values = np.array([0, 1, 0xDEADBEEF, 0x0123456789ABCDEF, 2**64 - 1, 0xF0], dtype=np.uint64)
    ids = hashing.to_hex_ids(values, prefix="h")
    assert ids.type == pa.string()
    assert ids.to_pylist() == [f"h{int(v):016x}" for v in values]
    assert ids.to_pylist()[0] == "h0000000000000000"
    assert ids.to_pylist()[4] == "hffffffffffffffff"


def test_to_hex_ids_without_prefix_and_with_longer_prefix():
    values = np.array([255, 2**63], dtype=np.uint64)
    assert hashing.to_hex_ids(values).to_pylist() == ["00000000000000ff", "8000000000000000"]
    assert hashing.to_hex_ids(values, prefix="evt-").to_pylist() == ["evt-00000000000000ff", "evt-8000000000000000"]


def test_to_hex_ids_of_hashed_strings():
    hashes = hashing.hash_strings(pa.array(STRINGS))
    ids = hashing.to_hex_ids(hashes, prefix="h").to_pylist()
    assert ids == [f"h{int(h):016x}" for h in pandas_hash(STRINGS)]
    assert all(len(i) == 17 and i == i.lower() for i in ids)


def test_to_hex_ids_empty():
    ids = hashing.to_hex_ids(np.zeros(0, dtype=np.uint64), prefix="h")
    assert ids.type == pa.string()
    assert ids.to_pylist() == []


def test_splitmix64_known_values():
    values = hashing.splitmix64(np.array([0, 1, 2**64 - 1], dtype=np.uint64))
    assert values.dtype == np.uint64
    assert [int(v) for v in values] == [0xE220A8397B1DCDAF, 0x910A2DEC89025CC1, 0xE4D971771B652C20]
    assert int(hashing.splitmix64(0)) == 0xE220A8397B1DCDAF


def test_combine_known_values():
    assert int(hashing.combine(1, 2)) == 0xBCD9DBB49673066B
    assert int(hashing.combine(42, 7, 0)) == 0x55BE888977820BEF
    assert int(hashing.combine(np.uint64(5))) == 0x63033B0CA389C35A


def test_combine_broadcasts_and_depends_on_order():
    arrays = hashing.combine(np.array([1, 2], dtype=np.uint64), 3)
    assert arrays.tolist() == [9716232063330790915, 13066309581097501094]
    assert int(hashing.combine(np.uint64(1), np.uint64(3))) == arrays.tolist()[0]
    assert int(hashing.combine(1, 2)) != int(hashing.combine(2, 1))


def test_to_unit_interval_range():
    h = np.array([0, 1, 2**11 - 1, 2**11, 2**63, 2**64 - 1], dtype=np.uint64)
    u = hashing.to_unit_interval(h)
    assert u.dtype == np.float64
    assert u[0] == 0.0 and u[1] == 0.0 and u[2] == 0.0
    assert u[3] == 2.0**-53
    assert u[4] == 0.5
    assert u[5] == 1.0 - 2.0**-53
    assert ((u >= 0.0) & (u < 1.0)).all()


def test_to_unit_interval_of_mixed_hashes_is_spread():
    u = hashing.to_unit_interval(hashing.splitmix64(np.arange(10_000, dtype=np.uint64)))
    assert ((u >= 0.0) & (u < 1.0)).all()
    counts = np.histogram(u, bins=10, range=(0.0, 1.0))[0]
    assert counts.min() > 850 and counts.max() < 1150


def test_value_positions_equal_index_in_for_any_query():
    rng = np.random.default_rng(3)
    values = pa.array([f"v{i}" for i in rng.permutation(2_000)] + ["", "héllo"])
    lookup = hashing.ValuePositions.of(values)
    assert len(lookup) == len(values) and not lookup.colliding
    query = pa.chunked_array([
        pa.array([f"v{i}" for i in rng.integers(0, 2_500, 5_000)]),  # some outside the set
        pa.array(["", None, "héllo", "missing", None]),
        pa.array([], pa.string()),
    ])
    expected = pc.fill_null(pc.index_in(query, value_set=values), -1).to_numpy(zero_copy_only=False)
    assert (lookup.positions(query) == expected).all()
    assert lookup.positions(pa.array([None, None], pa.string())).tolist() == [-1, -1]
    assert lookup.positions(pa.array([], pa.string())).tolist() == []
    assert hashing.ValuePositions.of(pa.array([], pa.string())).positions(pa.array(["a", None])).tolist() == [-1, -1]
    with pytest.raises(ValueError, match="nulls"):
        hashing.ValuePositions.of(pa.array(["a", None]))


def test_value_positions_never_confuse_values_whose_hashes_are_equal():
    # A set whose stored hash of "a" is the hash of "zzz": a query of "zzz" finds that slot
    # by its hash, and the string comparison turns it away.
    zzz = hashing.hash_strings(pa.array(["zzz"]))
    forged = hashing.ValuePositions(pa.array(["a"]), zzz, np.array([0]), colliding=False)
    assert forged.positions(pa.array(["zzz", "a"])).tolist() == [-1, -1]
    # A set whose own values collide looks up exactly all the same.
    colliding = hashing.ValuePositions(pa.array(["a", "b"]), np.zeros(2, np.uint64), np.array([0, 1]),
                                       colliding=True)
    assert colliding.positions(pa.array(["b", "a", "c", None])).tolist() == [1, 0, -1, -1]
