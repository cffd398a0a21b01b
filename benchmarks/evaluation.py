"""Benchmark the pure ranking and metric functions at the 10M build's scale.

One process, no Ray: what a single scoring task does with its users.
  * popularity_top_k for --users users over --items items (seen lists of
    heavy-tailed length, as users' histories are), then metric_partials;
  * top_k_from_scores on a batch of --batch users (a dense score matrix, as a
    model scorer hands over), with random_scores as the model.
Prints seconds, users per second and the process's peak resident memory.

    ./run bench evaluation --users 100000 --items 200000 --batch 256
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import pyarrow as pa


def seen_lists(rng: np.random.Generator, users: int, items: int, mean: int) -> pa.ListArray:
    """Per-user distinct item indices (>= 2), lengths heavy-tailed around `mean`."""
    lengths = np.minimum((rng.pareto(1.5, users) + 1) * mean / 3, items // 2).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.integers(2, items + 2, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))


def main() -> None:
    from recsys_ray.evaluation import metrics, ranking

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seen-mean", type=int, default=30)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cardinality = args.items + 2
    print(f"machine: {platform.machine()}, python {platform.python_version()}; "
          f"{args.users:,} users x {args.items:,} items, k {args.k}")

    seen = seen_lists(rng, args.users, args.items, args.seen_mean)
    lengths = np.diff(seen.offsets.to_numpy())
    print(f"seen lists: mean {lengths.mean():.1f}, max {lengths.max():,}, total {lengths.sum():,}")
    relevant = pa.ListArray.from_arrays(pa.array(np.arange(args.users + 1) * 3, pa.int32()),
                                        pa.array(rng.integers(1, cardinality, 3 * args.users), pa.int32()))
    distinct_users = np.concatenate([[0, 0], rng.zipf(1.5, args.items).clip(max=10**6)])

    started = time.perf_counter()
    order = ranking.popularity_order(distinct_users)
    ordered = time.perf_counter() - started
    started = time.perf_counter()
    top = ranking.popularity_top_k(order, seen, args.k)
    ranked = time.perf_counter() - started
    started = time.perf_counter()
    partials = metrics.metric_partials(top, relevant, ks=(10, args.k))
    result = metrics.finalize_metrics(partials, rankable_items=args.items)
    scored = time.perf_counter() - started
    print(f"popularity: order {ordered:.3f}s, top-{args.k} {ranked:.3f}s "
          f"({args.users / ranked:,.0f} users/s), metrics {scored:.3f}s; recall@10 {result['recall@10']:.5f}")

    batch = min(args.batch, args.users)
    users = pa.array([f"u{i}" for i in range(batch)])
    started = time.perf_counter()
    scores = ranking.random_scores(users, cardinality, seed=1)
    random_s = time.perf_counter() - started
    started = time.perf_counter()
    ranking.top_k_from_scores(scores, seen.slice(0, batch), args.k)
    dense_s = time.perf_counter() - started
    print(f"dense batch of {batch:,}: random_scores {random_s:.3f}s, top_k_from_scores {dense_s:.3f}s "
          f"({batch / dense_s:,.0f} users/s; {batch * cardinality / dense_s / 1e6:,.0f} M scores/s)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
