"""Service metrics, exported through Ray's metrics endpoint on every node.

Ray prefixes the names with `ray_` (e.g. `ray_recsys_ingest_requests_total`)
and adds the Serve `application`, `deployment` and `replica` tags, so one
scrape of each node's metrics port (`ray start --metrics-export-port`) sees
every replica; sum over `replica` for service totals.

Recording a Ray metric costs tens of microseconds, so counters are summed in
memory and handed to Ray once a second (`flush`); only the latency histogram
is recorded per request.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from ray.serve import metrics

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
FLUSH_INTERVAL_S = 1.0


class IngestMetrics:
    """Counters and histograms of one replica; tags never include keys or row data."""

    def __init__(self) -> None:
        self._counters = {
            "requests": metrics.Counter(
                "recsys_ingest_requests", description="HTTP requests by endpoint, method, status and tenant",
                tag_keys=("endpoint", "method", "status", "tenant")),
            "rows": metrics.Counter(
                "recsys_ingest_rows", description="Rows received, by outcome (accepted, rejected, duplicate)",
                tag_keys=("tenant", "dataset", "outcome")),
            "rejected": metrics.Counter(
                "recsys_ingest_rejected_rows", description="Rejected rows by reason",
                tag_keys=("tenant", "dataset", "reason")),
            "bytes": metrics.Counter(
                "recsys_ingest_bytes", description="Request body bytes received for ingestion",
                tag_keys=("tenant", "dataset")),
            "events_failed": metrics.Counter(
                "recsys_ingest_events_failed", description="Upload events that could not be published to Kafka",
                tag_keys=("tenant",)),
        }
        self.latency = metrics.Histogram(
            "recsys_ingest_request_seconds", description="Request latency in seconds",
            boundaries=LATENCY_BOUNDARIES_S, tag_keys=("endpoint", "method"))
        self.batch_uploads = metrics.Histogram(
            "recsys_ingest_batch_uploads", description="Uploads landed together in one write batch",
            boundaries=BATCH_BOUNDARIES, tag_keys=("dataset",))
        self._pending: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._flusher: asyncio.Task | None = None

    def _add(self, counter: str, value: float, **tags: str) -> None:
        if value:
            self._pending[(counter, tuple(tags.items()))] += value
        if self._flusher is None:
            self._start_flusher()

    def _start_flusher(self) -> None:
        try:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        except RuntimeError:  # no event loop here (e.g. a worker thread): the next call on the loop starts it
            pass

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, Counter()
        for (counter, tags), value in pending.items():
            self._counters[counter].inc(value, tags=dict(tags))

    def request(self, endpoint: str, method: str, status: int, tenant: str, seconds: float) -> None:
        self._add("requests", 1, endpoint=endpoint, method=method, status=str(status), tenant=tenant)
        self.latency.observe(seconds, tags={"endpoint": endpoint, "method": method})

    def landed(self, tenant: str, dataset: str, reports: list[dict[str, Any]]) -> None:
        for outcome, field in (("accepted", "accepted"), ("rejected", "rejected"), ("duplicate", "duplicates")):
            self._add("rows", sum(r[field] for r in reports), tenant=tenant, dataset=dataset, outcome=outcome)
        for report in reports:
            for reason, count in report["rejected_by_reason"].items():
                self._add("rejected", count, tenant=tenant, dataset=dataset, reason=reason)
        self.batch_uploads.observe(len(reports), tags={"dataset": dataset})

    def received(self, tenant: str, dataset: str, size: int) -> None:
        self._add("bytes", size, tenant=tenant, dataset=dataset)

    def events_failed(self, tenant: str, count: int) -> None:
        self._add("events_failed", count, tenant=tenant)
