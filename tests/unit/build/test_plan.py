"""Planning a build: inputs, the version's name and place, and clear errors before Ray."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray.build.plan import BuildError, plan_build
from recsys_ray.config import RecsysConfig


@pytest.fixture()
def events_file(tmp_path):
    path = tmp_path / "in" / "events.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"user_id": ["u"], "item_id": ["i"], "interaction_type": ["click"],
                             "timestamp": [1_700_000_000]}), path)
    return path


def test_the_version_is_named_after_the_out_directory(events_file, tmp_path):
    plan = plan_build(RecsysConfig.load(build={"interactions": str(events_file), "out": str(tmp_path / "out/v1/")}))
    assert plan.version == "v1" and plan.out == str(tmp_path / "out/v1")
    assert plan.tenant is None  # inputs and output given explicitly: no tenant is involved


def test_a_file_named_twice_is_one_input(events_file, tmp_path):
    plan = plan_build(RecsysConfig.load(build={
        "interactions": [str(events_file.parent), str(events_file), str(events_file.parent / "*.parquet")],
        "out": str(tmp_path / "out/v1")}))
    assert [entry.uri for entry in plan.interactions] == [str(events_file)]


def test_an_explicit_version_name_wins(events_file, tmp_path):
    plan = plan_build(RecsysConfig.load(build={"interactions": str(events_file), "out": str(tmp_path / "v1"),
                                               "version": "v2"}))
    assert plan.version == "v2"


def test_without_out_the_version_goes_under_the_tenant(events_file, tmp_path):
    cfg = RecsysConfig.load(storage={"root": str(tmp_path / "root")},
                            build={"interactions": str(events_file), "version": "v3"})
    plan = plan_build(cfg)
    assert plan.tenant == "default"
    assert plan.out == f"{tmp_path}/root/tenants/default/training/v3"
    plan = plan_build(cfg.model_copy(update={"build": cfg.build.model_copy(update={"tenant": "acme"})}))
    assert plan.out == f"{tmp_path}/root/tenants/acme/training/v3"


@pytest.mark.parametrize(("build", "message"), [
    ({"interactions": "/nowhere/events.parquet"}, "input /nowhere/events.parquet does not exist"),
    ({"tenant": "nobody"}, "unknown tenant 'nobody'"),
    ({}, "no inputs"),
    ({"interactions": "EVENTS", "version": "../up"}, "invalid version"),
])
def test_input_mistakes_are_clear(events_file, tmp_path, build, message):
    build = {k: (str(events_file) if v == "EVENTS" else v) for k, v in build.items()}
    with pytest.raises(BuildError, match=message.replace("(", r"\(")):
        plan_build(RecsysConfig.load(storage={"root": str(tmp_path / "root")}, build=build))


def test_a_tenant_without_landed_interactions(tmp_path):
    (tmp_path / "root" / "tenants" / "acme" / "raw" / "items").mkdir(parents=True)
    with pytest.raises(BuildError, match="tenant 'acme' has no landed interactions"):
        plan_build(RecsysConfig.load(storage={"root": str(tmp_path / "root")}, build={"tenant": "acme"}))


def test_an_empty_input_file(tmp_path):
    empty = tmp_path / "events.csv"
    empty.write_bytes(b"")
    with pytest.raises(BuildError, match="is empty"):
        plan_build(RecsysConfig.load(build={"interactions": str(empty), "out": str(tmp_path / "v1")}))


def test_planning_imports_no_ray(events_file, tmp_path):
    code = ("import sys; from recsys_ray.build.plan import plan_build; from recsys_ray.config import RecsysConfig; "
            f"plan_build(RecsysConfig.load(build={{'interactions': {str(events_file)!r}, "
            f"'out': {str(tmp_path / 'v1')!r}}})); "
            "print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
