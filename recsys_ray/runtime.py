"""Connect to Ray: the cluster a job runs on, or a local instance tuned for builds.

`ensure_ray()` joins the cluster named by `address` (or `RAY_ADDRESS`, or one
started with `ray start` on this machine) and otherwise starts a local Ray.
For the local instance one start-up cost that dominates small builds on few
cores is cut: idle workers are kept across the build's stages instead of being
killed and restarted (Ray Data's shuffle runs its map tasks in a separate
worker pool, which pushes the pool past its default size, and a restarted
worker pays seconds of imports before its first task). Kept workers would hold
their last task's peak memory, so the local instance's processes release
freed memory at once.
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


# Arrow's allocator (mimalloc) returns freed pages to the OS only on a later
# allocation in the same process, so a worker that goes idle after a large task
# keeps that task's peak as resident memory. Purging at once costs little here.
ALLOCATOR_ENV = {"MIMALLOC_PURGE_DELAY": "0"}


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start the local Ray instance recsys_ray tunes for builds.

    The allocator setting (`ALLOCATOR_ENV`, unless already set in the
    environment) reaches every Ray process through the environment, which the
    local Ray's processes inherit from this one.
    """
    for name, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(name, value)
    ray.init(**local_ray_options(num_cpus))


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
    start_local_ray(num_cpus)


@ray.remote(num_cpus=0)
def _import_build_modules() -> None:
    import pyarrow.parquet  # noqa: F401
    import ray.data  # noqa: F401

    import recsys_ray.pipeline  # noqa: F401


def warm_build_workers(count: int) -> None:
    """Start `count` workers for Ray Data's shuffle map tasks now, without waiting.

    Those tasks run in a worker pool of their own (a runtime environment set
    by Ray Data), so the first shuffle of a build would otherwise wait seconds
    for new workers to start and import Ray Data. Started here, they get ready
    while the build reads and validates its inputs. The tasks take no CPU slot
    from the build. (The default pool is left alone: Ray starts it with the
    cluster, and a busy warm-up task there would only make the build's first
    task wait for yet another worker.)
    """
    try:
        from ray.data._internal.execution.operators.hash_shuffle_v2 import _SHUFFLE_MAP_RUNTIME_ENV
    except ImportError:  # a Ray version without a separate shuffle pool
        return
    for _ in range(count):
        _import_build_modules.options(runtime_env=_SHUFFLE_MAP_RUNTIME_ENV).remote()

