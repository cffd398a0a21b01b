"""Benchmark of the byte-level JSON scan that guards every JSON decode (a script, not a test).

Prints, for NDJSON bodies of 100 and 1M event rows: the time of `formats.scan_json`
(the nesting bound and row count) and of the whole `formats.decode` it runs inside
(best of several runs), and the scan's share of the decode. Also the time until a
60 MB body of `{}` lines is refused with `too_many_rows` at the default row limit.

    python benchmarks/json_scan.py
    python benchmarks/json_scan.py --rows 100,10000,1000000 --out results.json
"""

from __future__ import annotations

import argparse
import json
import time

from recsys_ray.config import ApiConfig
from recsys_ray.io import formats


def ndjson(rows: int) -> bytes:
    return "".join(json.dumps({"event_id": f"e{i}", "user_id": f"user-{i % 5000}", "item_id": f"item-{i % 997}",
                               "interaction_type": "click", "timestamp": "2024-05-01T10:00:00Z", "rating": 4.5}) + "\n"
                   for i in range(rows)).encode()


def best_seconds(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100,1000000", help="comma-separated row counts")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    figures = []
    for rows in (int(r) for r in args.rows.split(",")):
        body = ndjson(rows)
        repeats = 200 if rows <= 10_000 else 3
        scan = best_seconds(lambda: formats.scan_json(body, record_depth=0), repeats)
        decode = best_seconds(lambda: formats.decode(body, "ndjson", "interactions"), max(3, repeats // 10))
        figures.append({"rows": rows, "bytes": len(body), "scan_ms": scan * 1e3, "decode_ms": decode * 1e3,
                        "scan_share": scan / decode, "scan_mb_per_s": len(body) / scan / 1e6})
        print(f"{rows:>9} rows {len(body) / 1e6:8.2f} MB  scan {scan * 1e3:9.3f} ms  decode {decode * 1e3:9.3f} ms"
              f"  scan {100 * scan / decode:4.1f}% of decode  ({len(body) / scan / 1e6:.0f} MB/s)")
    limit = ApiConfig().max_rows_per_request
    empty_objects = b"{}\n" * (20 << 20)
    started = time.perf_counter()
    try:
        formats.decode(empty_objects, "ndjson", "interactions", max_rows=limit)
    except formats.InputError as exc:
        assert exc.code == "too_many_rows"
    refused = time.perf_counter() - started
    figures.append({"case": "60 MB of {} lines", "refused_ms": refused * 1e3})
    print(f"60 MB of {{}} lines refused as too_many_rows (limit {limit}) after {refused * 1e3:.2f} ms")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
