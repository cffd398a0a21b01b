import pytest
from pydantic import ValidationError

from recsys_ray.config import RecsysConfig


def test_priority_file_env_overrides(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("storage:\n  root: /from-file\nbuild:\n  seed: 1\n  negatives: 2\n")
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", "/from-env")
    cfg = RecsysConfig.load(path, build={"seed": 9, "negatives": None})
    assert cfg.storage.root == "/from-env"
    assert cfg.build.seed == 9
    assert cfg.build.negatives == 2


def test_unknown_fields_and_types_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("build:\n  sedd: 1\n")
    with pytest.raises(ValidationError):
        RecsysConfig.load(path)
    with pytest.raises(ValidationError):
        RecsysConfig.load(build={"positive_types": "click,share"})


def test_endpoint_from_standard_variable(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert RecsysConfig.load().storage.endpoint_url == "http://127.0.0.1:9000"


def test_serve_app_args_have_one_field_per_config_section():
    from recsys_ray.config import ServeAppArgs

    assert set(ServeAppArgs.model_fields) == {"config_file", *RecsysConfig.model_fields}


def test_serve_app_args_build_the_config_from_file_sections_and_dotted_keys(tmp_path, monkeypatch):
    from recsys_ray.config import ServeAppArgs

    monkeypatch.delenv("RECSYS_KAFKA_GROUP_ID", raising=False)
    config_file = tmp_path / "c.yaml"
    config_file.write_text("storage:\n  root: /from/file\nkafka:\n  group_id: from-file\n  num_replicas: 2\n")
    args = ServeAppArgs.model_validate({"config_file": str(config_file), "kafka": {"num_replicas": 3},
                                        "kafka.bootstrap_servers": "b:9092", "serve.port": "9000"})
    cfg = args.to_config()
    assert cfg.storage.root == "/from/file" and cfg.kafka.group_id == "from-file"
    assert (cfg.kafka.num_replicas, cfg.kafka.bootstrap_servers, cfg.serve.port) == (3, "b:9092", 9000)


@pytest.mark.parametrize("args", [{"stroage": {"root": "x"}}, {"stroage.root": "x"}, {"config_file": "a", "x": 1}])
def test_serve_app_args_refuse_unknown_keys(args):
    from recsys_ray.config import ServeAppArgs

    with pytest.raises(ValidationError):
        ServeAppArgs.model_validate(args)


def test_both_serve_builders_take_the_typed_args_as_serve_passes_them(tmp_path):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from recsys_ray.kafka import deployment
    from recsys_ray.serve import app

    args = {"storage.root": str(tmp_path), "kafka.bootstrap_servers": "b:9092", "kafka.default_tenant": "shop",
            "kafka.num_replicas": "2"}
    for builder in (app.build_app, deployment.build_app):
        built = call_user_app_builder_with_args_if_necessary(builder, args)
        assert type(built).__name__ == "Application"
    with pytest.raises(ValidationError):
        call_user_app_builder_with_args_if_necessary(deployment.build_app, {"kafka.bootstrap_servrs": "b:1"})
