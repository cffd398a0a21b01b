"""Write a version's report.html: the build calls `write_report` before it writes the manifest,
and `recsys-ray report` calls it for any finished version.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import ValidationError

from recsys_ray.build.manifest import MANIFEST_NAME, manifest_location, read_manifest
from recsys_ray.build.writer import REPORT_FILE
from recsys_ray.config import ReportConfig
from recsys_ray.io import storage
from recsys_ray.report import summaries as s
from recsys_ray.report.collect import ReportError, summarize_version
from recsys_ray.report.html import render_page


@dataclass(frozen=True)
class BuildSummaries:
    """Summaries the build computed over data a finished version no longer holds (every event)."""

    daily: pa.Table | None = None


def write_report(version_uri: str, manifest: Any, options: storage.StorageOptions, previous: str | None = None,
                 build_summaries: BuildSummaries | None = None, settings: ReportConfig | None = None,
                 out: str | None = None, previous_note: str | None = None) -> str:
    """Summarise the version at `version_uri` with Ray Data, render the page and write it
    (to `out`, default `{version_uri}/report.html`); returns the URI written.

    `manifest` is the version's manifest (a dict, or a model with `model_dump`);
    `previous` a version directory or manifest URI to compare against.
    """
    settings = settings or ReportConfig()
    manifest = manifest_dict(manifest)
    daily = build_summaries.daily if build_summaries is not None else None
    current = summarize_version(version_uri.rstrip("/"), manifest, options, settings, daily=daily)
    drift = None
    if previous is not None:
        previous_manifest, previous_root = read_version(previous, options)
        drift = s.drift(current, summarize_version(previous_root, previous_manifest, options, settings), settings)
    target = out or storage.join(version_uri, REPORT_FILE)
    storage.write_bytes(target, render_page(current, settings, drift, previous_note).encode("utf-8"), options)
    return target


def manifest_dict(manifest: Any) -> dict[str, Any]:
    """A manifest as its JSON fields, whether given as a dict or a pydantic model."""
    if hasattr(manifest, "model_dump"):
        return manifest.model_dump(mode="json")
    return dict(manifest)


def read_version(uri: str, options: storage.StorageOptions) -> tuple[dict[str, Any], str]:
    """(manifest fields, version root) of the version at `uri` (its directory or its manifest file)."""
    try:
        manifest = read_manifest(uri, options)
    except FileNotFoundError as exc:
        raise ReportError(f"{exc} (the build writes manifest.json last)") from None
    except ValidationError as exc:
        raise ReportError(f"{manifest_location(uri)[0]} is not a recsys_ray manifest: "
                          f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}") from None
    except OSError as exc:
        raise ReportError(f"cannot read {manifest_location(uri)[0]}: {exc}") from None
    return manifest_dict(manifest), manifest.uri


def previous_version(version_uri: str, manifest: dict[str, Any], options: storage.StorageOptions) -> str | None:
    """The same tenant's latest other version created before this one, in the same folder
    (by the manifests' `created_at`); None if there is none."""
    root = version_uri.rstrip("/")
    parent = posixpath.dirname(root)
    fs, parent_path = storage.resolve(parent or ".", options)
    _, own_path = storage.resolve(root, options)
    created = _created_at(manifest)
    candidates = []
    for info in fs.get_file_info(pafs.FileSelector(parent_path, allow_not_found=True)):
        if info.type != pafs.FileType.Directory or info.path.rstrip("/") == own_path.rstrip("/"):
            continue
        candidate = storage.to_uri(fs, info.path)
        if not storage.exists(storage.join(candidate, MANIFEST_NAME), options):
            continue
        try:
            other, _ = read_version(candidate, options)
        except ReportError:
            continue
        when = _created_at(other)
        if other.get("tenant") == manifest.get("tenant") and when is not None and (created is None or when < created):
            candidates.append((when, candidate))
    return max(candidates)[1] if candidates else None


def _created_at(manifest: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(manifest["created_at"])
    except (KeyError, TypeError, ValueError):
        return None
