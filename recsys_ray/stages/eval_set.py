"""The fixed evaluation set: one row per user with something to find after the cutoff.

For a user, the events before their cutoff (split "train": the global cutoff,
or with leave-last-out the user's own) are what a model may know; the
evaluation asks it to find the user's new positive items after it:

- `relevant_item_ids`: distinct items of the user's test-split positive events
  that the user had no event with (of any type) before the cutoff;
- `seen_item_ids`: distinct items of the user's events before the cutoff,
  excluded when ranking;
- `sampled_candidate_ids`: up to N items the user never had an event with (any
  type, either split), drawn as training negatives are (`sample_negatives`: the
  same candidates and weights) but from the stream of the key (user, "", test)
  under the seed XOR `EVAL_SALT`, so they differ from the training negatives.
  Like negatives they depend only on the seed and the user's events, never on
  how users are batched; a user who has seen (almost) every candidate gets fewer.

Users without a relevant item get no row. Rows are sorted by user_id and every
list by item id ascending (Arrow's string order, UTF-8 bytes), so the output is
the same whatever the order of the input rows.

The build writes the set in user_id ranges (`user_sample`, `range_bounds`,
`range_of`): each user partition leaves its rows of each range for that range's
writer, so no task holds more than its partition or its range and the files,
read in name order, are in user_id order at any parallelism.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import schemas
from recsys_ray.stages.examples import Candidates, sample_negatives
from recsys_ray.stages.split import split_events

EVAL_SALT = 0xE7A15E7
EVAL_SET = pa.schema([
    pa.field("user_id", pa.string()),
    pa.field("relevant_item_ids", pa.list_(pa.string())),
    pa.field("seen_item_ids", pa.list_(pa.string())),
    pa.field("sampled_candidate_ids", pa.list_(pa.string())),
])


def eval_rows(events: pa.Table, *, positive_types: tuple[str, ...], candidates: Candidates, negatives: int,
              seed: int) -> pa.Table:
    """Evaluation rows (`EVAL_SET`) of a batch holding all events of whole users, with their `split`.

    `events` are valid, de-duplicated events carrying the `split` column of
    `split_events`; `negatives` is how many candidates to sample per user.
    """
    if "split" not in events.column_names:
        raise ValueError("events need their split (see recsys_ray.stages.split.split_events)")
    if events.num_rows == 0:
        return EVAL_SET.empty_table()
    before = pc.equal(events.column("split"), "train")
    seen = _distinct_pairs(events.filter(before))
    after_positive = pc.and_(pc.invert(before),
                             pc.is_in(events.column("interaction_type"), value_set=pa.array(positive_types)))
    relevant = _distinct_pairs(events.filter(after_positive)).join(
        seen, keys=["user_id", "item_id"], join_type="left anti", use_threads=False)
    users = pc.unique(relevant.column("user_id"))
    users = users.take(pc.sort_indices(users))
    if len(users) == 0:
        return EVAL_SET.empty_table()
    anchors = pa.table({"user_id": users, "item_id": pa.repeat(pa.scalar("", pa.string()), len(users)),
                        "split": pa.repeat(pa.scalar("test", pa.string()), len(users)),
                        "timestamp": pa.nulls(len(users), schemas.TIMESTAMP)})
    sampled = sample_negatives(anchors, events, candidates, negatives, seed ^ EVAL_SALT)
    return pa.table({
        "user_id": users,
        "relevant_item_ids": _lists_by_user(users, relevant),
        "seen_item_ids": _lists_by_user(users, seen),
        "sampled_candidate_ids": _lists_by_user(users, sampled),
    }, schema=EVAL_SET)


def build_eval_set(events: pa.Table, *, cutoff_us: int, strategy: str, positive_types: tuple[str, ...],
                   candidates: Candidates, negatives: int, seed: int) -> pa.Table:
    """`eval_rows` of a batch of whole users' valid, de-duplicated events, split here first."""
    if events.num_rows == 0:
        return EVAL_SET.empty_table()
    return eval_rows(split_events(events, cutoff_us, strategy, positive_types), positive_types=positive_types,
                     candidates=candidates, negatives=negatives, seed=seed)


def _distinct_pairs(events: pa.Table) -> pa.Table:
    return events.select(["user_id", "item_id"]).group_by(["user_id", "item_id"], use_threads=False).aggregate(
        []).select(["user_id", "item_id"])


def _lists_by_user(users: pa.Array, pairs: pa.Table) -> pa.ListArray:
    """For each of `users` (sorted, unique), the item_ids of its `pairs` rows, sorted ascending."""
    code = pc.index_in(pairs.column("user_id"), value_set=users)
    table = pa.table({"code": code, "item_id": pairs.column("item_id")}).filter(pc.is_valid(code))
    table = table.sort_by([("code", "ascending"), ("item_id", "ascending")])
    counts = np.bincount(table.column("code").to_numpy(), minlength=len(users))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    items = table.column("item_id").combine_chunks().cast(pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items)


USER_SAMPLE = pa.schema([pa.field("user_id", pa.string()), pa.field("users", pa.int64())])


def user_sample(events: pa.Table, *, size: int) -> pa.Table:
    """About `size` of a batch's distinct user_ids, evenly spaced in user_id order, each with the
    number of the batch's users it stands for (itself and those up to the next sample)."""
    users = pc.unique(events.column("user_id"))
    if len(users) == 0:
        return USER_SAMPLE.empty_table()
    users = users.take(pc.sort_indices(users))
    step = max(1, -(-len(users) // max(1, size)))
    picks = np.arange(0, len(users), step)
    return pa.table({"user_id": users.take(pa.array(picks)), "users": np.diff(np.append(picks, len(users)))},
                    schema=USER_SAMPLE)


def range_bounds(samples: pa.Table, ranges: int) -> tuple[str, ...]:
    """Up to `ranges - 1` sorted, distinct user_ids that cut the users `samples` stand for
    (`user_sample` of every partition) into ranges of about equal size; range r holds the
    user_ids u with bounds[r - 1] <= u < bounds[r] (`range_of`)."""
    if samples.num_rows == 0 or ranges <= 1:
        return ()
    ordered = samples.sort_by([("user_id", "ascending")])
    weights = ordered.column("users").to_numpy()
    before = np.cumsum(weights) - weights
    total = int(weights.sum())
    picks = np.searchsorted(before, [total * r / ranges for r in range(1, ranges)], side="left")
    ids = ordered.column("user_id").to_pylist()
    bounds = sorted({ids[i] for i in picks if 0 < i < len(ids)}, key=lambda v: v.encode())
    return tuple(bounds)


def range_of(user_ids: pa.Array, bounds: tuple[str, ...]) -> np.ndarray:
    """Each user_id's range under `bounds` (`range_bounds`): how many bounds are at or below it."""
    out = np.zeros(len(user_ids), dtype=np.int32)
    for bound in bounds:
        out += pc.greater_equal(user_ids, pa.scalar(bound, pa.string())).to_numpy(zero_copy_only=False)
    return out
