"""The local Ray instance recsys_ray starts for a build (in its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, os, sys, ray
from recsys_ray.runtime import ALLOCATOR_ENV, BUILD_WORKER_MODULES, start_local_ray
start_local_ray(num_cpus=1)

@ray.remote(num_cpus=0)
def worker_env(names, modules):
    # defined here, so running it imports nothing of recsys_ray by itself
    return {name: os.environ.get(name) for name in names}, [m for m in modules if m in sys.modules]

env, imported = ray.get(worker_env.remote(list(ALLOCATOR_ENV), list(BUILD_WORKER_MODULES)))
print(json.dumps({"worker": env, "expected": ALLOCATOR_ENV, "imported": imported,
                  "modules": list(BUILD_WORKER_MODULES)}))
ray.shutdown()
"""


def run_probe(env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in env.items() if k != "RAY_ADDRESS"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_local_ray_workers_release_freed_memory_at_once():
    env = {k: v for k, v in os.environ.items() if k not in ("MIMALLOC_PURGE_DELAY",)}
    probe = run_probe(env)
    assert probe["worker"] == probe["expected"] == {"MIMALLOC_PURGE_DELAY": "0"}


def test_an_allocator_setting_from_the_environment_wins():
    probe = run_probe({**os.environ, "MIMALLOC_PURGE_DELAY": "25"})
    assert probe["worker"] == {"MIMALLOC_PURGE_DELAY": "25"}


def test_local_ray_workers_import_the_build_before_their_first_task():
    probe = run_probe(dict(os.environ))
    assert probe["imported"] == probe["modules"] == ["recsys_ray.build.run"]
