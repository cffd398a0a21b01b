"""Synthetic recommender data: a catalog and Zipf-skewed interactions, optionally dirty.

Users fall into latent taste groups (`TasteModel`) whose events lean toward a
few categories and brands and drift over the window, so a model that learns
who likes what beats popularity; `taste_groups=0` draws items independently
of users, exactly as before taste groups existed.

Everything is vectorized NumPy/Arrow and handed out in chunks of
`SyntheticConfig.chunk_rows` rows, so tens of millions of interactions need
only one chunk's worth of memory at a time. Rows are drawn in fixed blocks of
`BLOCK_ROWS`, each from its own random stream keyed by (seed, block): the data
depends on the seed and sizes alone, never on the chunk size or the format.

`inject_dirty_rows` replaces a share of rows with invalid ones, one defect per
row, covering every interaction reason code of `recsys_ray.schemas`, and copies
some valid rows over others as exact duplicates; `DirtyPlan` says which rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from recsys_ray import schemas

DEFAULT_END = datetime(2026, 11, 1, tzinfo=timezone.utc)

TYPE_MIX: dict[str, float] = {
    "view": 0.50,
    "click": 0.25,
    "like": 0.12,
    "purchase": 0.08,
    "add_to_cart": 0.05,
}
RATED_TYPES: tuple[str, ...] = ("like", "purchase")
RATED_SHARE = 0.7
RATING_WEIGHTS = np.array([0.05, 0.08, 0.17, 0.35, 0.35])  # ratings 1..5

CATEGORY_NOUNS: dict[str, tuple[str, ...]] = {
    "electronics": ("Headphones", "Speaker", "Charger", "Monitor"),
    "books": ("Novel", "Cookbook", "Atlas", "Biography"),
    "home": ("Lamp", "Blanket", "Vase", "Clock"),
    "garden": ("Planter", "Hose", "Trowel", "Bench"),
    "toys": ("Puzzle", "Robot", "Kite", "Board Game"),
    "sports": ("Yoga Mat", "Football", "Water Bottle", "Racket"),
    "beauty": ("Serum", "Lipstick", "Face Mask", "Perfume"),
    "fashion": ("Jacket", "Sneakers", "Scarf", "Backpack"),
    "grocery": ("Coffee", "Olive Oil", "Tea", "Granola"),
    "automotive": ("Car Wax", "Floor Mats", "Dash Cam", "Jump Starter"),
    "music": ("Vinyl", "Guitar Strings", "Ukulele", "Metronome"),
    "health": ("Vitamins", "Thermometer", "Massager", "First Aid Kit"),
}
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_NOUNS)
# Median price per category in the catalog's currency; prices are log-normal around it.
CATEGORY_PRICE: tuple[float, ...] = (120.0, 15.0, 40.0, 30.0, 25.0, 35.0, 28.0, 60.0, 9.0, 45.0, 30.0, 20.0)
BRANDS: tuple[str, ...] = (
    "Acorn", "Bluefin", "Cobalt", "Dune", "Ember", "Fjord", "Granite", "Harbor",
    "Indigo", "Juniper", "Kestrel", "Lumen", "Meridian", "Nimbus", "Orchard",
)
ADJECTIVES: tuple[str, ...] = (
    "Classic", "Compact", "Deluxe", "Eco", "Essential", "Everyday", "Premium", "Pro",
    "Smart", "Travel", "Ultra", "Vintage",
)

INTERACTION_REASONS = schemas.INTERACTION_REASONS

# One defect per dirty row: (column, replacement) variants per reason. None is a null.
# Values avoid the texts a CSV reader takes for null ("NA", "n/a", "null", ...).
_MISSING_VARIANTS: tuple[tuple[str, str | None], ...] = (
    ("user_id", None), ("user_id", "   "), ("item_id", None), ("item_id", ""),
    ("interaction_type", None), ("timestamp", None), ("timestamp", " "),
)
_DIRTY_VALUES: dict[str, tuple[str, ...]] = {
    "unknown_interaction_type": ("share", "wishlist", "dislike", "VIEWED", "rate"),
    "bad_timestamp": ("not a timestamp", "2026-13-45T25:61:00Z", "yesterday", "2026/10/01 noon"),
    "timestamp_out_of_range": ("2199-01-01T00:00:00Z", "1969-07-20T20:17:40Z", "-86400"),
    "bad_rating": ("five", "4 stars", "?", "high"),
    "rating_out_of_range": ("0", "6", "10", "-1", "5.5"),
}

_DIRTY_COLUMNS: dict[str, str] = {
    "unknown_interaction_type": "interaction_type",
    "bad_timestamp": "timestamp",
    "timestamp_out_of_range": "timestamp",
    "bad_rating": "rating",
    "rating_out_of_range": "rating",
}

# Rows are drawn in blocks of this many, each from its own random stream, so the
# data does not depend on how many rows are written at a time.
BLOCK_ROWS = 1 << 16
_ITEMS_STREAM, _INTERACTIONS_STREAM, _DIRTY_STREAM, _POPULARITY_STREAM = 1, 2, 3, 4


class SyntheticConfig(BaseModel):
    """What to generate. The same config always gives the same rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(default=10_000, ge=1)
    items: int = Field(default=5_000, ge=1)
    interactions: int = Field(default=100_000, ge=0)
    seed: int = Field(default=42, ge=0)
    user_skew: float = Field(default=0.8, ge=0.0, le=5.0, description="Zipf exponent of user activity")
    item_skew: float = Field(default=1.0, ge=0.0, le=5.0, description="Zipf exponent of item popularity")
    end: datetime = Field(default=DEFAULT_END, description="Latest event time (exclusive)")
    days: float = Field(default=90.0, gt=0.0)
    dirty_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    duplicate_fraction: float | None = Field(
        default=None, ge=0.0, lt=1.0, description="Exact duplicate rows; default half of dirty_fraction"
    )
    max_id_length: int = Field(default=128, ge=1, description="The validator's id limit, exceeded on purpose")
    taste_groups: int = Field(default=30, ge=0, le=1000,
                              description="Latent user groups with preferred categories and brands; "
                                          "0: users and items independent")
    taste_strength: float = Field(default=16.0, ge=1.0, le=1000.0,
                                  description="Weight factor of a preferred category, and of a preferred brand")
    taste_drift: float = Field(default=1.0, ge=0.0, le=1.0,
                               description="Share of a group's events that use its late tastes at the window's end")
    chunk_rows: int = Field(default=1 << 20, ge=1, description="Rows per write; does not change the data")

    @field_validator("end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    @property
    def dirty(self) -> bool:
        return self.dirty_fraction > 0 or bool(self.duplicate_fraction)

    @property
    def effective_duplicate_fraction(self) -> float:
        return self.dirty_fraction / 2 if self.duplicate_fraction is None else self.duplicate_fraction

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)

    def chunk_bounds(self, total: int) -> list[tuple[int, int]]:
        """[start, stop) row ranges of the chunks of a `total`-row output (one empty chunk for 0)."""
        return [(lo, min(lo + self.chunk_rows, total)) for lo in range(0, total, self.chunk_rows)] or [(0, 0)]


def _block_range(lo: int, hi: int) -> range:
    """The blocks holding rows [lo, hi); block 0 alone for an empty range."""
    return range(lo // BLOCK_ROWS, (hi - 1) // BLOCK_ROWS + 1) if hi > lo else range(0, 1)


def _block_bounds(block: int, total: int) -> tuple[int, int]:
    return min(block * BLOCK_ROWS, total), min((block + 1) * BLOCK_ROWS, total)


def _rng(cfg: SyntheticConfig, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, stream, index]))


def id_strings(prefix: str, indices: np.ndarray, total: int) -> pa.Array:
    """Ids like "u000123": `prefix` and the zero-padded index, at least six digits."""
    width = max(6, len(str(max(total - 1, 0))))
    digits = pc.utf8_lpad(pc.cast(pa.array(indices, pa.int64()), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _draw(cdf: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, uniforms, side="right"), len(cdf) - 1)


def zipf_ranks(uniforms: np.ndarray, n: int, exponent: float) -> np.ndarray:
    """0-based ranks in [0, n) from uniforms in [0, 1), Zipf-like with `exponent`.

    Inverts the CDF of a power law on [0.5, n + 0.5) and rounds to the nearest
    rank: O(1) per draw however large n is, and close to an exact Zipf law
    (rank r has probability ~ r^-exponent). Exponent 0 is uniform.
    """
    lo, hi = 0.5, n + 0.5
    one_minus = 1.0 - exponent
    if abs(one_minus) < 1e-9:
        x = lo * np.exp(uniforms * np.log(hi / lo))
    else:
        a, b = lo ** one_minus, hi ** one_minus
        x = (a + uniforms * (b - a)) ** (1.0 / one_minus)
    return np.clip(np.floor(x + 0.5).astype(np.int64) - 1, 0, n - 1)


# --- catalog --------------------------------------------------------------------------------


def generate_items(cfg: SyntheticConfig, start: int = 0, stop: int | None = None) -> pa.Table:
    """Catalog rows `start`..`stop` (default: all): id, title, category, brand, price, description."""
    stop = cfg.items if stop is None else min(stop, cfg.items)
    start = max(0, min(start, stop))
    blocks = _block_range(start, stop)
    table = pa.concat_tables([_items_block(cfg, block) for block in blocks])
    return table.slice(start - blocks[0] * BLOCK_ROWS, stop - start)


def item_chunks(cfg: SyntheticConfig) -> Iterator[pa.Table]:
    for lo, hi in cfg.chunk_bounds(cfg.items):
        yield generate_items(cfg, lo, hi)


def _attribute_codes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An items block's category and brand codes: the first draws of its stream."""
    return rng.integers(0, len(CATEGORIES), n), rng.integers(0, len(BRANDS), n)


def catalog_codes(cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Category and brand code (positions in `CATEGORIES`, `BRANDS`) of every item, as in the catalog."""
    parts = []
    for block in _block_range(0, cfg.items):
        lo, hi = _block_bounds(block, cfg.items)
        parts.append(_attribute_codes(_rng(cfg, _ITEMS_STREAM, block), hi - lo))
    return (np.concatenate([c for c, _ in parts]).astype(np.int64),
            np.concatenate([b for _, b in parts]).astype(np.int64))


def _items_block(cfg: SyntheticConfig, block: int) -> pa.Table:
    rng = _rng(cfg, _ITEMS_STREAM, block)
    lo, hi = _block_bounds(block, cfg.items)
    n = hi - lo
    category, brand = _attribute_codes(rng, n)
    adjective = rng.integers(0, len(ADJECTIVES), n)
    noun_choice = rng.integers(0, 4, n)
    median = np.asarray(CATEGORY_PRICE)[category]
    price = np.round(median * rng.lognormal(0.0, 0.6, n), 2).clip(0.5)

    brands = pa.array(BRANDS).take(pa.array(brand))
    adjectives = pa.array(ADJECTIVES).take(pa.array(adjective))
    nouns = pa.array([noun for c in CATEGORIES for noun in CATEGORY_NOUNS[c]]).take(
        pa.array(category * 4 + noun_choice))
    categories = pa.array(CATEGORIES).take(pa.array(category))
    title = pc.binary_join_element_wise(brands, adjectives, nouns, " ")
    description = pc.binary_join_element_wise(
        pc.binary_join_element_wise(adjectives, pc.utf8_lower(nouns), " "),
        " from ", brands, ", in ", categories, ".", "")
    return pa.table(
        {
            "item_id": id_strings("i", np.arange(lo, hi), cfg.items),
            "title": title,
            "category": categories,
            "brand": brands,
            "price": pa.array(price, pa.float64()),
            "description": description,
        }
    )


# --- interactions ---------------------------------------------------------------------------


CATEGORIES_PER_GROUP = 2
BRANDS_PER_GROUP = 3
_CELLS = len(CATEGORIES) * len(BRANDS)
_GUIDED_STEPS = 4


@dataclass(frozen=True)
class GuidedDraw:
    """Exact weighted draws from many small discrete distributions at once, O(1) expected per draw.

    Distribution g owns entries bounds[g]..bounds[g + 1] of the flat arrays;
    `cdf` holds g + the cumulative share of each entry in it, and `guide`
    (one slot per entry, Chen's guide table) the first entry whose cdf exceeds
    g + slot / size, so a draw reads its slot and steps right past a couple
    of entries at most on average. Entries of weight 0 are never drawn.
    """

    cdf: np.ndarray
    guide: np.ndarray
    bounds: np.ndarray
    last: np.ndarray  # last entry of positive weight of each distribution

    @classmethod
    def from_weights(cls, weights: np.ndarray, bounds: np.ndarray) -> "GuidedDraw":
        weights = np.asarray(weights, dtype=np.float64)
        sizes = np.diff(bounds)
        group = np.repeat(np.arange(len(sizes)), sizes)
        cumulative = np.cumsum(weights)
        before = np.concatenate([[0.0], cumulative])[bounds]
        totals = before[1:] - before[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            cdf = group + (cumulative - before[:-1][group]) / totals[group]
        slot = np.arange(len(weights)) - bounds[:-1][group]
        guide = np.searchsorted(cdf, group + slot / np.maximum(sizes[group], 1), side="right")
        positive = np.flatnonzero(weights > 0)
        last = positive[np.maximum(np.searchsorted(positive, bounds[1:], side="left") - 1, 0)]
        return cls(cdf, np.minimum(guide, np.maximum(bounds[1:][group] - 1, 0)), np.asarray(bounds), last)

    def draw(self, group: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Flat index of one draw from distribution `group[j]` with uniform `uniforms[j]`."""
        start = self.bounds[group]
        size = self.bounds[group + 1] - start
        target = group + uniforms
        at = self.guide[start + np.minimum((uniforms * size).astype(np.int64), size - 1)]
        last = self.last[group]
        pending = np.flatnonzero((self.cdf[at] <= target) & (at < last))
        for _ in range(_GUIDED_STEPS):
            if len(pending) == 0:
                break
            at[pending] += 1
            pending = pending[(self.cdf[at[pending]] <= target[pending]) & (at[pending] < last[pending])]
        if len(pending):  # the few still short of their entry: a binary search
            at[pending] = np.searchsorted(self.cdf, target[pending], side="right")
        return np.minimum(at, last)


@dataclass(frozen=True)
class TasteModel:
    """Latent taste groups: which items a user's events go to, and how that drifts.

    Every user belongs to one of `groups` groups. A group has two profiles,
    early and late, each a set of `CATEGORIES_PER_GROUP` preferred categories
    and `BRANDS_PER_GROUP` preferred brands; the late one is one slot further
    along seeded cycles of the categories and of the brands, so it keeps all
    but one of each. An event at window fraction f in [0, 1) uses the late
    profile with probability `drift` * f. Under a profile, item i is drawn with
    probability proportional to w_i * s^[category(i) preferred] *
    s^[brand(i) preferred], with w_i = (popularity rank of i + 1)^-item_skew and
    s = `strength`: the global Zipf popularity, tilted toward the profile's
    categories and brands (with s = 1 every user follows the global law). The
    draw picks a (category, brand) cell, then an item within it.
    """

    groups: int
    strength: float
    drift: float
    group_of_user: np.ndarray          # (users,) group of each user index
    categories: np.ndarray             # (groups, 2, CATEGORIES_PER_GROUP) category codes; [:, 0] early, [:, 1] late
    brands: np.ndarray                 # (groups, 2, BRANDS_PER_GROUP) brand codes
    item_category: np.ndarray          # (items,) category code of each item index
    item_brand: np.ndarray             # (items,) brand code of each item index
    item_weight: np.ndarray            # (items,) w_i
    cells: GuidedDraw = field(repr=False)          # per profile (2 * group + late): P(cell)
    cell_items: GuidedDraw = field(repr=False)     # per cell: P(item | cell) = w_i / sum of the cell's w
    items_by_cell: np.ndarray = field(repr=False)  # item index of each cell_items entry

    @classmethod
    def from_config(cls, cfg: SyntheticConfig, item_of_rank: np.ndarray, rng: np.random.Generator) -> "TasteModel":
        groups = cfg.taste_groups
        group_of_user = rng.integers(0, groups, cfg.users).astype(np.int16 if groups < 2**15 else np.int32)
        category_cycle = rng.permutation(len(CATEGORIES))
        brand_cycle = rng.permutation(len(BRANDS))
        slot = np.arange(groups)[:, None, None]
        late = np.arange(2)[None, :, None]
        categories = category_cycle[(slot * CATEGORIES_PER_GROUP + late
                                     + np.arange(CATEGORIES_PER_GROUP)) % len(CATEGORIES)]
        brands = brand_cycle[(slot * BRANDS_PER_GROUP + late + np.arange(BRANDS_PER_GROUP)) % len(BRANDS)]

        item_category, item_brand = catalog_codes(cfg)
        rank_of_item = np.empty(cfg.items, dtype=np.int64)
        rank_of_item[item_of_rank] = np.arange(cfg.items)
        item_weight = np.power(rank_of_item + 1.0, -cfg.item_skew)
        cell = item_category * len(BRANDS) + item_brand
        items_by_cell = np.lexsort((rank_of_item, cell))
        cell_bounds = np.searchsorted(cell[items_by_cell], np.arange(_CELLS + 1))
        cell_items = GuidedDraw.from_weights(item_weight[items_by_cell], cell_bounds)

        cell_weight = np.bincount(cell, weights=item_weight, minlength=_CELLS)
        cell_category, cell_brand = np.divmod(np.arange(_CELLS), len(BRANDS))
        preferred_category = (cell_category[None, :, None] == categories.reshape(groups * 2, 1, -1)).any(axis=2)
        preferred_brand = (cell_brand[None, :, None] == brands.reshape(groups * 2, 1, -1)).any(axis=2)
        preference = (cell_weight[None, :] * np.where(preferred_category, cfg.taste_strength, 1.0)
                      * np.where(preferred_brand, cfg.taste_strength, 1.0))
        cells = GuidedDraw.from_weights(preference.ravel(), np.arange(groups * 2 + 1) * _CELLS)
        return cls(groups, cfg.taste_strength, cfg.taste_drift, group_of_user, categories, brands,
                   item_category, item_brand, item_weight, cells, cell_items, items_by_cell.astype(np.int64))

    def late_profile(self, window_fraction: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Whether each event (at this fraction of the window) uses its group's late profile."""
        return uniforms < self.drift * window_fraction

    def items(self, users: np.ndarray, late: np.ndarray, cell_uniforms: np.ndarray,
              item_uniforms: np.ndarray) -> np.ndarray:
        """Item index of each event of `users` under their group's early or late profile."""
        profile = 2 * self.group_of_user[users].astype(np.int64) + late
        cell = self.cells.draw(profile, cell_uniforms) - profile * _CELLS
        return self.items_by_cell[self.cell_items.draw(cell, item_uniforms)]


def taste_model(cfg: SyntheticConfig) -> TasteModel | None:
    """The taste groups behind `cfg`'s interactions (None without groups)."""
    return _Population(cfg).tastes


class _Population:
    """Who acts and on what: Zipf ranks mapped to ids by a seeded shuffle, so the
    most active user and the most popular item are not simply the first ids."""

    # Up to this many ids are formatted once and looked up; beyond, block by block.
    VOCABULARY_LIMIT = 4_000_000

    def __init__(self, cfg: SyntheticConfig) -> None:
        rng = _rng(cfg, _POPULARITY_STREAM)
        self.cfg = cfg
        index_type = np.int32 if max(cfg.users, cfg.items) < 2**31 else np.int64
        self.user_of_rank = rng.permutation(cfg.users).astype(index_type)
        self.item_of_rank = rng.permutation(cfg.items).astype(index_type)
        self.type_cdf = np.cumsum([TYPE_MIX[t] for t in schemas.INTERACTION_TYPES])
        self.type_cdf /= self.type_cdf[-1]
        self.rating_cdf = np.cumsum(RATING_WEIGHTS) / RATING_WEIGHTS.sum()
        # Drawn after the permutations, so that without taste groups the stream is as it always was.
        self.tastes = TasteModel.from_config(cfg, self.item_of_rank, rng) if cfg.taste_groups else None
        self._vocabulary: dict[str, pa.Array] = {}

    def users(self, uniforms: np.ndarray) -> np.ndarray:
        return self.user_of_rank[zipf_ranks(uniforms, self.cfg.users, self.cfg.user_skew)]

    def items(self, uniforms: np.ndarray) -> np.ndarray:
        return self.item_of_rank[zipf_ranks(uniforms, self.cfg.items, self.cfg.item_skew)]

    def ids(self, prefix: str, indices: np.ndarray, total: int) -> pa.Array:
        if total > self.VOCABULARY_LIMIT:
            return id_strings(prefix, indices, total)
        if prefix not in self._vocabulary:
            self._vocabulary[prefix] = id_strings(prefix, np.arange(total), total)
        return self._vocabulary[prefix].take(pa.array(indices))


def interaction_chunks(cfg: SyntheticConfig) -> Iterator[tuple[pa.Table, "DirtyPlan"]]:
    """The interactions, `cfg.chunk_rows` at a time, each with its dirty-row plan (empty when clean).

    Timestamps rise through the whole output, as in an event log. Clean rows
    carry a typed timestamp and a numeric rating; dirty outputs carry both as
    text, since that is how invalid values reach a pipeline.
    """
    population = _Population(cfg)
    for lo, hi in cfg.chunk_bounds(cfg.interactions):
        yield _interaction_rows(cfg, population, lo, hi)


def generate_interactions(cfg: SyntheticConfig) -> pa.Table:
    """All interactions as one table (for tests and small outputs; large ones go by chunk)."""
    return pa.concat_tables([table for table, _ in interaction_chunks(cfg)])


def _interaction_rows(cfg: SyntheticConfig, population: _Population, lo: int,
                      hi: int) -> tuple[pa.Table, DirtyPlan]:
    blocks = _block_range(lo, hi)
    tables, plans, offset = [], [], 0
    for block in blocks:
        table = _interactions_block(cfg, population, block)
        plan = DirtyPlan()
        if cfg.dirty:
            seed = int(np.random.SeedSequence([cfg.seed, _DIRTY_STREAM, block]).generate_state(1)[0])
            table, plan = inject_dirty_rows_with_plan(
                table, cfg.dirty_fraction, seed,
                duplicate_fraction=cfg.effective_duplicate_fraction, max_id_length=cfg.max_id_length)
        tables.append(table)
        plans.append(plan.shifted(offset))
        offset += table.num_rows
    first = lo - blocks[0] * BLOCK_ROWS
    table = pa.concat_tables(tables).slice(first, hi - lo)
    return table, DirtyPlan.concat(plans).window(first, hi - lo)


def _interactions_block(cfg: SyntheticConfig, population: _Population, block: int) -> pa.Table:
    rng = _rng(cfg, _INTERACTIONS_STREAM, block)
    lo, hi = _block_bounds(block, cfg.interactions)
    n = hi - lo
    users = population.users(rng.random(n))
    item_uniforms = rng.random(n)
    types = _draw(population.type_cdf, rng.random(n))

    # This block's share of the window, so that the whole log is in time order.
    start_ms = int(cfg.start.timestamp() * 1000)
    span_ms = int((cfg.end - cfg.start).total_seconds() * 1000)
    total = max(cfg.interactions, 1)
    first = start_ms + span_ms * lo // total
    width = span_ms * hi // total - span_ms * lo // total
    millis = first + np.sort(rng.integers(0, max(width, 1), n))

    rated_codes = [schemas.INTERACTION_TYPES.index(t) for t in RATED_TYPES]
    rated = np.isin(types, rated_codes) & (rng.random(n) < RATED_SHARE)
    stars = (_draw(population.rating_cdf, rng.random(n)) + 1).astype(np.float64)
    if population.tastes is None:
        items = population.items(item_uniforms)
    else:
        # Drawn last, so that the draws above are those of the generator without taste groups.
        late = population.tastes.late_profile((millis - start_ms) / max(span_ms, 1), rng.random(n))
        items = population.tastes.items(users, late, rng.random(n), item_uniforms)

    return pa.table(
        {
            "user_id": population.ids("u", users, cfg.users),
            "item_id": population.ids("i", items, cfg.items),
            "interaction_type": pa.array(schemas.INTERACTION_TYPES).take(pa.array(types)),
            "timestamp": pa.array(millis, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "rating": pa.array(stars, pa.float64(), mask=~rated),
        }
    )


# --- dirty rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DirtyPlan:
    """Which rows of a chunk were made invalid (and why) or turned into duplicates."""

    invalid_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reasons: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    duplicate_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    duplicate_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def concat(cls, plans: list["DirtyPlan"]) -> "DirtyPlan":
        return cls(*(np.concatenate([getattr(p, name) for p in plans]) for name in _PLAN_FIELDS))

    def shifted(self, offset: int) -> "DirtyPlan":
        """The plan of the same rows placed `offset` rows further down."""
        return DirtyPlan(self.invalid_rows + offset, self.reasons,
                         self.duplicate_rows + offset, self.duplicate_of + offset)

    def window(self, start: int, length: int) -> "DirtyPlan":
        """The plan for rows start..start+length, renumbered from 0."""
        inside = (self.invalid_rows >= start) & (self.invalid_rows < start + length)
        copied = (self.duplicate_rows >= start) & (self.duplicate_rows < start + length)
        return DirtyPlan(self.invalid_rows[inside] - start, self.reasons[inside],
                         self.duplicate_rows[copied] - start, self.duplicate_of[copied] - start)

    @property
    def reason_counts(self) -> dict[str, int]:
        names, counts = np.unique(self.reasons.astype(str), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, counts)}


_PLAN_FIELDS = ("invalid_rows", "reasons", "duplicate_rows", "duplicate_of")


def plan_dirty_rows(num_rows: int, fraction: float, seed: int, *,
                    duplicate_fraction: float | None = None) -> DirtyPlan:
    """Pick distinct rows to make invalid and to overwrite with copies of other valid rows.

    Reasons cycle through `INTERACTION_REASONS`, so any 7 or more invalid rows
    cover all of them. A duplicate's source is never itself dirty.
    """
    duplicate_fraction = fraction / 2 if duplicate_fraction is None else duplicate_fraction
    n_invalid = min(int(round(num_rows * fraction)), num_rows)
    n_duplicates = min(int(round(num_rows * duplicate_fraction)), (num_rows - n_invalid) // 2)
    rng = np.random.default_rng(seed)
    picked = rng.choice(num_rows, size=n_invalid + 2 * n_duplicates, replace=False).astype(np.int64)
    invalid = picked[:n_invalid]
    reasons = np.array(INTERACTION_REASONS, dtype=object)[np.arange(n_invalid) % len(INTERACTION_REASONS)]
    return DirtyPlan(
        invalid_rows=invalid,
        reasons=reasons,
        duplicate_rows=picked[n_invalid:n_invalid + n_duplicates],
        duplicate_of=picked[n_invalid + n_duplicates:],
    )


def inject_dirty_rows(table: pa.Table, fraction: float, seed: int, *,
                      duplicate_fraction: float | None = None, max_id_length: int = 128) -> pa.Table:
    """`table` with `fraction` of its rows made invalid and some rows exact duplicates."""
    return inject_dirty_rows_with_plan(table, fraction, seed, duplicate_fraction=duplicate_fraction,
                                       max_id_length=max_id_length)[0]


def inject_dirty_rows_with_plan(table: pa.Table, fraction: float, seed: int, *,
                                duplicate_fraction: float | None = None,
                                max_id_length: int = 128) -> tuple[pa.Table, DirtyPlan]:
    """As `inject_dirty_rows`, also returning the plan of what was changed."""
    plan = plan_dirty_rows(table.num_rows, fraction, seed, duplicate_fraction=duplicate_fraction)
    table = as_text_columns(table)
    if len(plan.duplicate_rows):
        source = np.arange(table.num_rows)
        source[plan.duplicate_rows] = plan.duplicate_of
        table = table.take(pa.array(source))
    if len(plan.invalid_rows) == 0:
        return table, plan

    variants = np.random.default_rng([seed, 1]).integers(0, 2**31, len(plan.invalid_rows)).tolist()
    edits: dict[str, dict[int, str | None]] = {name: {} for name in table.column_names}
    user_ids = table.column("user_id").take(pa.array(plan.invalid_rows)).to_pylist()
    item_ids = table.column("item_id").take(pa.array(plan.invalid_rows)).to_pylist()
    too_long = "-" + "x" * max_id_length
    for row, reason, variant, user_id, item_id in zip(
            plan.invalid_rows.tolist(), plan.reasons.tolist(), variants, user_ids, item_ids):
        if reason == "missing_field":
            column, value = _MISSING_VARIANTS[variant % len(_MISSING_VARIANTS)]
        elif reason == "id_too_long":
            column, value = ("user_id", user_id + too_long) if variant % 2 else ("item_id", item_id + too_long)
        else:
            column = _DIRTY_COLUMNS[reason]
            value = _DIRTY_VALUES[reason][variant % len(_DIRTY_VALUES[reason])]
        edits[column][row] = value
    columns = []
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if edits[name]:
            rows = np.fromiter(edits[name], np.int64, len(edits[name]))
            order = np.argsort(rows)
            values = [edits[name][r] for r in rows[order].tolist()]
            mask = np.zeros(table.num_rows, dtype=bool)
            mask[rows] = True
            column = pc.replace_with_mask(column, pa.array(mask), pa.array(values, pa.string()))
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names), plan


def as_text_columns(table: pa.Table) -> pa.Table:
    """Interactions with `timestamp` as ISO-8601 text and `rating` as text (how dirty data arrives)."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = iso_timestamps(column)
        elif name == "rating" and not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        columns[name] = column
    return pa.table(columns)


def iso_timestamps(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """UTC timestamps as ISO-8601 text with millisecond precision, e.g. 2026-10-01T12:30:00.250Z."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    # Casting a zoned timestamp to text is slow in Arrow; the naive UTC value casts fast.
    naive = pc.cast(pc.cast(column, pa.timestamp("ms", tz="UTC")), pa.timestamp("ms"))
    text = pc.utf8_replace_slice(pc.cast(naive, pa.string()), 10, 11, "T")
    return pc.binary_join_element_wise(text, "Z", "")
