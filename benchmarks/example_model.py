"""The example two-tower model against popularity on demo-like data: full-ranking metrics.

Generates `recsys-ray demo` data (its defaults: 10,000 users, 5,000 items,
100,000 interactions, seed 42, 1% dirty rows) unless --version names an
existing built version, then trains `recsys_ray.train.example` once per seed
(2 Train workers at 0.5 CPU, on a local Ray instance) and prints NDCG@10,
Recall@10 and test BCE of each run next to popularity's, with the mean over
seeds. The metrics are those of `recsys_ray.evaluation.run.evaluate`.

    ./run bench example_model --seeds 0 1 2 --epochs 3
    ./run bench example_model --version ./out/v1m --seeds 0
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", help="an existing built version (default: build the demo data)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RECSYS_PROGRESS", "0")

    from recsys_ray import cli
    from recsys_ray.config import RecsysConfig
    from recsys_ray.runtime import FOR_TRAINING, ensure_ray
    from recsys_ray.train.example import MODEL_NAME, train

    work = tempfile.mkdtemp(prefix="bench-example-")
    version = args.version
    if version is None:
        root = os.path.join(work, "data")
        assert cli.main(["demo", "--root", root, "--users", str(args.users), "--items", str(args.items),
                         "--interactions", str(args.interactions)]) == 0
        version = os.path.join(root, "tenants", "demo", "training", "demo")
    ensure_ray(None, profile=FOR_TRAINING)
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; version {version}")
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        out = train(version, RecsysConfig.load(), epochs=args.epochs, num_workers=args.num_workers, seed=seed,
                    storage_path=os.path.join(work, "runs"))
        model, pop = out["eval_metrics"][MODEL_NAME], out["eval_metrics"]["popularity"]
        rows.append((seed, model["ndcg@10"], model["recall@10"], pop["ndcg@10"], pop["recall@10"], out["test_loss"],
                     time.perf_counter() - started))
        print(f"seed {seed}: model ndcg@10 {rows[-1][1]:.4f} recall@10 {rows[-1][2]:.4f} | popularity ndcg@10 "
              f"{rows[-1][3]:.4f} recall@10 {rows[-1][4]:.4f} | test BCE {rows[-1][5]:.4f} | "
              f"{rows[-1][6]:.0f} s (train + evaluate), {model['users']} eval users", flush=True)
    if len(rows) > 1:
        means = [statistics.fmean(r[i] for r in rows) for i in range(1, 5)]
        print(f"mean: model ndcg@10 {means[0]:.4f} recall@10 {means[1]:.4f} | "
              f"popularity ndcg@10 {means[2]:.4f} recall@10 {means[3]:.4f}")


if __name__ == "__main__":
    main()
