import asyncio
import hashlib
import os

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
