import asyncio
import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from recsys_ray.serve import bodies
from recsys_ray.serve.errors import ApiError


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


def test_read_body_joins_chunks_within_the_limit():
    assert asyncio.run(bodies.read_body(_chunks(b"ab", b"", b"cd"), limit=4)) == b"abcd"


def test_read_body_stops_at_the_first_byte_over_the_limit():
    consumed = []

    async def endless():
        while True:
            consumed.append(1)
            yield b"x" * 10

    with pytest.raises(ApiError) as info:
        asyncio.run(bodies.read_body(endless(), limit=25))
    assert info.value.status == 413 and info.value.code == "body_too_large"
    assert len(consumed) == 3


@pytest.mark.parametrize("declared", ["101", " 5000 "])
def test_declared_length_over_the_limit_is_refused_early(declared):
    with pytest.raises(ApiError):
        bodies.check_declared_length(declared, 100)


@pytest.mark.parametrize("declared", [None, "", "100", "abc", "-5"])
def test_declared_length_is_not_trusted_otherwise(declared):
    bodies.check_declared_length(declared, 100)


def test_spool_body_writes_counts_and_hashes(tmp_path):
    spooled = asyncio.run(bodies.spool_body(_chunks(b"hello ", b"world"), 100, str(tmp_path), digest=True))
    with open(spooled.path, "rb") as handle:
        assert handle.read() == b"hello world"
    assert spooled.size == 11
    assert spooled.sha256 == hashlib.sha256(b"hello world").hexdigest()
    spooled.remove()
    spooled.remove()
    assert os.listdir(tmp_path) == []


def test_spool_body_over_the_limit_leaves_nothing_behind(tmp_path):
    with pytest.raises(ApiError) as info:
        asyncio.run(bodies.spool_body(_chunks(b"x" * 60, b"y" * 60), 100, str(tmp_path)))
    assert info.value.status == 413
    assert os.listdir(tmp_path) == []


# ---- content encoding ----------------------------------------------------------------------------


async def _collect(chunks) -> bytes:
    return b"".join([chunk async for chunk in chunks])


@pytest.mark.parametrize("header, expected", [(None, "identity"), ("", "identity"), ("identity", "identity"),
                                              ("gzip", "gzip"), (" GZIP ", "gzip"), ("x-gzip", "gzip")])
def test_supported_content_encodings(header, expected):
    assert bodies.check_content_encoding(header) == expected


@pytest.mark.parametrize("header", ["br", "deflate", "zstd", "gzip, gzip", "compress"])
def test_other_content_encodings_are_415(header):
    with pytest.raises(ApiError) as info:
        bodies.check_content_encoding(header)
    assert (info.value.status, info.value.code) == (415, "unsupported_content_encoding")


def test_gzip_bodies_are_inflated_across_chunks_and_members():
    first, second = b'[{"item_id": "i", "title": "t"}]' * 1000, b"tail"
    wire = gzip.compress(first) + gzip.compress(second)
    pieces = [wire[i:i + 7] for i in range(0, len(wire), 7)]
    assert asyncio.run(_collect(bodies.decoded(_chunks(*pieces), "gzip"))) == first + second
    assert asyncio.run(_collect(bodies.decoded(_chunks(b"as", b"is"), "identity"))) == b"asis"


def test_a_gzip_bomb_stops_at_the_byte_limit_after_one_piece():
    bomb = gzip.compress(b"\0" * (200 << 20))  # 200 MiB from about 200 KB
    assert len(bomb) < 1 << 20
    inflated = []

    async def counted():
        async for piece in bodies.decoded(_chunks(bomb), "gzip"):
            inflated.append(len(piece))
            yield piece

    with pytest.raises(ApiError) as info:
        asyncio.run(bodies.read_body(counted(), limit=5 << 20))
    assert info.value.code == "body_too_large"
    assert max(inflated) <= 1 << 20 and sum(inflated) <= 6 << 20


@pytest.mark.parametrize("wire", [b"not gzip at all", gzip.compress(b"x" * 1000)[:-12], b""])
def test_broken_gzip_is_invalid_gzip(wire):
    with pytest.raises(ApiError) as info:
        asyncio.run(_collect(bodies.decoded(_chunks(wire), "gzip")))
    assert (info.value.status, info.value.code) == (400, "invalid_gzip")


# ---- body timeouts -------------------------------------------------------------------------------


async def _trickle(parts: int, every_s: float, size: int = 1):
    for _ in range(parts):
        await asyncio.sleep(every_s)
        yield b"x" * size


def test_a_body_arriving_in_time_passes():
    timeouts = bodies.BodyTimeouts(idle_s=1.0, grace_s=0.5, min_bytes_per_s=100)
    body = asyncio.run(bodies.read_body(bodies.timed(_trickle(5, 0.05, size=20), timeouts), limit=1000))
    assert body == b"x" * 100


def test_a_pause_beyond_the_idle_timeout_is_408():
    timeouts = bodies.BodyTimeouts(idle_s=0.2, grace_s=60, min_bytes_per_s=0)

    async def stalls():
        yield b"x" * 10
        await asyncio.sleep(30)
        yield b"never"

    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        asyncio.run(bodies.read_body(bodies.timed(stalls(), timeouts), limit=1000))
    assert time.monotonic() - started < 5
    assert (info.value.status, info.value.code, info.value.details["received_bytes"]) == (408, "body_timeout", 10)
    assert info.value.headers == {"Connection": "close"}


def test_a_steady_trickle_below_the_minimum_rate_is_408_after_the_grace_period():
    # One byte every 0.1 s never pauses for long, but is far below 100 bytes/s.
    timeouts = bodies.BodyTimeouts(idle_s=1.0, grace_s=0.5, min_bytes_per_s=100)
    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        asyncio.run(bodies.read_body(bodies.timed(_trickle(1000, 0.1), timeouts), limit=10_000))
    elapsed = time.monotonic() - started
    assert info.value.code == "body_timeout"
    assert 0.5 <= elapsed < 5


# ---- concurrent bodies ---------------------------------------------------------------------------


def test_body_readers_bound_each_tenant_and_the_total():
    readers = bodies.BodyReaders(per_tenant=2, total=3, retry_after_s=0)
    with readers.reading("acme"), readers.reading("acme"):
        with pytest.raises(ApiError) as info:
            with readers.reading("acme"):
                pass
        assert (info.value.status, info.value.code) == (429, "too_many_concurrent_bodies")
        assert info.value.headers == {"Retry-After": "1"}
        with readers.reading("globex"):
            with pytest.raises(ApiError):  # three bodies in all
                with readers.reading("initech"):
                    pass
    with readers.reading("acme"), readers.reading("acme"), readers.reading("globex"):
        pass  # everything was released


# ---- spool directories ---------------------------------------------------------------------------

_HOLD_SPOOL = """
import sys, time
from recsys_ray.serve.bodies import SpoolDirectory
spool = SpoolDirectory(sys.argv[1])
open(spool.path + "/upload-x.body", "wb").write(b"x" * 1000)
print(spool.path, flush=True)
time.sleep(600)
"""


def _replica_holding_a_spool(base) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", _HOLD_SPOOL, str(base)], stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def test_a_starting_replica_removes_only_the_spool_of_replicas_that_died(tmp_path):
    dead, dead_dir = _replica_holding_a_spool(tmp_path)
    alive, alive_dir = _replica_holding_a_spool(tmp_path)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(30)
        assert os.path.exists(os.path.join(dead_dir, "upload-x.body"))
        spool = bodies.SpoolDirectory(str(tmp_path))
        assert spool.removed == [dead_dir]
        assert not os.path.exists(dead_dir)
        assert os.path.exists(os.path.join(alive_dir, "upload-x.body"))
        assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(alive_dir), os.path.basename(spool.path)])
        spool.close()
        assert not os.path.exists(spool.path)
    finally:
        alive.kill()
        alive.wait(30)
    assert bodies.sweep_spool(str(tmp_path)) == [alive_dir]
    assert os.listdir(tmp_path) == []
