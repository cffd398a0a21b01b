"""Benchmark the pure ranking and metric functions at the 10M build's scale.

One process, no Ray: what a single scoring task does with its users.
  * popularity_top_k for --users users over --items items (seen lists of
    heavy-tailed length, as users' histories are), then metric_partials;
  * top_k_from_scores on a batch of --batch users (a dense score matrix, as a
    model scorer hands over), with random_scores as the model.
Prints seconds, users per second and the process's peak resident memory.

    ./run bench evaluation --users 100000 --items 200000 --batch 256

With --version URI it times the distributed `recsys_ray.evaluation.run.evaluate`
on an existing built version instead (a fresh local Ray instance, as
`recsys-ray evaluate` starts one; the start is timed apart): seconds and users
per second of each run, and peak memory as the summed RSS of this process and
every Ray process under it, sampled every 0.2 s (summed RSS counts a shared
object-store page once per process that maps it, so it is an upper bound).

    ./run bench evaluation --version ./out/v10m --model popularity --repeat 2
"""

from __future__ import annotations

import argparse
import platform
import resource
import threading
import time

import numpy as np
import pyarrow as pa


def seen_lists(rng: np.random.Generator, users: int, items: int, mean: int) -> pa.ListArray:
    """Per-user distinct item indices (>= 2), lengths heavy-tailed around `mean`."""
    lengths = np.minimum((rng.pareto(1.5, users) + 1) * mean / 3, items // 2).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.integers(2, items + 2, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))


def sample_memory(peak: dict, stop: threading.Event) -> None:
    """Keep the largest summed RSS of this process and its descendants (the local Ray's processes)."""
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        rss = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        peak["rss"] = max(peak["rss"], rss)
        time.sleep(0.2)


def distributed(args: argparse.Namespace) -> None:
    """Time `evaluate` on a built version, on a fresh local Ray instance."""
    import psutil

    from recsys_ray.build.manifest import read_manifest
    from recsys_ray.evaluation.run import evaluate
    from recsys_ray.runtime import ensure_ray

    manifest = read_manifest(args.version)
    items = manifest.column("item_idx").cardinality
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; python {platform.python_version()}; "
          f"version {manifest.uri}: {manifest.eval.users:,} evaluation users x {items - 2:,} rankable items, "
          f"model {args.model}, k {args.k}")
    peak = {"rss": 0}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(peak, stop), daemon=True)
    sampler.start()
    started = time.perf_counter()
    ensure_ray()
    print(f"ray start {time.perf_counter() - started:.2f}s")
    try:
        for run in range(args.repeat):
            started = time.perf_counter()
            result = evaluate(manifest, args.model, ks=(10, args.k), blocks=args.blocks)
            seconds = time.perf_counter() - started
            print(f"run {run + 1}: {seconds:.2f}s, {result['users'] / seconds:,.0f} users/s; "
                  f"recall@10 {result['recall@10']:.5f}, ndcg@10 {result['ndcg@10']:.5f}")
    finally:
        stop.set()
        sampler.join()
    print(f"peak summed RSS (driver + Ray processes) {peak['rss'] / 2**20:,.0f} MiB; "
          f"driver peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


def main() -> None:
    from recsys_ray.evaluation import metrics, ranking

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seen-mean", type=int, default=30)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--version", help="a built version: time the distributed evaluate on it instead")
    parser.add_argument("--model", default="popularity", choices=("popularity", "random"))
    parser.add_argument("--blocks", type=int, help="re-split the evaluation set into N blocks")
    parser.add_argument("--repeat", type=int, default=1, help="runs on the same Ray instance")
    args = parser.parse_args()
    if args.version:
        distributed(args)
        return
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
