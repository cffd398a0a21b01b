"""The documented Serve config (`deploy/serve_config.yaml`) under `serve run` on a Ray head of
its own, with the proxy callback of docs/serve.md set on the node: hostile requests get a 4xx
JSON error and leave the same replica serving; a replica killed mid-request is answered with
JSON and `Retry-After`, and replaced.

A Ray of its own because Serve's proxy takes its callback from the environment of the node it
starts on, which the session's shared Ray was started without.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from recsys_ray.serve.proxy import PROXY_CALLBACK
from tests.conftest import free_port
from tests.integration.serve_support import KEYS
from tests.integration.ray_support import own_processes, ray_command, stop_head

REPO = Path(__file__).resolve().parents[2]
APP = "recsys-ingest"
REPLICA_TITLE = f"ServeReplica:{APP}:IngestService"
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
EVENT = {"user_id": "u1", "item_id": "i1", "interaction_type": "click", "timestamp": "2024-05-01T10:00:00Z"}


def _wait_healthy(url: str, head: subprocess.Popen, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert head.poll() is None, "the Ray head exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    pytest.fail(f"{url}/healthz did not answer within {timeout_s} s")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`serve run --non-blocking` of the documented config (its port made free) on our own Ray head,
    configured through the environment as docs/serve.md describes."""
    base = tmp_path_factory.mktemp("serve-run")
    temp_dir = tempfile.mkdtemp(prefix="rrserve-", dir="/tmp")  # short: Ray's socket paths must fit
    config = yaml.safe_load((REPO / "deploy" / "serve_config.yaml").read_text())
    port = free_port()
    config["http_options"].update(host="127.0.0.1", port=port)
    config_path = base / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    gcs_port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": PROXY_CALLBACK,
           "RECSYS_STORAGE_ROOT": str(base / "store"), "RECSYS_SERVE_SPOOL_DIR": str(base / "spool"),
           "RECSYS_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items()),
           "RECSYS_SERVE_REPLICA_CPUS": "0.25", "RECSYS_SERVE_HEALTH_CHECK_PERIOD_S": "2"}
    env.pop("RAY_ADDRESS", None)
    log = open(Path(temp_dir) / "ray.log", "wb")
    head = subprocess.Popen(
        ray_command("start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
                    "--include-dashboard=false", f"--ray-client-server-port={free_port()}",
                    f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
                    f"--runtime-env-agent-port={free_port()}", "--num-cpus=2", f"--temp-dir={temp_dir}",
                    "--disable-usage-stats"),
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            deployed = subprocess.run(
                [str(Path(ray_command()[0]).parent / "serve"), "run", "--non-blocking",
                 f"--address=127.0.0.1:{gcs_port}", str(config_path)],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            if deployed.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2.0)  # the head may still be starting
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, head)
        yield {"url": url, "head": head, "temp_dir": temp_dir, "spool": base / "spool"}
    finally:
        stop_head(head, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def replica_pids(temp_dir: str) -> list[int]:
    """Pids of the ingestion replicas started by our Ray head (their parent is our raylet)."""
    ours = set(own_processes(temp_dir))
    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if REPLICA_TITLE in " ".join(process.info["cmdline"] or ()) and \
                    any(parent.pid in ours for parent in process.parents()):
                pids.append(process.pid)
        except psutil.Error:
            continue
    return sorted(pids)


def client(url: str, tenant: str = "acme") -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=120)


DEEP_LINES = b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}\n{}"
HOSTILE = [
    # (case, method, path, body, headers, status, code)
    ("deep ndjson", "POST", "/v1/interactions", DEEP_LINES, NDJSON, 400, "invalid_json"),
    ("deep json lines", "POST", "/v1/interactions", DEEP_LINES, JSON, 400, "invalid_json"),
    ("deep upload", "POST", "/v1/uploads/interactions", DEEP_LINES, NDJSON, 400, "invalid_json"),
    ("deep validate", "POST", "/v1/validate/interactions", DEEP_LINES, NDJSON, 400, "invalid_json"),
    ("deep items", "POST", "/v1/items", DEEP_LINES, NDJSON, 400, "invalid_json"),
    ("100k brackets", "POST", "/v1/interactions", b"[" * 100_000, JSON, 400, "invalid_json"),
    ("100k brackets upload", "POST", "/v1/uploads/items", b"[" * 100_000, JSON, 400, "invalid_json"),
    ("60 MB of objects", "POST", "/v1/interactions", b"{}\n" * (20 << 20), NDJSON, 413, "too_many_rows"),
    ("gzip bomb", "POST", "/v1/interactions", gzip.compress(b" " * (200 << 20)),
     {**JSON, "Content-Encoding": "gzip"}, 413, "body_too_large"),
    ("broken gzip", "POST", "/v1/interactions", b"\x1f\x8b not really", {**JSON, "Content-Encoding": "gzip"}, 400,
     "invalid_gzip"),
    ("brotli", "POST", "/v1/uploads/items", b"item_id,title\ni,t\n",
     {"Content-Type": "text/csv", "Content-Encoding": "br"}, 415, "unsupported_content_encoding"),
    ("64 x 1 MB headers", "GET", "/v1/schema/items", None, {f"X-Big-{i}": "a" * (1 << 20) for i in range(64)},
     431, "headers_too_large"),
    ("upload id with a newline", "GET", "/v1/uploads/20240101T000000Z-0123456789abcdef.0%0A", None, {}, 400,
     "invalid_name"),
    ("20,000-character upload id echoed", "GET", "/v1/uploads/" + "a" * 20_000, None, {}, 400, "invalid_name"),
]


def test_hostile_requests_get_json_errors_and_the_replica_keeps_serving(served):
    url = served["url"]
    [replica] = replica_pids(served["temp_dir"])
    with client(url) as http:
        for name, method, path, body, headers, status, code in HOSTILE:
            response = http.request(method, httpx.URL(url).copy_with(raw_path=path.encode()), content=body,
                                    headers=headers)
            assert response.status_code == status, (name, response.text[:500])
            error = response.json()["error"]
            assert error["code"] == code, (name, error)
            assert len(response.content) < 4096, (name, "error bodies quote input bounded")
            assert http.get("/healthz").status_code == 200, name
        # BOM-prefixed JSON and gzip-encoded bodies are accepted.
        with_bom = http.post("/v1/interactions", content=b"\xef\xbb\xbf" + json.dumps([EVENT]).encode(), headers=JSON)
        assert with_bom.status_code == 200, with_bom.text
        zipped = http.post("/v1/uploads/items", content=gzip.compress(b"item_id,title\ni1,One\ni2,Two\n"),
                           headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})
        assert zipped.status_code == 200 and zipped.json()["accepted"] == 2, zipped.text
        assert zipped.json()["objects"][0].startswith("tenants/acme/raw/items/")
        normal = http.post("/v1/interactions", json=[EVENT])
        assert normal.status_code == 200 and normal.json()["accepted"] == 1
    assert replica_pids(served["temp_dir"]) == [replica], "the replica must not have restarted"
    # Spooled bodies live in the replica's own directory and are gone once answered.
    [spool] = [entry for entry in served["spool"].iterdir()]
    assert spool.name.startswith(f"replica-{replica}-")
    assert sorted(p.name for p in spool.iterdir()) == ["owner.lock"]


def _held_request(url: str) -> socket.socket:
    """A record request whose headers and first body bytes are sent, the rest held back."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    conn = socket.create_connection((host, port), timeout=60)
    conn.sendall(f"POST /v1/interactions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEYS['acme']}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n[".encode())
    return conn


def _response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += conn.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_a_replica_dying_mid_request_is_answered_in_json_with_retry_after(served):
    url = served["url"]
    [replica] = replica_pids(served["temp_dir"])
    conn = _held_request(url)
    try:
        time.sleep(2.0)  # the replica is reading the body
        os.kill(replica, signal.SIGKILL)
        status, headers, body = _response(conn)
    finally:
        conn.close()
    assert status == 503, body
    assert headers["content-type"] == "application/json" and int(headers["retry-after"]) >= 1
    error = json.loads(body)["error"]
    assert error["code"] == "replica_failed" and "Idempotency-Key" in error["message"]
    # Serve starts a new replica; its spool start-up removes the dead one's directory.
    _wait_healthy(url, served["head"])
    deadline = time.monotonic() + 120
    while (pids := replica_pids(served["temp_dir"])) in ([], [replica]) and time.monotonic() < deadline:
        time.sleep(1.0)
    [new_replica] = pids
    assert new_replica != replica
    with client(url) as http:
        assert http.post("/v1/interactions", json=[EVENT]).status_code == 200
    assert [p.name.split("-")[1] for p in served["spool"].iterdir()] == [str(new_replica)]
