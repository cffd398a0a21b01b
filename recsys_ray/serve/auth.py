"""API keys: which tenant a request acts for.

Keys come from `RECSYS_API_KEYS` (`tenant:key` pairs, comma-separated) and/or a
keys file of `tenant:sha256hex(key)` lines (a mounted Secret). Only SHA-256
digests are kept in memory and passed between processes; no message here ever
contains a key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

from recsys_ray.config import ApiConfig
from recsys_ray.io import layout


def hash_key(key: str) -> str:
    """Hex SHA-256 of a key: the form keys are stored and compared in."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key_pairs(text: str) -> dict[str, str]:
    """`tenant:key,tenant:key` -> {sha256(key): tenant}."""
    digests: dict[str, str] = {}
    for position, entry in enumerate(part.strip() for part in text.split(",")):
        if not entry:
            continue
        tenant, sep, key = entry.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"API key entry {position + 1} is not of the form tenant:key")
        _add(digests, layout.check_name(tenant.strip(), "tenant"), hash_key(key.strip()))
    return digests


def parse_keys_file(text: str) -> dict[str, str]:
    """Lines of `tenant:sha256hex` (blank lines and '#' comments allowed) -> {digest: tenant}."""
    digests: dict[str, str] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tenant, sep, digest = line.partition(":")
        digest = digest.strip().lower()
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"keys file line {line_no} is not of the form tenant:<64 hex digits>")
        _add(digests, layout.check_name(tenant.strip(), "tenant"), digest)
    return digests


def _add(digests: dict[str, str], tenant: str, digest: str) -> None:
    if digests.get(digest, tenant) != tenant:
        raise ValueError(f"the same API key is configured for two tenants ({digests[digest]!r} and {tenant!r})")
    digests[digest] = tenant


def digests_from_config(api: ApiConfig) -> dict[str, str]:
    """{sha256(key): tenant} from `api.keys` and `api.keys_file`."""
    digests: dict[str, str] = {}
    if api.keys is not None:
        digests.update(parse_key_pairs(api.keys.get_secret_value()))
    if api.keys_file:
        add_keys_file(digests, api.keys_file)
    return digests


def add_keys_file(digests: dict[str, str], path: str) -> None:
    """Merge a keys file into `digests`; a key given to two tenants is an error."""
    for digest, tenant in parse_keys_file(Path(path).read_text()).items():
        _add(digests, tenant, digest)


class KeyRing:
    """Maps a presented key to its tenant."""

    def __init__(self, digests: Mapping[str, str]) -> None:
        self._tenants = dict(digests)

    def tenant_for(self, key: str | None) -> str | None:
        if not key:
            return None
        return self._tenants.get(hash_key(key))

    @property
    def tenants(self) -> set[str]:
        return set(self._tenants.values())

    def __len__(self) -> int:
        return len(self._tenants)


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key of `Authorization: Bearer <key>`, else of `X-API-Key`."""
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None
