"""Connect to Ray: the cluster a job runs on, or a local instance tuned for builds.

`ensure_ray()` joins the cluster named by `address` (or `RAY_ADDRESS`, or one
started with `ray start` on this machine) and otherwise starts a local Ray.
For the local instance one start-up cost that dominates small builds on few
cores is cut: idle workers are kept across the build's stages instead of being
killed and restarted (a restarted worker pays seconds of imports before its
first task). Kept workers would hold their last task's peak memory, so the
local instance's processes release freed memory at once. On any cluster, the
build runs Ray Data's shuffle tasks in the default worker pool
(`shuffles_in_default_worker_pool`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

# Idle workers kept per CPU before Ray kills the surplus (Ray's default is 1).
_IDLE_WORKERS_PER_CPU = 2

# Imported by every worker of a local instance as it starts (Ray Data and the
# build's stages take 1.5-2 s to import on a small machine).
BUILD_WORKER_MODULES = ("recsys_ray.build.run",)


def local_ray_options(num_cpus: int | None = None) -> dict:
    """`ray.init` arguments for a local instance started by recsys_ray."""
    cpus = num_cpus or os.cpu_count() or 1
    return {
        "address": "local",
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "log_to_driver": False,
        "_system_config": {"num_workers_soft_limit": _IDLE_WORKERS_PER_CPU * cpus,
                           "preload_python_modules": list(BUILD_WORKER_MODULES)},
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


def _shuffle_runtime_envs() -> list[dict]:
    """Ray Data's markers that give shuffle tasks worker pools of their own (none if absent)."""
    envs = []
    try:
        from ray.data._internal.execution.operators.hash_shuffle_v2 import _SHUFFLE_MAP_RUNTIME_ENV
        envs.append(_SHUFFLE_MAP_RUNTIME_ENV)
    except ImportError:
        pass
    try:
        from ray.data._internal.execution.operators.shuffle_operators.shuffle_reduce_operator import (
            _SHUFFLE_REDUCE_RUNTIME_ENV,
        )
        envs.append(_SHUFFLE_REDUCE_RUNTIME_ENV)
    except ImportError:
        pass
    return [env for env in envs if isinstance(env, dict)]


@contextmanager
def shuffles_in_default_worker_pool() -> Iterator[None]:
    """Run Ray Data's shuffle tasks in the default worker pool while the block runs.

    Ray Data 2.60 tags shuffle map and reduce tasks with a runtime environment
    of their own, only so that their workers' RSS is not mixed with readers'
    (shared object-store pages count once per process in RSS; they do not add
    memory). Each tag is a separate worker pool, and every pool starts its own
    workers, each paying 1.5-2 s of imports and holding its own heap: on two
    cores a 1M-interaction build ended with 9 Ray processes (workers, actors and
    agents) instead of 6, took 26-28 s instead of 21-22 s and peaked at 2.2 GB
    PSS instead of 1.9 GB.
    """
    envs = _shuffle_runtime_envs()
    saved = [dict(env) for env in envs]
    for env in envs:
        env.clear()  # an empty runtime_env is no runtime_env: the job's pool
    try:
        yield
    finally:
        for env, original in zip(envs, saved):
            env.clear()
            env.update(original)
