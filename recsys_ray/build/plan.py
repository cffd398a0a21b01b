"""What a build reads and where it writes, resolved before any data is touched.

`plan_build` lists the inputs, names the version and checks every mistake a user
can make on the command line (a wrong path, an unknown tenant, a bad version
name) without importing or starting Ray, so such mistakes are reported at once.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone

from recsys_ray.config import RecsysConfig
from recsys_ray.io import formats, layout, storage

INPUT_SUFFIXES = tuple(formats.EXTENSIONS)
DEFAULT_TENANT = "default"


class BuildError(RuntimeError):
    """The build cannot proceed; the message says why in the user's terms."""


@dataclass(frozen=True)
class BuildPlan:
    """Everything resolved before any data is touched.

    `tenant` is the tenant the build reads from or writes under (None when both
    inputs and output were given explicitly).
    """

    interactions: list[storage.FileEntry]
    items: list[storage.FileEntry]
    out: str
    version: str
    tenant: str | None
    options: storage.StorageOptions


def plan_build(cfg: RecsysConfig) -> BuildPlan:
    """Resolve inputs and the output location; raise BuildError with a clear message."""
    b = cfg.build
    options = storage.StorageOptions.from_config(cfg.storage)
    try:
        tenant = layout.check_name(b.tenant, "tenant") if b.tenant else None
        if tenant is None and not b.out:
            tenant = DEFAULT_TENANT  # the default output lies under a tenant
        version = layout.check_name(_version_name(b.version, b.out), "version")
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    if b.interactions:
        interactions = _list_inputs(list(b.interactions), options)
        items = _list_inputs(list(b.items), options) if b.items else []
    elif b.tenant:
        interactions = _tenant_inputs(cfg.storage.root, b.tenant, "interactions", options)
        items = (_list_inputs(list(b.items), options) if b.items
                 else _tenant_inputs(cfg.storage.root, b.tenant, "items", options, required=False))
    else:
        raise BuildError("no inputs: give --interactions URI (and optionally --items URI), "
                         "or --root URI --tenant T to build from a tenant's raw zone")
    for entry in interactions + items:
        if entry.size == 0:
            raise BuildError(f"input file {entry.uri} is empty")
    out = (b.out or layout.training_version(cfg.storage.root, tenant, version)).rstrip("/")
    return BuildPlan(interactions, items, out, version, tenant, options)


def _version_name(version: str | None, out: str | None) -> str:
    """The version's name: --version, else the last segment of --out, else the UTC time."""
    if version:
        return version
    if out:
        name = posixpath.basename(out.rstrip("/"))
        if name:
            return name
    return datetime.now(timezone.utc).strftime("v%Y%m%dT%H%M%SZ")


def _list_inputs(uris: list[str], options: storage.StorageOptions) -> list[storage.FileEntry]:
    """Every file the inputs name, each once (a file named twice, directly and through its
    directory or two globs, is one input)."""
    files: dict[str, storage.FileEntry] = {}
    for uri in uris:
        found = storage.list_files(uri, options, suffixes=INPUT_SUFFIXES)
        if not found:
            if not storage.exists(uri, options):
                raise BuildError(f"input {uri} does not exist")
            raise BuildError(f"input {uri} holds no files ending in {', '.join(INPUT_SUFFIXES)}")
        files.update((entry.uri, entry) for entry in found if entry.uri not in files)
    return list(files.values())


def _tenant_inputs(root: str, tenant: str, dataset: str, options: storage.StorageOptions,
                   required: bool = True) -> list[storage.FileEntry]:
    raw = layout.raw_dir(root, tenant, dataset)
    found = storage.list_files(raw, options, suffixes=INPUT_SUFFIXES)
    if found or not required:
        return found
    if not storage.exists(layout.tenant_root(root, tenant), options):
        raise BuildError(f"unknown tenant {tenant!r}: nothing under {layout.tenant_root(root, tenant)} "
                         f"(check --root and --tenant)")
    raise BuildError(f"tenant {tenant!r} has no landed interactions under {raw}")
