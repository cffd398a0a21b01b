import pytest
from aiokafka import ConsumerRecord

from recsys_ray.config import RecsysConfig
from recsys_ray.kafka.consumer import KafkaIngestLoop, PartitionState


def records(*offsets):
    return [ConsumerRecord("t.interactions", 0, o, 0, 0, None, b"{}", None, 0, 2, ()) for o in offsets]


def test_a_partition_buffer_keeps_each_offset_once_and_nothing_already_committed():
    state = PartitionState(committed=5)
    state.add(records(3, 4, 5, 6), now=1.0)
    state.add(records(6, 7), now=2.0)
    assert [r.offset for r in state.records] == [5, 6, 7]
    assert state.oldest == 1.0


def test_the_loop_needs_brokers_and_a_tenant_for_every_topic(monkeypatch):
    monkeypatch.delenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("RECSYS_KAFKA_DEFAULT_TENANT", raising=False)
    with pytest.raises(ValueError, match="bootstrap"):
        KafkaIngestLoop(RecsysConfig(kafka={"default_tenant": "shop"}))
    with pytest.raises(ValueError, match="tenant"):
        KafkaIngestLoop(RecsysConfig(kafka={"bootstrap_servers": "k:9092"}))
    loop = KafkaIngestLoop(RecsysConfig(kafka={"bootstrap_servers": "k:9092", "default_tenant": "shop"}))
    assert loop.health()["healthy"] and loop.partitions() == []
