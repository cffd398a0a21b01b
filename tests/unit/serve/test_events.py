from pydantic import SecretStr

from recsys_ray.config import KafkaConfig
from recsys_ray.serve.events import producer_options, upload_event


def test_upload_event_says_what_landed_where():
    report = {"upload_id": "u.0", "dataset": "items", "objects": ["tenants/acme/raw/items/x.parquet"],
              "accepted": 3, "rejected": 1, "duplicates": 0, "created_at": "2024-05-01T00:00:00+00:00",
              "errors": [{"row": 1}]}
    event = upload_event("acme", report, "s3://b/recsys/")
    assert event == {"type": "upload.landed", "tenant": "acme", "dataset": "items", "upload_id": "u.0",
                     "objects": ["s3://b/recsys/tenants/acme/raw/items/x.parquet"],
                     "accepted": 3, "rejected": 1, "duplicates": 0,
                     "created_at": "2024-05-01T00:00:00+00:00"}


def test_producer_options_carry_security_settings():
    plain = producer_options(KafkaConfig(bootstrap_servers="k:9092"))
    assert plain["bootstrap_servers"] == "k:9092" and "sasl_mechanism" not in plain
    secure = producer_options(KafkaConfig(bootstrap_servers="k:9093", security_protocol="SASL_SSL",
                                          sasl_mechanism="PLAIN", sasl_username="u", sasl_password=SecretStr("p")))
    assert (secure["security_protocol"], secure["sasl_plain_username"], secure["sasl_plain_password"]) == \
        ("SASL_SSL", "u", "p")


def test_unreachable_kafka_is_reported_not_raised():
    import asyncio
    import socket

    from recsys_ray.serve.events import UploadEventPublisher

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    publisher = UploadEventPublisher(KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}"), timeout_s=5, root="/d")
    report = {"upload_id": "u.0", "dataset": "items", "objects": [], "accepted": 1, "rejected": 0,
              "duplicates": 0, "created_at": "2024-05-01T00:00:00+00:00"}
    assert asyncio.run(publisher.publish("acme", [report, report])) == 2
    assert asyncio.run(UploadEventPublisher(KafkaConfig(), timeout_s=5, root="/d").publish("acme", [report])) == 0
