"""Deployment files checked without a cluster: KubeRay manifests against the
KubeRay CRD schemas, the cluster-launcher YAML with Ray's own validation, the
Dockerfile statically, and one pinned Ray version across all of them.

The CRDs are vendored in `tests/data/kuberay-crds/` (source and licence in its SOURCE.md).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from recsys_ray.config import RecsysConfig

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "deploy" / "kuberay"
CRDS = REPO / "tests" / "data" / "kuberay-crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}
SECRET_LIKE = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[tuple[str, dict]]:
    return [(f"{path.name}:{doc['kind']}", doc)
            for path in sorted(KUBERAY.glob("*.yaml")) for doc in load_documents(path)]


def ray_resources() -> list[dict]:
    return [doc for _, doc in manifests() if doc["apiVersion"] == "ray.io/v1"]


def cluster_specs() -> list[dict]:
    """The RayCluster spec inside every Ray resource."""
    specs = []
    for doc in ray_resources():
        spec = doc["spec"]
        specs.append({"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"),
                      "RayService": spec.get("rayClusterConfig")}[doc["kind"]])
    return specs


def containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec.get("workerGroupSpecs", [])]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def strict(schema):
    """The CRD schema with unknown fields rejected, as the API server's strict field
    validation (`kubectl apply --validate=strict`) does."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@functools.cache
def crd_validator(kind: str, version: str = "v1") -> jsonschema.Validator:
    path = CRDS / CRD_FILES[kind]
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(strict(served["schema"]["openAPIV3Schema"]))


def config_map() -> dict[str, str]:
    (doc,) = [d for _, d in manifests() if d["kind"] == "ConfigMap"]
    return doc["data"]


def secret() -> dict[str, str]:
    (doc,) = [d for _, d in manifests() if d["kind"] == "Secret"]
    return doc["stringData"]


def serve_config(ray_service: dict) -> dict:
    return yaml.safe_load(ray_service["spec"]["serveConfigV2"])


@pytest.fixture
def pod_environment(monkeypatch):
    """The environment a recsys_ray pod gets from the ConfigMap and the Secret."""
    for name in [n for n in os.environ if n.startswith(("RECSYS_", "AWS_"))]:
        monkeypatch.delenv(name)
    for name, value in {**config_map(), **secret()}.items():
        monkeypatch.setenv(name, value)


# ---- one Ray version --------------------------------------------------------------------------


def test_ray_is_pinned_to_the_installed_version_everywhere():
    installed = ray.__version__
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if re.match(r"ray\b", d)]
    assert pin.endswith(f"=={installed}"), pin

    base = dockerfile_instructions()[0]
    assert base == ("FROM", f"rayproject/ray:{installed}-py311"), base

    versions = [doc["spec"].get("rayVersion") for doc in ray_resources() if doc["kind"] == "RayCluster"]
    versions += [spec["rayVersion"] for spec in cluster_specs()]
    assert versions and set(versions) == {installed}

    cluster = yaml.safe_load((REPO / "ray-cluster.yaml").read_text())
    assert cluster["docker"]["image"] == f"rayproject/ray:{installed}-py311"

    # The version asserted after installing the package, in the image and on `ray up` nodes.
    for text in ((REPO / "Dockerfile").read_text(), (REPO / "ray-cluster.yaml").read_text()):
        assert re.findall(r"ray\.__version__ == '([^']+)'", text) == [installed]


def test_image_python_satisfies_the_package():
    minimum = re.match(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    tag = dockerfile_instructions()[0][1]
    assert int(re.search(r"-py3(\d+)$", tag).group(1)) >= int(minimum)


# ---- KubeRay ----------------------------------------------------------------------------------


def test_every_kind_is_deployed():
    kinds = sorted(doc["kind"] for _, doc in manifests())
    assert kinds == ["ConfigMap", "RayCluster", "RayJob", "RayService", "Secret"]


@pytest.mark.parametrize(("name", "doc"), [m for m in manifests() if m[1]["apiVersion"] == "ray.io/v1"],
                         ids=[m[0] for m in manifests() if m[1]["apiVersion"] == "ray.io/v1"])
def test_ray_resource_matches_its_crd_schema(name, doc):
    errors = sorted(crd_validator(doc["kind"]).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_rejects_unknown_and_mistyped_fields():
    (job,) = [doc for doc in ray_resources() if doc["kind"] == "RayJob"]
    validator = crd_validator("RayJob")
    assert validator.is_valid(job)
    typo = copy.deepcopy(job)
    typo["spec"]["shutdownAfterJobFinish"] = typo["spec"].pop("shutdownAfterJobFinishes")
    assert not validator.is_valid(typo)
    mistyped = copy.deepcopy(job)
    mistyped["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "many"
    assert not validator.is_valid(mistyped)
    nested = copy.deepcopy(job)
    containers(nested["spec"]["rayClusterSpec"])[0]["envFrom"][0]["configMapRef"]["nmae"] = "x"
    assert not validator.is_valid(nested)


def test_clusters_autoscale_and_use_the_package_image():
    version = PYPROJECT["project"]["version"]
    for spec in cluster_specs():
        assert spec["enableInTreeAutoscaling"] is True
        for group in spec["workerGroupSpecs"]:
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
            assert group["maxReplicas"] > group["minReplicas"]
        for container in containers(spec):
            assert container["image"] == f"recsys-ray:{version}"
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            security = group["template"]["spec"]["securityContext"]
            assert security["runAsNonRoot"] is True and security["runAsUser"] != 0


def build_job_arguments() -> argparse.Namespace:
    """The RayJob entrypoint's arguments, parsed by the build command's own parser."""
    from recsys_ray.jobs import build

    (job,) = [doc for doc in ray_resources() if doc["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "recsys_ray.jobs.build"]
    parser = argparse.ArgumentParser()
    build.add_arguments(parser)
    return parser.parse_args(argv[3:])


def test_rayjob_runs_the_build_and_shuts_down():
    (job,) = [doc for doc in ray_resources() if doc["kind"] == "RayJob"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    args = build_job_arguments()
    assert args.tenant or args.interactions


def test_rayjob_cluster_workers_import_the_build_as_they_start():
    from recsys_ray.runtime import BUILD_WORKER_MODULES

    (job,) = [doc for doc in ray_resources() if doc["kind"] == "RayJob"]
    for container in containers(job["spec"]["rayClusterSpec"]):
        env = {item["name"]: item["value"] for item in container.get("env", [])}
        assert env.get("RAY_preload_python_modules") == ",".join(BUILD_WORKER_MODULES), container["name"]


def test_rayjob_build_config_comes_from_the_pod_environment(pod_environment):
    from recsys_ray.jobs import build

    cfg = build.config_from_args(build_job_arguments())
    assert cfg.storage.root == config_map()["RECSYS_STORAGE_ROOT"]
    assert cfg.storage.region == config_map()["RECSYS_STORAGE_REGION"]
    assert cfg.build.tenant == "acme"


def test_settings_and_credentials_come_from_the_configmap_and_secret():
    names = {"ConfigMap": {d["metadata"]["name"] for _, d in manifests() if d["kind"] == "ConfigMap"},
             "Secret": {d["metadata"]["name"] for _, d in manifests() if d["kind"] == "Secret"}}
    for spec in cluster_specs():
        for container in containers(spec):
            sources = container["envFrom"]
            assert {s["configMapRef"]["name"] for s in sources if "configMapRef" in s} == names["ConfigMap"]
            assert {s["secretRef"]["name"] for s in sources if "secretRef" in s} == names["Secret"]
            for variable in container.get("env", []):
                assert "value" not in variable or not SECRET_LIKE.search(variable["name"]), variable
    assert not [name for name in config_map() if SECRET_LIKE.search(name)]
    assert set(secret()) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RECSYS_API_KEYS"}


def test_no_credentials_inline_in_ray_resources():
    secret_values = {value for value in secret().values()}
    for doc in ray_resources():
        text = yaml.safe_dump(doc)
        assert not SECRET_LIKE.search(text.replace("secretRef", "").replace("recsys-ray-secrets", "")), doc["kind"]
        assert not any(value in text for value in secret_values)


def test_configmap_and_secret_keys_are_recsys_config_fields(pod_environment):
    cfg = RecsysConfig.load()
    assert cfg.storage.root == config_map()["RECSYS_STORAGE_ROOT"]
    assert cfg.storage.region == config_map()["RECSYS_STORAGE_REGION"]
    assert cfg.kafka.bootstrap_servers == config_map()["RECSYS_KAFKA_BOOTSTRAP_SERVERS"]
    assert cfg.kafka.topics == tuple(yaml.safe_load(config_map()["RECSYS_KAFKA_TOPICS"]))
    assert cfg.kafka.group_id == config_map()["RECSYS_KAFKA_GROUP_ID"]
    assert cfg.kafka.default_tenant == config_map()["RECSYS_KAFKA_DEFAULT_TENANT"]
    assert cfg.kafka.security_protocol == config_map()["RECSYS_KAFKA_SECURITY_PROTOCOL"]
    assert cfg.kafka.sasl_username == config_map()["RECSYS_KAFKA_SASL_USERNAME"]
    assert cfg.kafka.sasl_password.get_secret_value() == secret()["RECSYS_KAFKA_SASL_PASSWORD"]
    assert cfg.api.keys.get_secret_value() == secret()["RECSYS_API_KEYS"]
    for name in [n for n in {**config_map(), **secret()} if n.startswith("RECSYS_")]:
        section, field = name.removeprefix("RECSYS_").lower().split("_", 1)
        assert field in RecsysConfig.model_fields[section].annotation.model_fields, name


def test_rayservice_serve_config_parses_and_reuses_the_ingestion_app():
    from ray.serve.schema import ServeDeploySchema

    (service,) = [doc for doc in ray_resources() if doc["kind"] == "RayService"]
    config = ServeDeploySchema.model_validate(serve_config(service))
    apps = {app.name: app for app in config.applications}
    assert set(apps) == {"recsys-ingest", "recsys-kafka"}
    (ingest,) = yaml.safe_load((REPO / "deploy" / "serve_config.yaml").read_text())["applications"]
    assert apps["recsys-ingest"].import_path == ingest["import_path"]
    assert apps["recsys-ingest"].route_prefix == ingest["route_prefix"]
    assert apps["recsys-kafka"].import_path == "recsys_ray.kafka.deployment:build_app"
    assert apps["recsys-kafka"].route_prefix is None
    head_ports = {p["containerPort"] for p in containers(service["spec"]["rayClusterConfig"])[0]["ports"]}
    assert config.http_options.port in head_ports



def test_every_serve_node_runs_the_proxy_callback():
    """Serve's proxy runs on every node (proxy_location EveryNode): each Ray container of the
    RayService and each node the cluster launcher starts names the JSON-answer callback."""
    from recsys_ray.serve.proxy import PROXY_CALLBACK

    (service,) = [doc for doc in ray_resources() if doc["kind"] == "RayService"]
    for container in containers(service["spec"]["rayClusterConfig"]):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH") == PROXY_CALLBACK, container["name"]
    launcher = yaml.safe_load((REPO / "ray-cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in launcher[key] if "ray start" in c]
        assert f"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH={PROXY_CALLBACK}" in start, key

def test_rayservice_applications_import_and_build_from_the_pod_environment(pod_environment):
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    (service,) = [doc for doc in ray_resources() if doc["kind"] == "RayService"]
    for app in ServeDeploySchema.model_validate(serve_config(service)).applications:
        builder = import_attr(app.import_path)
        built = call_user_app_builder_with_args_if_necessary(builder, app.args)
        assert type(built).__name__ == "Application", app.name


# ---- cluster launcher -------------------------------------------------------------------------


def test_cluster_launcher_config_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "ray-cluster.yaml").read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    head = prepared["head_node_type"]
    workers = {name: t for name, t in prepared["available_node_types"].items() if name != head}
    assert workers and all(t["max_workers"] > t.get("min_workers", 0) for t in workers.values())


def test_cluster_launcher_installs_this_package_on_every_node():
    raw = yaml.safe_load((REPO / "ray-cluster.yaml").read_text())
    ((remote, local),) = raw["file_mounts"].items()
    assert (REPO / local / "pyproject.toml").exists()
    assert any(re.search(rf"pip install .*{re.escape(remote)}(\s|$|\[)", c) for c in raw["setup_commands"])


def test_cluster_launcher_validation_rejects_a_typo():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "ray-cluster.yaml").read_text())
    raw["setup_comands"] = raw.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(raw))


# ---- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_runs_as_the_images_non_root_user():
    instructions = dockerfile_instructions()
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1] == "ray"
    # The package is installed by that user, into the environment it owns, not as root.
    first_user = next(i for i, (instruction, _) in enumerate(instructions) if instruction == "USER")
    assert all(instruction not in ("COPY", "RUN") for instruction, _ in instructions[:first_user])
    assert set(users) == {"ray"}


def test_vendored_crds_name_their_source_and_licence():
    source = (CRDS / "SOURCE.md").read_text()
    assert "github.com/ray-project/kuberay" in source and "Apache License 2.0" in source
    assert sorted(path.name for path in CRDS.glob("*.yaml")) == sorted(CRD_FILES.values())


def test_dockerfile_copies_and_installs_the_package():
    instructions = dockerfile_instructions()
    copied = []
    for instruction, args in instructions:
        if instruction == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            copied += parts[:-1]
    assert {"pyproject.toml", "README.md", "recsys_ray"} <= set(copied)
    for source in copied:
        assert (REPO / source).exists(), source
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert re.search(r"pip install .*/tmp/recsys-ray", runs)


def test_dockerfile_sets_the_allocator_environment_of_a_local_ray():
    from recsys_ray.runtime import ALLOCATOR_ENV

    env = dict(args.split("=", 1) for instruction, args in dockerfile_instructions() if instruction == "ENV")
    assert {name: env.get(name) for name in ALLOCATOR_ENV} == ALLOCATOR_ENV
