"""Reading request bodies within a byte limit, counted as the bytes arrive.

`Content-Length` is only used to refuse early; the limit holds for what is
actually received, chunked transfer included. Whole-file uploads are spooled
to a temporary file instead of memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from typing import AsyncIterator

from recsys_ray.serve.errors import ApiError


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes",
                    {"limit_bytes": limit})


def check_declared_length(content_length: str | None, limit: int) -> None:
    """Refuse a body whose declared length is already over `limit`."""
    if content_length and content_length.strip().isdigit() and int(content_length) > limit:
        raise too_large(limit)


async def read_body(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, or ApiError 413 as soon as more than `limit` bytes arrived."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        if chunk:
            parts.append(chunk)
    return b"".join(parts)


@dataclass
class SpooledBody:
    """A body written to a temporary file; `remove()` when done."""

    path: str
    size: int
    sha256: str | None

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


async def spool_body(chunks: AsyncIterator[bytes], limit: int, directory: str | None = None,
                     *, digest: bool = False) -> SpooledBody:
    """Write the body to a temporary file in `directory`, enforcing `limit`.

    With `digest`, also computes the body's SHA-256 (for idempotency checks).
    The file is removed if the body is refused or the transfer fails.
    """
    handle, path = tempfile.mkstemp(prefix="upload-", suffix=".body", dir=directory)
    hasher = hashlib.sha256() if digest else None
    size = 0
    try:
        with os.fdopen(handle, "wb", buffering=1 << 20) as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                out.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return SpooledBody(path, size, hasher.hexdigest() if hasher else None)
