"""Ray Data's shuffle worker-pool markers, emptied only while a build runs (no Ray started)."""

from __future__ import annotations

import copy

import pytest

from recsys_ray import runtime


def test_shuffle_pool_markers_are_found_in_this_ray_version():
    envs = runtime.shuffle_runtime_envs()
    assert len(envs) == 2 and all(env.get("env_vars") for env in envs)


def test_shuffles_use_the_default_pool_inside_and_ray_data_is_restored_after():
    envs = runtime.shuffle_runtime_envs()
    before = copy.deepcopy(envs)
    with runtime.shuffles_in_default_worker_pool():
        assert all(env == {} for env in envs)
    assert envs == before
    with pytest.raises(RuntimeError):
        with runtime.shuffles_in_default_worker_pool():
            raise RuntimeError("the build failed")
    assert envs == before
