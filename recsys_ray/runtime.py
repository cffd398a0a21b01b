"""Getting onto Ray: the one way every entry point starts or joins Ray.

`ensure_ray(address)` joins a Ray cluster only when pointed at one: `address`
(a command's `--address`), else `RAY_ADDRESS`. A Ray job's entrypoint is
pointed at its cluster that way too: Ray's job supervisor sets `RAY_ADDRESS` to
the cluster's GCS address in the entrypoint's environment. Otherwise it starts a
local instance of its own, whatever else runs on the machine: another
terminal's `serve run` or `ray start` is never joined by accident (Ray's own
`address="auto"` would join it, or fail when it finds two).

How a local instance is started depends on what runs on it (`LocalRay`): for
builds (`FOR_BUILD`), idle workers are kept across the build's stages instead of
being killed and restarted (a restarted worker pays seconds of imports before its
first task), and every worker imports the build as it starts. Kept workers would
hold their last task's peak memory, so the local instance's processes release
freed memory at once (`ALLOCATOR_ENV`). Training (`FOR_TRAINING`) shows its
workers' output; services (`FOR_SERVICE`: the ingestion service, the Kafka
consumer) keep Ray's dashboard and workers' output too; neither preloads the build. On any cluster the build runs Ray Data's shuffle tasks in the
default worker pool (`shuffles_in_default_worker_pool`).

Nothing here imports Ray at module level, so command-line parsing stays fast.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Idle workers kept per CPU before Ray kills the surplus (Ray's default is 1).
_IDLE_WORKERS_PER_CPU = 2

# Imported by every worker of a local build instance as it starts (Ray Data and
# the build's stages take 1.5-2 s to import on a small machine).
BUILD_WORKER_MODULES = ("recsys_ray.build.run",)

# Arrow's allocator (mimalloc) returns freed pages to the OS only on a later
# allocation in the same process, so a worker that goes idle after a large task
# keeps that task's peak as resident memory. Purging at once costs little here.
ALLOCATOR_ENV = {"MIMALLOC_PURGE_DELAY": "0"}


@dataclass(frozen=True)
class LocalRay:
    """How recsys_ray runs on Ray for one kind of work.

    `worker_modules` are imported by every worker of a local instance as it
    starts; `log_to_driver` forwards workers' output to the command's terminal
    (on a joined cluster too); `include_dashboard` is Ray's (None: Ray's default).
    """

    worker_modules: tuple[str, ...] = ()
    log_to_driver: bool = False
    include_dashboard: bool | None = False


FOR_BUILD = LocalRay(worker_modules=BUILD_WORKER_MODULES)
FOR_TRAINING = LocalRay(log_to_driver=True)
FOR_SERVICE = LocalRay(log_to_driver=True, include_dashboard=None)


def cluster_address(address: str | None = None) -> str | None:
    """The cluster to join: `address`, else `RAY_ADDRESS`; None means start a local instance."""
    return address or os.environ.get("RAY_ADDRESS") or None


def local_ray_options(num_cpus: int | None = None, profile: LocalRay = FOR_BUILD) -> dict:
    """`ray.init` arguments for a local instance started by recsys_ray."""
    cpus = num_cpus or os.cpu_count() or 1
    system_config: dict = {"num_workers_soft_limit": _IDLE_WORKERS_PER_CPU * cpus}
    if profile.worker_modules:
        system_config["preload_python_modules"] = list(profile.worker_modules)
    return {
        "address": "local",  # never Ray's "auto": that joins whatever runs on the machine
        "num_cpus": num_cpus,
        "include_dashboard": profile.include_dashboard,
        "log_to_driver": profile.log_to_driver,
        "_system_config": system_config,
    }


def start_local_ray(num_cpus: int | None = None, profile: LocalRay = FOR_BUILD) -> None:
    """Start a local Ray instance of recsys_ray's own.

    The allocator setting (`ALLOCATOR_ENV`, unless already set in the
    environment) reaches every Ray process through the environment, which the
    local Ray's processes inherit from this one.
    """
    for name, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(name, value)
    _init(**local_ray_options(num_cpus, profile))


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None,
               profile: LocalRay = FOR_BUILD) -> None:
    """Join the cluster at `address` (or `RAY_ADDRESS`), else start a local instance.

    Does nothing when Ray is already initialised in this process (a test's
    shared instance, a driver that called `ray.init` itself).
    """
    import ray

    if ray.is_initialized():
        return
    target = cluster_address(address)
    if target is None:
        start_local_ray(num_cpus, profile)
    else:
        _init(address=target, log_to_driver=profile.log_to_driver)


def _init(**options) -> None:
    """`ray.init`, keeping this process's SIGTERM handling.

    `ray.init` replaces the SIGTERM handler with its own (exit code 15), and
    Ray's core worker adds a crash handler that prints `*** SIGTERM received
    ... PC: @ ...` as if the process had crashed, though SIGTERM is how
    Kubernetes, Docker and systemd stop a process. The handler from before the
    call is put back; recsys_ray's commands install one that exits cleanly.
    """
    import ray

    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main_thread else None
    ray.init(**options)
    if before is not None:
        signal.signal(signal.SIGTERM, before)


def shuffle_runtime_envs() -> list[dict]:
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
    envs = shuffle_runtime_envs()
    saved = [dict(env) for env in envs]
    for env in envs:
        env.clear()  # an empty runtime_env is no runtime_env: the job's pool
    try:
        yield
    finally:
        for env, original in zip(envs, saved):
            env.clear()
            env.update(original)
