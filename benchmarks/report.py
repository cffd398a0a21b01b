"""Benchmark the build report: what it adds to a build, and `recsys-ray report` on a warm cluster.

For each size: generate N synthetic interactions (Parquet), build them on a
fresh local Ray (the build's `report` stage, in the manifest's timings, is
what the report adds: daily counts over the events plus report.html), then
write the report again three times on the same warm Ray, with and without a
drift section against a second, smaller version.

    ./run bench report --sizes 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time

import psutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="work in DIR and keep the inputs and versions (e.g. for ./run bench evaluation)")
    args = parser.parse_args()

    from recsys_ray import synthetic
    from recsys_ray.config import RecsysConfig
    from recsys_ray.io.storage import StorageOptions
    from recsys_ray.jobs.generate import write_synthetic
    from recsys_ray.build import build_training_data
    from recsys_ray.report.writer import read_version, write_report
    from recsys_ray.runtime import ensure_ray

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; python {platform.python_version()}")
    ensure_ray()
    options = StorageOptions()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for n in args.sizes:
            versions = []
            for name, size in (("previous", max(1000, n // 2)), ("current", n)):
                data = os.path.join(work, f"in-{name}-{n}")
                write_synthetic(synthetic.SyntheticConfig(interactions=size, users=max(1000, size // 10),
                                                          items=max(500, size // 50), seed=len(versions)), data)
                start = time.perf_counter()
                manifest = build_training_data(RecsysConfig.load(build={
                    "interactions": f"{data}/interactions.parquet", "items": f"{data}/items.parquet",
                    "out": os.path.join(work, "training", f"{name}-{n}")}))
                versions.append((manifest, time.perf_counter() - start))
            manifest, wall = versions[-1]
            timings = manifest.timings_s
            print(f"\n== {n:,} interactions ==")
            print(f"build {wall:.2f} s, of which report stage {timings['report']:.2f} s "
                  f"({timings['report'] / wall:.1%}); train rows {manifest.counts.train_rows:,}, "
                  f"test rows {manifest.counts.test_rows:,}; version {manifest.uri}")
            stored, root = read_version(manifest.uri, options)
            for label, previous in (("report", None), ("report with drift", versions[0][0].uri)):
                runs = []
                for _ in range(3):
                    start = time.perf_counter()
                    write_report(root, stored, options, previous=previous, out=os.path.join(work, "r.html"))
                    runs.append(time.perf_counter() - start)
                print(f"{label:18s}: " + ", ".join(f"{r:.2f} s" for r in runs)
                      + f"  (page {os.path.getsize(os.path.join(work, 'r.html')) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
