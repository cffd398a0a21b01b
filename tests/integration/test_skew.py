"""Skewed input on a real local Ray instance: one item with 40% of the events and one
user with 30%. Heavy items are found from per-partition summaries, cut into time
slices no bigger than the limit (plus one histogram bin), and the shards written with
slicing are byte-for-byte those written without it, at any parallelism; the rows of
the hot item still equal a recomputation from the raw events.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray import schemas
from recsys_ray.build import dataflow
from recsys_ray.build.writer import VersionWriter
from recsys_ray.io import storage
from recsys_ray.stages import split
from tests.integration.test_build import (assert_rows_equal_recomputation, build, make_events, read_split,
                                          write_inputs)

HOT_ITEM, BOT_USER = "i000", "u000"
LIMIT = 150


def skewed_events(n=2500, seed=4) -> pd.DataFrame:
    events = make_events(n=n, users=120, items=60, seed=seed)
    rng = np.random.default_rng(seed)
    shares = rng.random(n)
    events.loc[shares < 0.4, "item_id"] = HOT_ITEM
    events.loc[(shares >= 0.4) & (shares < 0.7), "user_id"] = BOT_USER
    return events


class RecordedMessages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    base = tmp_path_factory.mktemp("skew")
    events = skewed_events()
    inter, items = write_inputs(base / "in", events)
    return events, inter, items, base


def test_heavy_items_are_found_and_cut_into_bounded_slices(ray_session, skewed, tmp_path):
    events, *_ = skewed
    table = pa.Table.from_pandas(events.assign(timestamp=pd.to_datetime(events.timestamp, unit="s", utc=True)),
                                 preserve_index=False)
    valid = table.append_column("event_id", pa.array([f"e{i}" for i in range(table.num_rows)])).select(
        schemas.INTERACTIONS.names).cast(schemas.INTERACTIONS)
    dataset = dataflow.partition_events(ray_session.data.from_arrow(valid), 4,
                                        VersionWriter(str(tmp_path), storage.StorageOptions()))
    assert dataset.events == table.num_rows and len(dataset.paths) == 4
    found = dataflow.find_heavy_items(dataset, LIMIT)
    counts = events.item_id.value_counts()
    assert found.item_ids == tuple(sorted(counts[counts > LIMIT].index)) and HOT_ITEM in found.item_ids
    ts = split.timestamp_micros(table)
    edges = split.bin_edges(int(ts.min()), int(ts.max()))
    widest_bin = max(np.bincount(np.searchsorted(edges, ts[events.item_id.to_numpy() == item], side="right"))
                     .max() for item in found.item_ids)
    for item, starts in zip(found.item_ids, found.starts):
        mine = ts[events.item_id.to_numpy() == item]
        per_slice = np.bincount(np.searchsorted(np.asarray(starts), mine, side="right"))
        assert per_slice.sum() == counts[item] and len(per_slice) == len(starts) + 1
        assert per_slice.max() <= LIMIT + widest_bin
    assert counts[HOT_ITEM] > 5 * LIMIT  # unsplit, one task would hold it all
    assert not dataflow.find_heavy_items(dataset, int(counts.max()))


def test_split_heavy_items_write_the_same_shards_at_any_parallelism(ray_session, skewed):
    events, inter, items, base = skewed
    common = {"interactions": inter, "items": items, "seed": 3, "shards": 3}
    whole = build(ray_session, base / "whole", parallelism=2, **common)
    messages = RecordedMessages()
    logger = logging.getLogger("recsys_ray.build.run")
    logger.addHandler(messages)
    level, logger.level = logger.level, logging.INFO
    try:
        sliced = build(ray_session, base / "sliced", parallelism=2, heavy_item_events=LIMIT, **common)
    finally:
        logger.removeHandler(messages)
        logger.setLevel(level)
    assert any(m.startswith(f"1 heavy item(s) with more than {LIMIT} events") for m in messages.lines), messages.lines
    sliced_wide = build(ray_session, base / "sliced5", parallelism=5, heavy_item_events=LIMIT, **common)
    assert whole.counts == sliced.counts == sliced_wide.counts
    for name in ("train", "test"):
        assert len(whole.shards[name]) == len(sliced.shards[name]) == len(sliced_wide.shards[name])
        for a, b, c in zip(whole.shards[name], sliced.shards[name], sliced_wide.shards[name]):
            reference = pq.read_table(base / "whole" / a.path)
            assert pq.read_table(base / "sliced" / b.path).equals(reference)
            assert pq.read_table(base / "sliced5" / c.path).equals(reference)

    unique = events.drop_duplicates(["user_id", "item_id", "interaction_type", "timestamp"])
    catalog = pd.read_csv(items).set_index("item_id")
    rows = pd.concat([read_split(base / "sliced", sliced, s) for s in ("train", "test")])
    hot = rows[(rows.item_id == HOT_ITEM) | (rows.user_id == BOT_USER)]
    assert (hot.item_id == HOT_ITEM).sum() > 100 and (hot.user_id == BOT_USER).sum() > 50
    assert_rows_equal_recomputation(hot.sample(120, random_state=1), unique, catalog)
