"""Reading request bodies within bounds: bytes, time, encoding and concurrency.

`Content-Length` is only used to refuse early; the byte limit holds for what is
actually received (after gzip decoding), chunked transfer included. A body must
keep arriving (`BodyTimeouts`: an idle timeout, and after a grace period a
minimum rate), or the request ends with 408, which frees the replica's request
slot. `BodyReaders` bounds how many bodies one tenant, and the whole replica,
read at once, so slow senders cannot take every slot. Whole-file uploads are
spooled to a `SpoolDirectory` the replica owns, which leftovers of replicas
that died are cleared from.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterator

from recsys_ray.config import ApiConfig
from recsys_ray.serve.errors import ApiError

# Encodings a body may be sent in; the byte limits count the decoded bytes.
CONTENT_ENCODINGS = ("identity", "gzip")
_GUNZIP_PIECE_BYTES = 1 << 20
DEFAULT_SPOOL_DIR = os.path.join(tempfile.gettempdir(), "recsys-ray-spool")
_REPLICA_PREFIX = "replica-"
_OWNER_LOCK = "owner.lock"
# A replica directory without its lock is one being created; older than this it is a leftover.
_UNLOCKED_GRACE_S = 60.0


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes",
                    {"limit_bytes": limit})


def check_declared_length(content_length: str | None, limit: int) -> None:
    """Refuse a body whose declared length is already over `limit`."""
    if content_length and content_length.strip().isdigit() and int(content_length) > limit:
        raise too_large(limit)


def check_content_encoding(content_encoding: str | None) -> str:
    """The body's encoding (`identity` or `gzip`); ApiError 415 for any other."""
    encoding = (content_encoding or "identity").strip().lower()
    encoding = "gzip" if encoding == "x-gzip" else encoding or "identity"
    if encoding not in CONTENT_ENCODINGS:
        raise ApiError(415, "unsupported_content_encoding",
                       "Content-Encoding must be gzip or identity (or absent)",
                       {"content_encoding": content_encoding or "", "supported": list(CONTENT_ENCODINGS)})
    return encoding


def decoded(chunks: AsyncIterator[bytes], encoding: str) -> AsyncIterator[bytes]:
    """The body's bytes decoded from `encoding` (one that `check_content_encoding` returned)."""
    return chunks if encoding == "identity" else _gunzipped(chunks)


async def _gunzipped(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Inflate gzip (one or more members) in pieces of at most 1 MiB, so a small body that
    expands enormously is stopped by the byte limit after the first pieces past it."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    async for chunk in chunks:
        pending = chunk
        while pending:
            if inflater.eof:  # another gzip member follows
                inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            try:
                piece = inflater.decompress(pending, _GUNZIP_PIECE_BYTES)
            except zlib.error as exc:
                raise invalid_gzip(str(exc)) from exc
            if piece:
                yield piece
            pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            while not pending and len(piece) == _GUNZIP_PIECE_BYTES and not inflater.eof:
                piece = inflater.decompress(b"", _GUNZIP_PIECE_BYTES)  # output still held back
                if piece:
                    yield piece
    if not inflater.eof:
        raise invalid_gzip("the gzip stream ends before its end marker")


def invalid_gzip(reason: str) -> ApiError:
    return ApiError(400, "invalid_gzip", f"the body is not valid gzip (Content-Encoding: gzip): {reason}")


@dataclass(frozen=True)
class BodyTimeouts:
    """How long a body may take: at most `idle_s` between chunks, and after `grace_s`
    at least `min_bytes_per_s` on average (0: no minimum rate)."""

    idle_s: float
    grace_s: float
    min_bytes_per_s: int

    @classmethod
    def from_config(cls, api: ApiConfig) -> "BodyTimeouts":
        return cls(api.body_idle_timeout_s, api.body_grace_s, api.body_min_bytes_per_s)

    def deadline(self, started: float, received: int) -> float:
        """When the body is late, having received `received` bytes since `started`."""
        if not self.min_bytes_per_s:
            return float("inf")
        return started + self.grace_s + received / self.min_bytes_per_s


def body_timeout(timeouts: BodyTimeouts, received: int, elapsed: float) -> ApiError:
    return ApiError(
        408, "body_timeout",
        f"the request body arrived too slowly ({received} bytes in {elapsed:.1f} s): send it without pauses "
        f"over {timeouts.idle_s:g} s and at {timeouts.min_bytes_per_s} bytes/s or more after the first "
        f"{timeouts.grace_s:g} s",
        {"received_bytes": received, "idle_timeout_s": timeouts.idle_s, "grace_s": timeouts.grace_s,
         "min_bytes_per_s": timeouts.min_bytes_per_s},
        headers={"Connection": "close"})


async def timed(chunks: AsyncIterator[bytes], timeouts: BodyTimeouts,
                clock: Callable[[], float] = time.monotonic) -> AsyncIterator[bytes]:
    """`chunks` as they arrive, or ApiError 408 once the body is idle or slow beyond `timeouts`."""
    iterator = chunks.__aiter__()
    started = clock()
    received = 0
    while True:
        wait = min(timeouts.idle_s, timeouts.deadline(started, received) - clock())
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(iterator.__anext__(), wait)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise body_timeout(timeouts, received, clock() - started) from None
        received += len(chunk)
        yield chunk


class BodyReaders:
    """Counts the bodies being read at once, per tenant and in all; refuses beyond the bounds.

    A refusal (429 with `Retry-After`) answers at once, so requests whose bodies
    would wait do not hold the replica's request slots either.
    """

    def __init__(self, per_tenant: int, total: int, retry_after_s: int) -> None:
        self._per_tenant = per_tenant
        self._total = total
        self._retry_after_s = max(1, retry_after_s)
        self._reading: Counter[str] = Counter()

    @contextlib.contextmanager
    def reading(self, tenant: str) -> Iterator[None]:
        if self._reading[tenant] >= self._per_tenant or sum(self._reading.values()) >= self._total:
            raise ApiError(429, "too_many_concurrent_bodies",
                           "too many request bodies are being received at once; retry after Retry-After",
                           {"max_per_tenant": self._per_tenant}, headers={"Retry-After": str(self._retry_after_s)})
        self._reading[tenant] += 1
        try:
            yield
        finally:
            self._reading[tenant] -= 1
            if not self._reading[tenant]:
                del self._reading[tenant]


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


class SpoolDirectory:
    """One replica's directory for spooled bodies and pending rows, inside `base`.

    Replicas on one node may share `base`: each owns a `replica-{pid}-...`
    directory and holds an exclusive lock on a file in it while it runs. The
    kernel drops the lock when the process dies, however it dies, so a starting
    replica removes exactly the directories whose lock it can take.
    """

    def __init__(self, base: str) -> None:
        os.makedirs(base, exist_ok=True)
        self.removed = sweep_spool(base)
        self.path = tempfile.mkdtemp(prefix=f"{_REPLICA_PREFIX}{os.getpid()}-", dir=base)
        self._lock = open(os.path.join(self.path, _OWNER_LOCK), "wb")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        """Remove the directory and everything left in it."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()


def sweep_spool(base: str) -> list[str]:
    """Remove the replica directories in `base` that no running process owns; returns them."""
    removed = []
    for entry in os.scandir(base):
        if not entry.name.startswith(_REPLICA_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            lock = open(os.path.join(entry.path, _OWNER_LOCK), "rb")
        except FileNotFoundError:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime > _UNLOCKED_GRACE_S:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its replica is running
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed
