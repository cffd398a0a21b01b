import argparse

import pytest

from recsys_ray import cli as recsys_cli
from recsys_ray.kafka import cli


def parse(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_build_the_kafka_config(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    config_file = tmp_path / "c.yaml"
    config_file.write_text("kafka:\n  group_id: from-file\n  max_batch_records: 7\n")
    cfg = cli.config_from_args(parse(
        "--bootstrap-servers", "k1:9092,k2:9092", "--topics", "a.interactions,b.items", "--root", "s3://bucket/x",
        "--tenant", "shop", "--topic-tenant", "b.items=acme", "--topic-dataset", "a.interactions=interactions",
        "--max-batch-seconds", "2", "--replicas", "3", "--config", str(config_file)))
    kafka = cfg.kafka
    assert kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert kafka.topics == ("a.interactions", "b.items")
    assert (kafka.group_id, kafka.max_batch_records, kafka.max_batch_seconds) == ("from-file", 7, 2.0)
    assert kafka.topic_tenants == {"b.items": "acme"} and kafka.default_tenant == "shop"
    assert kafka.num_replicas == 3 and cfg.storage.root == "s3://bucket/x"


@pytest.mark.parametrize("argv, message", [
    (["--tenant", "../x"], "invalid tenant"),
    (["--topics", "clicks"], "topic_datasets"),
    (["--topic-tenant", "nonsense"], "--topic-tenant must look like TOPIC=VALUE, got 'nonsense'"),
    (["--max-batch-records", "0"], "recsys-ray consume: --max-batch-records must be >= 1, got 0\n"),
])
def test_a_bad_configuration_is_refused_before_anything_starts(argv, message, tmp_path, capsys):
    argv = ["consume", "--bootstrap-servers", "127.0.0.1:1", "--root", str(tmp_path), "--tenant", "shop", *argv]
    assert recsys_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "pydantic" not in err


def test_brokers_are_required(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert recsys_cli.main(["consume", "--root", str(tmp_path), "--tenant", "shop"]) == 2
    assert "--bootstrap-servers" in capsys.readouterr().err
