"""Benchmark of the ingestion service on Ray Serve (a script, not a test).

(a) Whole-file uploads: N rows (default 1M) as one CSV and as one Parquet
    request to POST /v1/uploads/interactions; rows/s from the first byte sent
    to the durable 2xx answer.
(b) Small requests: 100-row JSON batches to POST /v1/interactions from 32
    concurrent connections (wrk), next to the no-op GET /healthz on the same
    set-up in the same run: requests/s, p50, p99, errors, and the rows found in
    storage afterwards (must equal 100 x the 2xx answers). With --echo, also
    the same bodies POSTed to a bare endpoint that only reads the body (a second
    application on the same Serve instance): what carrying the body costs.

Each Serve set-up runs on its own fresh local Ray instance in a child process,
because some set-ups are chosen by environment variables that Ray reads at start.

    apt-get install -y wrk        # Debian's package
    python benchmarks/serve_ingest.py                          # every set-up
    python benchmarks/serve_ingest.py --setups proxy,direct --duration 20 --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

KEY = "bench-key-0123456789"
ROWS_PER_REQUEST = 100

ONE_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
# name -> (environment for Ray, RecsysConfig.serve overrides, description)
SETUPS: dict[str, tuple[dict[str, str], dict, str]] = {
    "proxy": ({}, {}, "HTTP proxy, 1 replica, access log off, write batching on (the defaults)"),
    "proxy-access-log": ({}, {"access_log": True}, "as proxy, with Serve's per-request access log"),
    "proxy-no-batching": ({}, {"batch_max_requests": 1}, "as proxy, every request validated and written alone"),
    "proxy-2-replicas": ({}, {"num_replicas": 2}, "HTTP proxy, 2 replicas"),
    "proxy-one-loop": (ONE_LOOP, {}, "as proxy, user code and router on the main event loops"),
    "proxy-grpc": ({"RAY_SERVE_PROXY_USE_GRPC": "1"}, {},
                   "as proxy, proxy-to-replica calls over gRPC instead of Ray actor calls (Ray flag, experimental)"),
    "direct": ({"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, {},
               "direct ingress: the replica's own HTTP server, no proxy hop (Ray flag, experimental)"),
    "direct-one-loop": ({"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", **ONE_LOOP}, {},
                        "direct ingress, user code on the replica's main event loop"),
}


# ---- data -------------------------------------------------------------------------------------


def synthetic_events(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    seconds = 1_700_000_000 + rng.integers(0, 90 * 86400, rows)
    return pa.table({
        "user_id": np.char.add("u", rng.integers(0, 100_000, rows).astype(str)),
        "item_id": np.char.add("i", rng.integers(0, 20_000, rows).astype(str)),
        "interaction_type": np.array(["view", "click", "like", "add_to_cart", "purchase"])[rng.integers(0, 5, rows)],
        "timestamp": pa.array(seconds * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "rating": pa.array(np.where(rng.random(rows) < 0.3, rng.integers(1, 6, rows), np.nan), pa.float64(),
                           from_pandas=True),
        "event_id": np.char.add("e", np.arange(rows).astype(str)),
    })


def write_inputs(directory: Path, rows: int) -> dict[str, Path]:
    table = synthetic_events(rows)
    paths = {"csv": directory / "events.csv", "parquet": directory / "events.parquet"}
    # ISO-8601 text times in the CSV, as exports usually have them.
    as_text = table.set_column(3, "timestamp", pa.array(
        np.datetime_as_string(table.column("timestamp").to_numpy().astype("datetime64[s]"), unit="s", timezone="UTC")))
    pacsv.write_csv(as_text, paths["csv"])
    pq.write_table(table, paths["parquet"])
    return paths


def write_request_bodies(directory: Path, count: int = 64) -> Path:
    """`count` distinct 100-row JSON bodies, one per line, for the wrk script."""
    table = synthetic_events(count * ROWS_PER_REQUEST, seed=1)
    records = table.set_column(3, "timestamp", pa.array(
        np.datetime_as_string(table.column("timestamp").to_numpy().astype("datetime64[s]"), unit="s",
                              timezone="UTC"))).to_pylist()
    path = directory / "bodies.ndjson"
    with path.open("w") as out:
        for start in range(0, len(records), ROWS_PER_REQUEST):
            out.write(json.dumps(records[start:start + ROWS_PER_REQUEST]) + "\n")
    return path


WRK_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local bodies = {{}}
for line in io.lines("{bodies}") do bodies[#bodies + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])
end
"""


# ---- measuring ------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def run_wrk(url: str, duration: int, connections: int, threads: int, script: Path | None = None) -> dict:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "requests": requests,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def upload(url: str, path: Path, content_type: str) -> dict:
    import httpx

    def chunks():
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                yield block

    started = time.perf_counter()
    response = httpx.post(url, content=chunks(), timeout=600,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": content_type})
    seconds = time.perf_counter() - started
    response.raise_for_status()
    report = response.json()
    return {"seconds": round(seconds, 3), "bytes": path.stat().st_size, "accepted": report["accepted"],
            "rejected": report["rejected"], "rows_per_s": round(report["accepted"] / seconds)}


def _echo_application():
    """A bare FastAPI app: GET /healthz, and POST anywhere reads the body and answers its length."""
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from ray import serve

    api = FastAPI()

    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    healthz.__annotations__ = {"return": Response}
    api.get("/healthz")(healthz)

    async def echo(path: str, request: Request) -> Response:
        body = await request.body()
        return Response(b'{"bytes":%d}' % len(body), media_type="application/json")

    # Real classes, not the postponed (string) annotations of this module, for FastAPI to see.
    echo.__annotations__ = {"path": str, "request": Request, "return": Response}
    api.post("/{path:path}")(echo)

    @serve.deployment(name="BodyEcho", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(api)
    class BodyEcho:
        pass

    return BodyEcho.bind()


def _direct_ingress_url(app_prefix: str, replica: str = "IngestService") -> str:
    """The HTTP port the ingress replica `replica` itself listens on (direct ingress)."""
    import httpx
    import psutil
    import ray

    raylet = psutil.Process(ray._private.worker._global_node.all_processes["raylet"][0].process.pid)
    deadline = time.monotonic() + 60  # the replica's HTTP server may start after the app reports ready
    while time.monotonic() < deadline:
        replicas = {p.pid for p in raylet.children(recursive=True)
                    if "ServeReplica" in p.name() and replica in " ".join(p.cmdline() + [p.name()])}
        for conn in psutil.net_connections(kind="tcp"):
            if conn.pid in replicas and conn.status == psutil.CONN_LISTEN:
                url = f"http://127.0.0.1:{conn.laddr.port}{app_prefix}"
                try:
                    if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                        return url
                except httpx.HTTPError:
                    continue
        time.sleep(1)
    raise RuntimeError("no replica answers HTTP: is RAY_SERVE_ENABLE_DIRECT_INGRESS=1 set for Ray?")


def run_setup(name: str, args: argparse.Namespace) -> dict:
    """Inside a child process: start Ray and the service with set-up `name`, measure, report."""
    import ray
    from ray import serve

    from recsys_ray.config import RecsysConfig
    from recsys_ray.io import layout, storage
    from recsys_ray.serve.app import ingest_application

    env, serve_options, _ = SETUPS[name]
    work = Path(args.work)
    root = tempfile.mkdtemp(prefix=f"store-{name}-", dir=work)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = RecsysConfig.load(storage={"root": root}, api={"keys": f"bench:{KEY}"},
                            serve={"max_queued_requests": -1, **serve_options})
    serve.run(ingest_application(cfg), name="bench", route_prefix="/")
    url = _direct_ingress_url("") if env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1" else f"http://127.0.0.1:{port}"
    settle = 2.0  # let requests cut off by the end of a wrk run finish before counting rows
    result: dict = {"setup": name, "url": url}
    run_wrk(f"{url}/healthz", 3, args.connections, args.threads)  # warm-up
    result["noop"] = run_wrk(f"{url}/healthz", args.duration, args.connections, args.threads)
    script = work / "post.lua"
    script.write_text(WRK_POST.format(key=KEY, bodies=work / "bodies.ndjson"))
    run_wrk(f"{url}/v1/interactions", 3, args.connections, args.threads, script)  # warm-up
    time.sleep(settle)
    before = _stored_rows(root, storage, layout)
    ingest = run_wrk(f"{url}/v1/interactions", args.duration, args.connections, args.threads, script)
    time.sleep(settle)
    stored_rows, objects = _stored_rows(root, storage, layout)
    ingest["rows_stored"] = stored_rows - before[0]
    ingest["objects_written"] = objects - before[1]
    ingest["rows_expected"] = (ingest["requests"] - ingest["non_2xx"]) * ROWS_PER_REQUEST
    ingest["share_of_noop"] = round(ingest["requests_per_s"] / result["noop"]["requests_per_s"], 3)
    result["ingest"] = ingest
    if args.upload and name in args.upload.split(","):
        result["upload_csv"] = upload(f"{url}/v1/uploads/interactions", work / "events.csv", "text/csv")
        result["upload_parquet"] = upload(f"{url}/v1/uploads/interactions", work / "events.parquet",
                                          "application/vnd.apache.parquet")
    if args.echo:
        # Last, in place of the service (direct ingress serves one application per port range).
        serve.delete("bench")
        serve.run(_echo_application(), name="echo", route_prefix="/")
        direct = env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1"
        echo_url = _direct_ingress_url("", "BodyEcho") if direct else f"http://127.0.0.1:{port}"
        run_wrk(f"{echo_url}/v1/interactions", 3, args.connections, args.threads, script)  # warm-up
        echo = run_wrk(f"{echo_url}/v1/interactions", args.duration, args.connections, args.threads, script)
        echo["share_of_noop"] = round(echo["requests_per_s"] / result["noop"]["requests_per_s"], 3)
        ingest["share_of_echo"] = round(ingest["requests_per_s"] / echo["requests_per_s"], 3)
        result["echo"] = echo
    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    return result


def _stored_rows(root, storage, layout) -> tuple[int, int]:
    files = storage.list_files(layout.raw_dir(root, "bench", "interactions"), suffixes=(".parquet",))
    return sum(pq.ParquetFile(f.uri).metadata.num_rows for f in files), len(files)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- driver ------------------------------------------------------------------------------------


def machine() -> dict:
    load = os.getloadavg()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "load_average_at_start": [round(x, 2) for x in load]}


def markdown(results: list[dict], info: dict, args: argparse.Namespace) -> str:
    lines = [f"Measured {info['date']} on {info['cpus']} CPUs ({info['machine']}, {info['memory_gb']} GB), "
             f"load average at start {info['load_average_at_start']}; wrk -t{args.threads} "
             f"-c{args.connections} -d{args.duration}s.", "",
             "| set-up | no-op req/s | no-op p50 / p99 ms | ingest req/s | share of no-op | ingest p50 / p99 ms "
             "| non-2xx | rows stored / expected | objects written |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['setup']} | failed: {r['error']} | | | | | | | |")
            continue
        n, i = r["noop"], r["ingest"]
        lines.append(f"| {r['setup']} | {n['requests_per_s']:.0f} | {n['p50_ms']:.1f} / {n['p99_ms']:.1f} "
                     f"| {i['requests_per_s']:.0f} | {i['share_of_noop']:.0%} | {i['p50_ms']:.1f} / {i['p99_ms']:.1f} "
                     f"| {i['non_2xx']} | {i['rows_stored']} / {i['rows_expected']} | {i['objects_written']} |")
    echoes = [r for r in results if "echo" in r]
    if echoes:
        lines += ["", "| set-up | body echo req/s | echo p50 / p99 ms | echo non-2xx | echo share of no-op "
                      "| ingest share of echo |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in echoes:
            e = r["echo"]
            lines.append(f"| {r['setup']} | {e['requests_per_s']:.0f} | {e['p50_ms']:.1f} / {e['p99_ms']:.1f} "
                         f"| {e['non_2xx']} | {e['share_of_noop']:.0%} | {r['ingest']['share_of_echo']:.0%} |")
    uploads = [r for r in results if "upload_csv" in r]
    if uploads:
        lines += ["", "| set-up | upload | size MB | seconds | rows/s |", "| --- | --- | ---: | ---: | ---: |"]
        for r in uploads:
            for kind in ("csv", "parquet"):
                u = r[f"upload_{kind}"]
                lines.append(f"| {r['setup']} | {u['accepted']:,} rows {kind} | {u['bytes'] / 1e6:.1f} "
                             f"| {u['seconds']:.2f} | {u['rows_per_s']:,} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {list(SETUPS)}")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the whole-file uploads")
    parser.add_argument("--upload", default="proxy,direct", help="set-ups that also run the whole-file uploads")
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--echo", action="store_true",
                        help="also measure a bare endpoint that only reads the same request bodies")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--run-setup", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_setup:
        print(json.dumps(run_setup(args.run_setup, args)))
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)", file=sys.stderr)
        return 2
    info = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as work:
        write_inputs(Path(work), args.rows)
        write_request_bodies(Path(work))
        for name in args.setups.split(","):
            env = {**os.environ, **SETUPS[name][0], "RAY_USAGE_STATS_ENABLED": "0"}
            print(f"# {name}: {SETUPS[name][2]}", file=sys.stderr, flush=True)
            child = subprocess.run([sys.executable, __file__, "--run-setup", name, "--work", work,
                                    "--duration", str(args.duration), "--connections", str(args.connections),
                                    "--threads", str(args.threads), "--upload", args.upload]
                                   + (["--echo"] if args.echo else []),
                                   env=env, capture_output=True, text=True)
            if child.returncode != 0:
                results.append({"setup": name, "error": child.stderr.strip().splitlines()[-1][:200]})
            else:
                results.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report = {"machine": info, "args": vars(args), "setups": {k: v[2] for k, v in SETUPS.items()}, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(markdown(results, info, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
