"""Connect to Ray: the cluster a job runs on, or a local instance tuned for builds.

`ensure_ray()` joins the cluster named by `address` (or `RAY_ADDRESS`, or one
started with `ray start` on this machine) and otherwise starts a local Ray.
For the local instance one start-up cost that dominates small builds on few
cores is cut: idle workers are kept across the build's stages instead of being
killed and restarted (Ray Data's shuffle runs its map tasks in a separate
worker pool, which pushes the pool past its default size, and a restarted
worker pays seconds of imports before its first task).
"""

from __future__ import annotations

import os

import ray

# Idle workers kept per CPU before Ray kills the surplus (Ray's default is 1).
_IDLE_WORKERS_PER_CPU = 2


def local_ray_options(num_cpus: int | None = None) -> dict:
    """`ray.init` arguments for a local instance started by recsys_ray."""
    cpus = num_cpus or os.cpu_count() or 1
    return {
        "address": "local",
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "log_to_driver": False,
        "_system_config": {"num_workers_soft_limit": _IDLE_WORKERS_PER_CPU * cpus},
    }


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join an existing Ray cluster if there is one, else start a local instance."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    try:
        ray.init(address="auto", log_to_driver=False)
        return
    except ConnectionError:
        pass
    ray.init(**local_ray_options(num_cpus))
