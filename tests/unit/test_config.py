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
