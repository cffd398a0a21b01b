"""Benchmark the training-data build against a single-process baseline.

For each size: generate N synthetic interactions (Parquet), then in the same run
on the same files
  * the Ray build (`recsys-ray build`, a fresh local Ray started inside the timing),
    twice: once timed, once measuring memory,
  * the baseline: the same stages run in one process with pyarrow + NumPy, no Ray.
Prints wall time per stage, interactions per second and peak resident memory
(Ray: proportional set size summed over the driver and every Ray process it
started, sampled every 0.2 s, with summed RSS beside it; baseline: the
process's max RSS). Reading a process's PSS walks its whole memory map (about
37 ms for a 1M build's dozen processes, a fifth of a core at that rate), so
the timed run samples only summed RSS, which costs well under a millisecond.
Each run is a separate process.

    ./run bench pipeline --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time

import psutil


def run_ray_build(inter: str, items: str, out: str, measure_pss: bool = True) -> dict:
    started = time.perf_counter()
    peak = {"rss": 0, "pss": 0}
    stop = threading.Event()

    def sample() -> None:
        # PSS splits each shared page (object store, libraries) among the
        # processes mapping it, so the sum is the memory actually in use;
        # summed RSS counts a shared page once per process.
        me = psutil.Process()
        while not stop.is_set():
            rss = pss = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info() if measure_pss else proc.memory_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += info.pss if measure_pss else 0
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    import ray

    from recsys_ray.build import build_training_data
    from recsys_ray.config import RecsysConfig
    from recsys_ray.runtime import start_local_ray

    start_local_ray()  # a fresh local instance, as `recsys-ray build` starts one
    init_s = time.perf_counter() - started
    manifest = build_training_data(RecsysConfig.load(build={"interactions": inter, "items": items, "out": out,
                                                            "version": "bench"}))
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    ray.shutdown()
    return {"wall_s": round(wall, 2), "ray_init_s": round(init_s, 2), "stages_s": manifest.timings_s,
            "peak_rss_mb": round(peak["rss"] / 2**20), "peak_pss_mb": round(peak["pss"] / 2**20),
            "counts": manifest.counts.model_dump()}


def run_baseline(inter: str, items: str, out: str) -> dict:
    """The same job in one process: the pure stages over the whole table."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from recsys_ray import schemas, validation
    from recsys_ray.config import BuildConfig, ValidationConfig
    from recsys_ray.io import storage
    from recsys_ray.stages import examples, features, split

    b = BuildConfig()
    stages: dict[str, float] = {}
    t = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        stages[name] = round(now - t, 2)
        t = now

    started = t
    lo, hi = ValidationConfig().time_range()
    vcfg = ValidationConfig(max_timestamp=hi)
    result = validation.validate(pq.read_table(inter), "interactions", vcfg)
    catalog, _ = validation.deduplicate_items(validation.validate(pq.read_table(items), "items", vcfg).valid)
    mark("validate")
    events, _ = validation.deduplicate_events(result.valid)
    events = events.drop_columns(["event_id"])
    mark("dedup")
    ts = np.sort(split.timestamp_micros(events))
    cutoff = int(ts[split.quantile_rank(len(ts), b.test_fraction)])
    mark("cutoff")
    with_split = split.assign_split(events, cutoff)
    train = with_split.filter(pc.equal(with_split.column("split"), "train"))
    users = features.user_features(train, cutoff)
    summed = features.item_partials(train)
    item_table = features.item_features(summed, users.num_rows)
    mark("features")
    candidates = examples.make_candidates(pc.unique(catalog.column("item_id")), None, b.sampling,
                                          b.popularity_alpha)
    rows = examples.label_examples(events, cutoff_us=cutoff, strategy="time", positive_types=b.positive_types,
                                   candidates=candidates, negatives=b.negatives, seed=b.seed)
    mark("examples")
    # Shards sized and written as the build does: from positive counts, features joined per shard.
    positives = rows.filter(pc.equal(rows.column("label"), 1.0))
    shards = {s: max(1, int(np.ceil(pc.sum(pc.equal(positives.column("split"), s)).as_py() * (1 + b.negatives)
                                    / b.rows_per_shard))) for s in ("train", "test")}
    rows = examples.assign_shards(rows, shards, b.seed)
    for name, shard, part in examples.shard_groups(rows):
        storage.write_tables(f"{out}/{name}/part-{shard:05d}.parquet",
                             examples.finish_shard_chunks(part, users, item_table), schemas.TRAINING)
    mark("shuffle_and_write")
    return {"wall_s": round(time.perf_counter() - started, 2), "stages_s": stages,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rows": rows.num_rows}


def child(kind: str, inter: str, items: str, out: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", kind, inter, items, out],
                            capture_output=True, text=True, env={**os.environ, "RECSYS_PROGRESS": "0"})
    if result.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, inter, items, out = args.child
        if kind == "baseline":
            print(json.dumps(run_baseline(inter, items, out)))
        else:
            print(json.dumps(run_ray_build(inter, items, out, measure_pss=kind == "ray-memory")))
        return

    from recsys_ray import synthetic
    from recsys_ray.jobs.generate import write_synthetic

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; python {platform.python_version()}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for n in args.sizes:
            data = os.path.join(work, f"in-{n}")
            write_synthetic(synthetic.SyntheticConfig(interactions=n, users=max(1000, n // 10),
                                                      items=max(500, n // 50)), data)
            inter, items = f"{data}/interactions.parquet", f"{data}/items.parquet"
            ray_result = child("ray", inter, items, os.path.join(work, f"ray-{n}"))
            ray_memory = child("ray-memory", inter, items, os.path.join(work, f"ray-memory-{n}"))
            base = child("baseline", inter, items, os.path.join(work, f"base-{n}"))
            print(f"\n== {n:,} interactions ==")
            print(f"ray build : {ray_result['wall_s']:8.2f} s  ({n / ray_result['wall_s']:,.0f} interactions/s, "
                  f"incl. Ray start {ray_result['ray_init_s']} s)  summed RSS {ray_result['peak_rss_mb']:,} MB")
            print(f"  stages  : {ray_result['stages_s']}")
            print(f"  memory run: peak PSS {ray_memory['peak_pss_mb']:,} MB (summed RSS {ray_memory['peak_rss_mb']:,} MB), "
                  f"{ray_memory['wall_s']:.2f} s while sampling PSS")
            print(f"baseline  : {base['wall_s']:8.2f} s  ({n / base['wall_s']:,.0f} interactions/s)  "
                  f"peak RSS {base['peak_rss_mb']:,} MB")
            print(f"  stages  : {base['stages_s']}")
            print(f"ratio ray/baseline wall: {ray_result['wall_s'] / base['wall_s']:.2f}x; "
                  f"memory (Ray peak PSS / baseline peak RSS): {ray_memory['peak_pss_mb'] / base['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
