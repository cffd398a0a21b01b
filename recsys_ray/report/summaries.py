"""What the build report shows, as pure functions over Arrow tables and NumPy arrays.

Large inputs (events, shards, quarantine files) are summarised a partition at a
time into small partial tables, and `combine_*` merges partials exactly, so the
report never needs every row in one place. The statistics then come from the
merged partials. docs/report.md states every definition (ties, edges, nulls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray.stages.split import timestamp_micros

MICROS_PER_DAY = 86_400_000_000

# ---------------------------------------------------------------- daily counts

DAILY = pa.schema([("day", pa.date32()), ("interaction_type", pa.string()), ("count", pa.int64())])


def daily_counts(events: pa.Table) -> pa.Table:
    """Events per UTC calendar day and interaction type in one partition (`DAILY` rows)."""
    if events.num_rows == 0:
        return DAILY.empty_table()
    days = (timestamp_micros(events) // MICROS_PER_DAY).astype(np.int32)
    table = pa.table({"day": pa.array(days, pa.int32()).cast(pa.date32()),
                      "interaction_type": events.column("interaction_type")})
    counted = table.group_by(["day", "interaction_type"], use_threads=False).aggregate([([], "count_all")])
    return _sorted(counted.rename_columns(["day", "interaction_type", "count"]).cast(DAILY), ["day", "interaction_type"])


def combine_daily_counts(partials: list[pa.Table]) -> pa.Table:
    """Sum daily partials of any partitions into one `DAILY` table sorted by day and type."""
    return _sum_by([p.cast(DAILY) for p in partials], DAILY, ["day", "interaction_type"], ["count"])


# ------------------------------------------------- frequencies of per-key counts

FREQUENCIES = pa.schema([("value", pa.int64()), ("keys", pa.int64())])


def count_frequencies(values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """How many keys (users, items) have each count: (value, keys) rows, nulls left out.

    A few thousand distinct values describe millions of keys exactly, so Gini,
    top shares, quantiles and histograms of the counts follow from this table.
    """
    values = pc.drop_null(pc.cast(values, pa.int64()))
    if len(values) == 0:
        return FREQUENCIES.empty_table()
    counted = pc.value_counts(values)
    table = pa.table({"value": counted.field("values"), "keys": pc.cast(counted.field("counts"), pa.int64())})
    return _sorted(table.cast(FREQUENCIES), ["value"])


def combine_count_frequencies(partials: list[pa.Table]) -> pa.Table:
    """Sum frequency partials of disjoint sets of keys."""
    return _sum_by(partials, FREQUENCIES, ["value"], ["keys"])


@dataclass(frozen=True)
class Distribution:
    """A distribution of non-negative per-key counts, as runs of equal values (ascending)."""

    values: np.ndarray  # distinct counts, ascending
    keys: np.ndarray  # how many keys have each

    @classmethod
    def from_frequencies(cls, frequencies: pa.Table) -> "Distribution":
        frequencies = _sorted(frequencies, ["value"])
        return cls(frequencies.column("value").to_numpy().astype(np.int64),
                   frequencies.column("keys").to_numpy().astype(np.int64))

    @property
    def count(self) -> int:
        """Number of keys."""
        return int(self.keys.sum())

    @property
    def total(self) -> int:
        """Sum of the counts over all keys."""
        return int((self.values * self.keys).sum())

    def quantile(self, q: float) -> int:
        """The value at 0-based rank floor(q * (n - 1)) of the ascending counts."""
        if self.count == 0:
            raise ValueError("quantile of an empty distribution")
        rank = math.floor(q * (self.count - 1))
        return int(self.values[np.searchsorted(np.cumsum(self.keys), rank, side="right")])

    def top_sums(self, ranks: np.ndarray) -> np.ndarray:
        """Sum of the `r` largest counts for each r in `ranks` (0 <= r <= n)."""
        ranks = np.asarray(ranks, dtype=np.int64)
        if len(self.values) == 0:
            return np.zeros(len(ranks), dtype=np.int64)
        desc_values, desc_keys = self.values[::-1], self.keys[::-1]
        cum_keys = np.concatenate([[0], np.cumsum(desc_keys)])
        cum_sums = np.concatenate([[0], np.cumsum(desc_values * desc_keys)])
        run = np.clip(np.searchsorted(cum_keys, ranks, side="left") - 1, 0, len(desc_values) - 1)
        return cum_sums[run] + (ranks - cum_keys[run]) * desc_values[run]


def top_share(distribution: Distribution, percent: int) -> float:
    """Share of the total held by the ceil(percent * n / 100) keys with the largest counts (at least one)."""
    if distribution.total == 0:
        return 0.0
    k = max(1, -(-percent * distribution.count // 100))
    return float(distribution.top_sums(np.array([k]))[0]) / distribution.total


def gini(distribution: Distribution) -> float:
    """Gini index of the counts: sum_i sum_j |x_i - x_j| / (2 n^2 mean).

    Computed from the ascending order statistics as
    2 * sum_i i * x_(i) / (n * sum x) - (n + 1) / n, i = 1..n, a run of m equal
    values occupying consecutive positions. 0 when all counts are equal.
    """
    n, total = distribution.count, distribution.total
    if n == 0 or total == 0:
        return 0.0
    starts = np.concatenate([[0], np.cumsum(distribution.keys)[:-1]]).astype(np.float64)
    m = distribution.keys.astype(np.float64)
    position_sums = m * starts + m * (m + 1) / 2  # sum of positions start+1 .. start+m
    weighted = float((distribution.values.astype(np.float64) * position_sums).sum())
    return 2 * weighted / (n * total) - (n + 1) / n


@dataclass(frozen=True)
class LongTail:
    """Concentration of interactions over items (or any keys)."""

    keys: int
    total: int
    top_1pct_share: float
    top_10pct_share: float
    gini: float
    curve_ranks: np.ndarray  # 1-based ranks, log-spaced, ending at `keys`
    curve_shares: np.ndarray  # cumulative share of the total held by the top `rank` keys


def long_tail(distribution: Distribution, points: int = 200) -> LongTail:
    """Top 1 % / 10 % shares, the Gini index and the cumulative share curve by rank."""
    n = distribution.count
    ranks = np.unique(np.round(np.geomspace(1, n, min(points, n))).astype(np.int64)) if n else np.array([], np.int64)
    shares = distribution.top_sums(ranks) / distribution.total if distribution.total else np.zeros(len(ranks))
    return LongTail(n, distribution.total, top_share(distribution, 1), top_share(distribution, 10),
                    gini(distribution), ranks, shares)


@dataclass(frozen=True)
class Histogram:
    """Counts of keys in bins (lo, hi] of integer values."""

    lows: np.ndarray  # exclusive lower bound of each bin
    highs: np.ndarray  # inclusive upper bound
    counts: np.ndarray


def power_of_two_histogram(distribution: Distribution) -> Histogram:
    """Keys per bin of their count: [0, 1], (1, 2], (2, 4], (4, 8], ... up to the largest count."""
    if distribution.count == 0:
        return Histogram(np.array([], np.int64), np.array([], np.int64), np.array([], np.int64))
    largest = int(distribution.values.max())
    top = max(0, math.ceil(math.log2(largest))) if largest > 1 else 0
    highs = np.array([2 ** k for k in range(top + 1)], dtype=np.int64)
    lows = np.concatenate([[-1], highs[:-1]])
    bins = np.searchsorted(highs, distribution.values, side="left")
    counts = np.bincount(bins, weights=distribution.keys, minlength=len(highs)).astype(np.int64)
    return Histogram(lows, highs, counts)


# ------------------------------------------------------------------------ PSI

PSI_EPSILON = 1e-4


def feature_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for null (NaN values count as null too)."""
    return pc.fill_null(pc.cast(column, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Distinct cut points of the reference's non-null values at the 1/bins .. (bins-1)/bins quantiles.

    The k-th cut is the sorted value at 0-based rank floor(k * (n - 1) / bins);
    equal cuts (ties) collapse into one, so a bin is never empty by construction.
    """
    values = np.sort(reference[~np.isnan(reference)])
    if len(values) == 0:
        return np.array([], dtype=np.float64)
    ranks = [(k * (len(values) - 1)) // bins for k in range(1, bins)]
    return np.unique(values[ranks])


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in bins (-inf, e1], (e1, e2], ..., (ek, +inf) and, last, the null (NaN) bin."""
    null = np.isnan(values)
    counts = np.bincount(np.searchsorted(edges, values[~null], side="left"), minlength=len(edges) + 1)
    return np.concatenate([counts, [int(null.sum())]]).astype(np.int64)


def psi(reference_counts: np.ndarray, compared_counts: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index sum_b (q_b - p_b) * ln(q_b / p_b) over the same bins.

    p and q are the bins' shares of each side's rows, each floored at `epsilon`
    (not renormalised) so that an empty bin contributes a finite amount. 0 when
    either side has no rows.
    """
    ref_total, cmp_total = int(np.sum(reference_counts)), int(np.sum(compared_counts))
    if ref_total == 0 or cmp_total == 0:
        return 0.0
    p = np.maximum(np.asarray(reference_counts) / ref_total, epsilon)
    q = np.maximum(np.asarray(compared_counts) / cmp_total, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass(frozen=True)
class FeatureShift:
    """One feature's binned distribution on two sides and their PSI."""

    name: str
    edges: np.ndarray
    reference_counts: np.ndarray  # per bin, the null bin last
    compared_counts: np.ndarray
    psi: float


def feature_shift(name: str, reference: np.ndarray, compared: np.ndarray, bins: int = 10,
                  epsilon: float = PSI_EPSILON) -> FeatureShift:
    """Bin both sides by the reference's quantile cuts (`quantile_edges`) and compare them."""
    edges = quantile_edges(reference, bins)
    ref_counts, cmp_counts = bin_counts(reference, edges), bin_counts(compared, edges)
    return FeatureShift(name, edges, ref_counts, cmp_counts, psi(ref_counts, cmp_counts, epsilon))


def popularity_shift(reference: pa.Table, compared: pa.Table, bins: int = 10,
                     epsilon: float = PSI_EPSILON) -> FeatureShift:
    """PSI of where interactions fall over the reference's item popularity ranks.

    Both tables hold (item_id, count). Reference items are ranked by count
    descending, ties by item_id ascending; the item at 0-based rank r falls in
    bin floor(bins * r / n). Items absent from the reference form a last bin
    ("new"). Each side's bin weight is its count summed over the bin's items.
    """
    ref = reference.sort_by([("count", "descending"), ("item_id", "ascending")])
    n = ref.num_rows
    ref_bins = (np.arange(n, dtype=np.int64) * bins) // max(n, 1)
    ref_counts = np.bincount(ref_bins, weights=ref.column("count").to_numpy(), minlength=bins + 1)
    position = pc.index_in(compared.column("item_id"), value_set=ref.column("item_id"))
    found = pc.fill_null(position, -1).to_numpy(zero_copy_only=False)
    cmp_bins = np.where(found >= 0, ref_bins[np.maximum(found, 0)] if n else 0, bins)
    cmp_counts = np.bincount(cmp_bins, weights=compared.column("count").to_numpy(), minlength=bins + 1)
    ref_counts, cmp_counts = ref_counts.astype(np.int64), cmp_counts.astype(np.int64)
    return FeatureShift("item popularity ranks", np.arange(1, bins + 1, dtype=np.float64), ref_counts, cmp_counts,
                        psi(ref_counts, cmp_counts, epsilon))


# ---------------------------------------------------------------- cold start

TEST_KEYS = pa.schema([("kind", pa.string()), ("key", pa.string()), ("positives", pa.int64())])


def test_positive_keys(rows: pa.Table) -> pa.Table:
    """Distinct users and items of one test shard's positives, with their positive counts (`TEST_KEYS`)."""
    positives = rows.filter(pc.equal(rows.column("label"), 1))
    parts = []
    for kind, column in (("user", "user_id"), ("item", "item_id")):
        counted = positives.select([column]).group_by(column, use_threads=False).aggregate([([], "count_all")])
        parts.append(pa.table({"kind": pa.array([kind] * counted.num_rows, pa.string()),
                               "key": counted.column(column), "positives": counted.column("count_all")}))
    return pa.concat_tables(parts).cast(TEST_KEYS)


def combine_test_keys(partials: list[pa.Table]) -> pa.Table:
    """Merge `test_positive_keys` partials of several shards."""
    return _sum_by(partials, TEST_KEYS, ["kind", "key"], ["positives"])


@dataclass(frozen=True)
class ColdStart:
    """Test users and items with no training-window event, and the test positives they hold."""

    test_users: int
    cold_users: int
    test_items: int
    cold_items: int
    test_positives: int
    positives_on_cold_users: int
    positives_on_cold_items: int

    @staticmethod
    def share(part: int, whole: int) -> float:
        return part / whole if whole else 0.0


def cold_start(test_keys: pa.Table, train_users: pa.Array | pa.ChunkedArray,
               train_items: pa.Array | pa.ChunkedArray) -> ColdStart:
    """Compare combined test keys with the ids of the training-window feature tables."""
    figures = {}
    for kind, known in (("user", train_users), ("item", train_items)):
        keys = test_keys.filter(pc.equal(test_keys.column("kind"), kind))
        cold = pc.invert(pc.is_in(keys.column("key"), value_set=_flat(known)))
        positives = keys.column("positives")
        figures[kind] = (keys.num_rows, int(pc.sum(pc.cast(cold, pa.int64())).as_py() or 0),
                         int(pc.sum(positives).as_py() or 0), int(pc.sum(pc.filter(positives, cold)).as_py() or 0))
    users, items = figures["user"], figures["item"]
    return ColdStart(test_users=users[0], cold_users=users[1], test_items=items[0], cold_items=items[1],
                     test_positives=items[2], positives_on_cold_users=users[3], positives_on_cold_items=items[3])


# ----------------------------------------------------------------- quarantine

QUARANTINE_SAMPLE_COLUMNS = ("dataset", "source", "row", "reason", "field", "message", "original")


def quarantine_samples(rejected: pa.Table, per_reason: int) -> pa.Table:
    """The first `per_reason` rejected rows of each reason, by (source, row) ascending.

    Taking the first rows of each partition and then the first of those gives
    the same rows whatever the partitioning, so the report is deterministic.
    """
    rejected = rejected.select(list(QUARANTINE_SAMPLE_COLUMNS))
    if rejected.num_rows == 0:
        return rejected
    ordered = _sorted(rejected, ["reason", "source", "row"])
    reasons = ordered.column("reason").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.concatenate([[True], reasons[1:] != reasons[:-1]]))
    run_start = np.repeat(starts, np.diff(np.concatenate([starts, [len(reasons)]])))
    keep = (np.arange(len(reasons)) - run_start) < per_reason
    return ordered.filter(pa.array(keep))


def combine_quarantine_samples(partials: list[pa.Table], per_reason: int) -> pa.Table:
    """Merge per-partition samples into the first `per_reason` rows of each reason overall."""
    partials = [p for p in partials if p.num_rows]
    if not partials:
        return pa.table({c: pa.array([], pa.string()) for c in QUARANTINE_SAMPLE_COLUMNS})
    return quarantine_samples(pa.concat_tables(partials, promote_options="permissive"), per_reason)


# ---------------------------------------------------------------------- drift

@dataclass(frozen=True)
class CountChange:
    """One count in this version and the previous one."""

    name: str
    current: int
    previous: int

    @property
    def change(self) -> int:
        return self.current - self.previous

    @property
    def relative(self) -> float | None:
        """(current - previous) / previous; None when the previous count is 0."""
        return self.change / self.previous if self.previous else None

    def exceeds(self, threshold: float) -> bool:
        """|relative change| above `threshold`; from 0 to anything else always counts."""
        if self.previous == 0:
            return self.current != 0
        return abs(self.relative) > threshold


@dataclass(frozen=True)
class ItemTurnover:
    """Items present in only one of two versions' training-window item tables."""

    current_items: int
    previous_items: int
    new_items: int
    vanished_items: int
    new_examples: tuple[str, ...]
    vanished_examples: tuple[str, ...]


def item_turnover(current: pa.Array | pa.ChunkedArray, previous: pa.Array | pa.ChunkedArray,
                  examples: int = 5) -> ItemTurnover:
    """New items (in `current`, not in `previous`) and vanished ones (the reverse), with a few
    examples of each (smallest ids first)."""
    current, previous = pc.unique(_flat(current)), pc.unique(_flat(previous))
    new = pc.filter(current, pc.invert(pc.is_in(current, value_set=previous)))
    vanished = pc.filter(previous, pc.invert(pc.is_in(previous, value_set=current)))
    return ItemTurnover(len(current), len(previous), len(new), len(vanished),
                        tuple(pc.take(new, pc.sort_indices(new))[:examples].to_pylist()),
                        tuple(pc.take(vanished, pc.sort_indices(vanished))[:examples].to_pylist()))


# ------------------------------------------------------------- one version

USER_COUNTS = pa.schema([("user_id", pa.string()), ("user_total_interactions", pa.int64())])
ITEM_COUNTS = pa.schema([("item_id", pa.string()), ("item_total_interactions", pa.int64())])

# Charted train vs test when present; every numeric feature gets a PSI.
MAIN_FEATURES: tuple[str, ...] = (
    "user_total_interactions", "user_days_active", "user_recency_days", "user_purchase_rate",
    "item_total_interactions", "item_popularity", "item_ctr", "item_purchase_rate",
)
_NOT_FEATURES = ("_id", "_idx", "_index")


def numeric_features(schema: pa.Schema) -> list[str]:
    """Training columns whose distributions the report compares: integer or floating
    `user_*` / `item_*` columns, ids and vocabulary indices excepted."""
    return [f.name for f in schema
            if f.name.startswith(("user_", "item_")) and not f.name.endswith(_NOT_FEATURES)
            and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]


@dataclass(frozen=True)
class VersionSummary:
    """What the report shows about one version."""

    uri: str
    manifest: dict[str, Any]
    daily: pa.Table | None
    quarantine_samples: pa.Table
    users: Distribution  # training-window events per user
    items: pa.Table  # (item_id, count): training-window events per item
    long_tail: LongTail
    activity: Histogram
    cold_start: ColdStart
    train_sample: dict[str, np.ndarray]
    test_sample: dict[str, np.ndarray]
    feature_shifts: list[FeatureShift] = field(default_factory=list)  # train (reference) vs test

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest.get("counts", {})


def summarize(manifest: dict[str, Any], uri: str, settings, *, daily: pa.Table | None, users: pa.Table,
              items: pa.Table, test_keys: pa.Table, quarantine_samples: pa.Table,
              train_sample: dict[str, np.ndarray], test_sample: dict[str, np.ndarray]) -> VersionSummary:
    """Assemble a version's summary from its merged partials (`settings`: a `ReportConfig`)."""
    user_distribution = Distribution.from_frequencies(count_frequencies(users.column("user_total_interactions")))
    item_distribution = Distribution.from_frequencies(count_frequencies(items.column("item_total_interactions")))
    shifts = [feature_shift(name, train_sample[name], test_sample.get(name, np.array([])), settings.psi_bins,
                            settings.psi_epsilon)
              for name in train_sample if name in test_sample]
    return VersionSummary(
        uri=uri, manifest=manifest, daily=daily, quarantine_samples=quarantine_samples,
        users=user_distribution,
        items=pa.table({"item_id": items.column("item_id"), "count": items.column("item_total_interactions")}),
        long_tail=long_tail(item_distribution), activity=power_of_two_histogram(user_distribution),
        cold_start=cold_start(test_keys, users.column("user_id"), items.column("item_id")),
        train_sample=train_sample, test_sample=test_sample, feature_shifts=shifts)


# Counts compared between versions: (label, path into the manifest's counts).
DRIFT_COUNTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("input rows", ("input_rows",)), ("valid", ("valid",)), ("rejected", ("rejected",)),
    ("duplicates", ("duplicates",)), ("events", ("events",)),
    ("train positives", ("train_positives",)), ("train negatives", ("train_negatives",)),
    ("test positives", ("test_positives",)), ("test negatives", ("test_negatives",)),
    ("negative shortfall", ("negative_shortfall",)), ("catalog items", ("items", "unique")),
)


def manifest_count(counts: dict[str, Any], path: tuple[str, ...]) -> int | None:
    """A count from the manifest (rejected: summed over reasons); None when absent."""
    value: Any = counts
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, dict):
        return int(sum(value.values()))
    return int(value)


@dataclass(frozen=True)
class Drift:
    """This version against a previous one."""

    previous_uri: str
    previous_version: str
    counts: list[CountChange]
    feature_shifts: list[FeatureShift]  # previous train sample (reference) vs this one
    popularity: FeatureShift
    items: ItemTurnover


def drift(current: VersionSummary, previous: VersionSummary, settings) -> Drift:
    """Counts and their change, feature and popularity PSI, new and vanished items."""
    changes = []
    for label, path in DRIFT_COUNTS:
        now, before = manifest_count(current.counts, path), manifest_count(previous.counts, path)
        if now is not None and before is not None:
            changes.append(CountChange(label, now, before))
    changes.append(CountChange("users with training events", current.users.count, previous.users.count))
    changes.append(CountChange("items with training events", current.items.num_rows, previous.items.num_rows))
    shifts = [feature_shift(name, previous.train_sample[name], current.train_sample[name], settings.psi_bins,
                            settings.psi_epsilon)
              for name in current.train_sample if name in previous.train_sample]
    return Drift(previous.uri, str(previous.manifest.get("version", "")), changes, shifts,
                 popularity_shift(previous.items, current.items, settings.psi_bins, settings.psi_epsilon),
                 item_turnover(current.items.column("item_id"), previous.items.column("item_id")))


# -------------------------------------------------------------------- helpers

def _flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def _sum_by(partials: list[pa.Table], schema: pa.Schema, keys: list[str], sums: list[str]) -> pa.Table:
    partials = [p.select(schema.names).cast(schema) for p in partials if p.num_rows]
    if not partials:
        return schema.empty_table()
    table = pa.concat_tables(partials)
    summed = table.group_by(keys, use_threads=False).aggregate([(c, "sum") for c in sums])
    summed = summed.rename_columns([c.removesuffix("_sum") if c.removesuffix("_sum") in sums else c
                                    for c in summed.column_names])
    return _sorted(summed.select(schema.names).cast(schema), keys)
