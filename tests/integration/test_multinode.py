"""The build on a local multi-node cluster (a head and two worker nodes, in
`ray.cluster_utils.Cluster`) writes exactly the rows a one-node build writes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray
from ray.cluster_utils import Cluster

from recsys_ray.config import RecsysConfig
from recsys_ray.build import build_training_data
from tests.conftest import free_port


@pytest.fixture
def three_node_cluster(demo_build, without_shared_ray):
    """Head without CPUs plus two 1-CPU worker nodes: every task runs on a worker
    node, and running two at once takes both."""
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def read_split(out: Path, manifest, split: str) -> list[pa.Table]:
    return [pq.read_table(out / shard.path) for shard in manifest.shards[split]]


def test_three_nodes_write_exactly_the_rows_of_one_node(demo_build, three_node_cluster, tmp_path):
    """`demo_build` was built on the shared one-node instance before this cluster started."""
    inputs, one_out, one = demo_build["inputs"], demo_build["out"], demo_build["manifest"]
    alive = [node for node in ray.nodes() if node["Alive"]]
    assert len(alive) == 3 and ray.cluster_resources()["CPU"] == 2

    many_out = tmp_path / "three-nodes"
    many = build_training_data(RecsysConfig.load(build={**demo_build["build"], "out": str(many_out)}))

    from ray.util.state import list_tasks

    worker_nodes = {node["NodeID"] for node in alive if node["Resources"].get("CPU")}
    ran_on = {task.node_id for task in list_tasks(limit=10_000, raise_on_missing_output=False)
              if task.node_id and task.state == "FINISHED"}
    assert worker_nodes <= ran_on, "both worker nodes ran build tasks"

    assert many.counts == one.counts
    assert many.cutoff == one.cutoff
    assert many.counts.duplicates > 0
    for split in ("train", "test"):
        assert [s.rows for s in many.shards[split]] == [s.rows for s in one.shards[split]]
        for a, b in zip(read_split(one_out, one, split), read_split(many_out, many, split)):
            assert a.equals(b), f"{split} shards differ"
    for features in ("users", "items.parquet"):
        a = pq.read_table(one_out / "features" / features).sort_by("user_id" if features == "users" else "item_id")
        b = pq.read_table(many_out / "features" / features).sort_by("user_id" if features == "users" else "item_id")
        assert a.equals(b), features

    # Negatives exclude every item the user interacted with, across the nodes.
    events = pq.read_table(inputs / "interactions.parquet", columns=["user_id", "item_id"])
    seen = set(zip(events.column("user_id").to_pylist(), events.column("item_id").to_pylist()))
    rows = pa.concat_tables(read_split(many_out, many, "train") + read_split(many_out, many, "test"))
    negatives = rows.filter(pc.equal(rows.column("label"), 0.0))
    assert negatives.num_rows > 0
    assert not seen & set(zip(negatives.column("user_id").to_pylist(), negatives.column("item_id").to_pylist()))
