"""Slow senders on a real Serve deployment (shared Ray): more authenticated connections than the
replica has request slots, each sending its body at one byte a second, get 408 or 429 in
bounded time, while health checks and another tenant stay answered."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.integration.serve_support import KEYS, deploy, undeploy

SLOTS = 8  # the replica's max_ongoing_requests
PER_TENANT = 3
SLOW_CLIENTS = 12
TIMEOUTS = {"body_idle_timeout_s": 3.0, "body_grace_s": 2.0, "body_min_bytes_per_s": 64}
ANSWER_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory):
    svc = deploy("ingest-slow", str(tmp_path_factory.mktemp("serve-slow")),
                 api={**TIMEOUTS, "max_body_reads_per_tenant": PER_TENANT},
                 serve={"max_ongoing_requests": SLOTS, "max_queued_requests": 64})
    yield svc
    undeploy(svc)


async def _slow_sender(url: httpx.URL, started: asyncio.Event) -> tuple[int, dict, float]:
    """POST a 1000-byte body one byte a second; (status, error body, seconds until the answer)."""
    reader, writer = await asyncio.open_connection(url.host, url.port)
    path = url.raw_path.decode() + "/v1/interactions"
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {KEYS['acme']}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[".encode())
    await writer.drain()
    begun = time.monotonic()
    started.set()
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    try:
        while not answer.done() and time.monotonic() - begun < ANSWER_WITHIN_S:
            await asyncio.wait([answer], timeout=1.0)
            if not answer.done():
                try:
                    writer.write(b" ")
                    await writer.drain()
                except ConnectionError:
                    await asyncio.wait([answer], timeout=5.0)
        if not answer.done():
            answer.cancel()
            return 0, {}, time.monotonic() - begun
        head = answer.result().decode("latin-1").split("\r\n")
        elapsed = time.monotonic() - begun
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
        body = await reader.readexactly(int(headers["content-length"]))
        return int(head[0].split()[1]), json.loads(body), elapsed
    finally:
        writer.close()


async def _probe(client: httpx.AsyncClient, method: str, path: str, **kwargs) -> tuple[int, float]:
    begun = time.monotonic()
    try:
        response = await client.request(method, path, timeout=5.0, **kwargs)
    except httpx.TimeoutException:
        return 0, time.monotonic() - begun
    return response.status_code, time.monotonic() - begun


def test_slow_senders_are_cut_off_and_others_stay_answered(service):
    url = httpx.URL(service.url)

    async def scenario():
        events = [asyncio.Event() for _ in range(SLOW_CLIENTS)]
        senders = [asyncio.ensure_future(_slow_sender(url, event)) for event in events]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), 30)
        await asyncio.sleep(0.5)
        probes = []
        headers = {"Authorization": f"Bearer {KEYS['globex']}"}
        async with httpx.AsyncClient(base_url=service.url, headers=headers) as other:
            for _ in range(4):  # while the slow senders are connected
                probes.append(("healthz", *await _probe(other, "GET", "/healthz")))
                probes.append(("globex", *await _probe(other, "POST", "/v1/items",
                                                       json=[{"item_id": "g1", "title": "G"}])))
                await asyncio.sleep(0.25)
        return await asyncio.gather(*senders), probes

    began = time.monotonic()
    slow, probes = asyncio.run(scenario())
    took = time.monotonic() - began
    print(f"slow senders answered after {sorted(round(e, 1) for _, _, e in slow)} s; probes "
          f"{[(name, status, round(seconds, 2)) for name, status, seconds in probes]}; {took:.1f} s in all")

    assert all(status == 200 and seconds < 5 for _, status, seconds in probes), probes
    statuses = sorted(status for status, _, _ in slow)
    assert statuses == [408] * PER_TENANT + [429] * (SLOW_CLIENTS - PER_TENANT), slow
    for status, body, seconds in slow:
        code = body["error"]["code"]
        assert code == ("body_timeout" if status == 408 else "too_many_concurrent_bodies")
        assert seconds < (15 if status == 408 else 5), (status, seconds)
    assert took < 40


def test_a_body_sent_in_pieces_in_time_is_accepted(service):
    pieces = [b"[", json.dumps({"item_id": "p1", "title": "P"}).encode(), b",",
              json.dumps({"item_id": "p2", "title": "Q"}).encode(), b"]"]

    def paced():
        for piece in pieces:
            time.sleep(0.3)
            yield piece

    response = service.client().post("/v1/items", content=paced(), headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text
