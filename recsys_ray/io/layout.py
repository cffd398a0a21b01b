"""Where records go: the tenant-scoped storage layout.

    {root}/tenants/{tenant}/raw/{interactions|items}/{object}.parquet   landed rows
    {root}/tenants/{tenant}/quarantine/{dataset}/{object}.parquet        rejected rows
    {root}/tenants/{tenant}/uploads/{upload_id}.json                     upload reports
    {root}/tenants/{tenant}/training/{version}/                          dataset versions

One landing (a write batch, a Kafka offset range, one part of a file) writes the
raw and the quarantine object of one name (`landed_objects`); a file landed in
parts names them `{name}-{index:05d}` (`part_name`).

Every name that comes from a request, a message or a flag passes `check_name`,
so no tenant, dataset or object name can climb out of its place.
"""

from __future__ import annotations

import re

from recsys_ray.io.storage import join
from recsys_ray.schemas import DATASETS

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,199}")


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a safe single path segment, else raise ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid {what} {name!r}: use 1-200 characters of letters, digits, '.', '_', '-', '=' "
            "starting with a letter or digit, without '..'"
        )
    return name


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    return dataset


def tenant_root(root: str, tenant: str) -> str:
    return join(root, "tenants", check_name(tenant, "tenant"))


def raw_dir(root: str, tenant: str, dataset: str) -> str:
    return join(tenant_root(root, tenant), "raw", check_dataset(dataset))


def raw_object(root: str, tenant: str, dataset: str, name: str) -> str:
    return join(raw_dir(root, tenant, dataset), check_name(name, "object name") + ".parquet")


def quarantine_dir(root: str, tenant: str, dataset: str) -> str:
    return join(tenant_root(root, tenant), "quarantine", check_dataset(dataset))


def quarantine_object(root: str, tenant: str, dataset: str, name: str) -> str:
    return join(quarantine_dir(root, tenant, dataset), check_name(name, "object name") + ".parquet")


def landed_objects(root: str, tenant: str, dataset: str, name: str) -> tuple[str, str]:
    """The raw and the quarantine object of one landing named `name`: a write batch id,
    a Kafka offset range, or a part of one (`part_name`)."""
    return raw_object(root, tenant, dataset, name), quarantine_object(root, tenant, dataset, name)


def part_name(name: str, index: int, parts: int) -> str:
    """The name of part `index` of a landing written as `parts` parts: `name` itself when
    there is one part, else `{name}-{index:05d}`."""
    return name if parts == 1 else f"{name}-{index:05d}"


def upload_report(root: str, tenant: str, upload_id: str) -> str:
    return join(tenant_root(root, tenant), "uploads", check_name(upload_id, "upload id") + ".json")


def training_version(root: str, tenant: str, version: str) -> str:
    return join(tenant_root(root, tenant), "training", check_name(version, "version"))
