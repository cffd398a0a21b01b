"""Time the point-in-time feature functions on one core.

Events are synthetic (Zipf-skewed users and items, `recsys_ray.synthetic`).
User queries: one positive per sampled event with K negatives sharing its
(user, t), as the build makes them; item queries: the same rows with the
negatives' items drawn uniformly. Arrow runs on one thread.

    python benchmarks/asof.py --events 1000000 --queries 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import pyarrow as pa

from recsys_ray import synthetic
from recsys_ray.stages import asof


def make_inputs(n_events: int, n_queries: int, negatives: int, seed: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    cfg = synthetic.SyntheticConfig(users=max(n_events // 10, 1), items=max(n_events // 20, 1),
                                    interactions=n_events, seed=seed)
    events = synthetic.generate_interactions(cfg)
    rng = np.random.default_rng(seed)
    per_positive = 1 + negatives
    positives = rng.integers(0, events.num_rows, n_queries // per_positive)
    rows = np.repeat(positives, per_positive)
    user_queries = pa.table({"user_id": events.column("user_id").take(rows),
                             "timestamp": events.column("timestamp").take(rows)})
    items = events.column("item_id").take(rng.integers(0, events.num_rows, len(rows)))
    is_positive = np.arange(len(rows)) % per_positive == 0
    item_ids = pa.chunked_array([pa.array(np.where(is_positive, events.column("item_id").take(rows).to_numpy(),
                                                   items.to_numpy()), pa.string())])
    first_seen = asof.user_first_seen(events)
    sorted_first = np.sort(first_seen.column("first_seen").cast(pa.int64()).to_numpy())
    t = user_queries.column("timestamp").cast(pa.int64()).to_numpy()
    item_queries = pa.table({"item_id": item_ids, "timestamp": user_queries.column("timestamp"),
                             "users_before": asof.count_before(sorted_first, t)})
    return events, user_queries, item_queries


def timed(fn, *args, repeat: int, **kwargs) -> tuple[dict, pa.Table]:
    """Best wall and CPU seconds of `repeat` runs (CPU time is less disturbed by other load)."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        wall, cpu = min(wall, time.perf_counter() - started), min(cpu, time.process_time() - started_cpu)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=5_000_000)
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    events, user_queries, item_queries = make_inputs(args.events, args.queries, args.negatives, args.seed)
    figures = {"events": events.num_rows, "queries": user_queries.num_rows}
    seconds, users = timed(asof.user_features_as_of, events, user_queries, history=args.history,
                           repeat=args.repeat)
    figures["user_features_as_of"] = seconds
    figures["user_output_mib"] = round(users.nbytes / 2**20)
    del users
    seconds, _ = timed(asof.user_features_as_of, events, user_queries, history=0, repeat=args.repeat)
    figures["user_features_as_of_no_history"] = seconds
    seconds, items = timed(asof.item_features_as_of, events, item_queries, repeat=args.repeat)
    figures["item_features_as_of"] = seconds
    figures["item_output_mib"] = round(items.nbytes / 2**20)
    figures["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    figures["load_average"] = os.getloadavg()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
