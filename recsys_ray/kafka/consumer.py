"""The consumer loop: a Kafka consumer group member that lands micro-batches, then commits.

`KafkaIngestLoop` is plain asyncio around aiokafka (no Ray), so the Ray actor,
the Serve deployment and the benchmark all run the same loop:

1. Fetch records of the assigned partitions and buffer them per partition.
2. A partition's buffer is due at `max_batch_records` records or when its oldest
   record has waited `max_batch_seconds`.
3. Due batches are landed (`landing.land_partition_batch`: validate, record the
   offset range in the ledger, write one object per tenant) in worker threads,
   so heartbeats and fetching go on meanwhile.
4. Only then are their offsets (`last + 1`) committed.

Rebalances: when partitions are revoked the listener waits for a landing in
flight, commits everything landed, and drops what was only buffered (the next
owner reads it again from the committed offset). On assignment it reads the
committed offset and the ledger; a range recorded there but not committed is
re-created exactly before anything else, so its objects are replaced rather
than duplicated. A graceful `stop()` lands and commits everything buffered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from recsys_ray.config import RecsysConfig
from recsys_ray.io import storage
from recsys_ray.kafka import ledger
from recsys_ray.kafka.landing import LandedPartition, land_partition_batch
from recsys_ray.kafka.messages import PartitionBatch, topic_routes

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.2
LANDING_ATTEMPTS = 4


@dataclass
class PartitionState:
    """What the loop knows about one assigned partition."""

    records: list[ConsumerRecord] = field(default_factory=list)  # fetched, not yet landed
    oldest: float | None = None  # monotonic arrival time of the oldest buffered record
    ready: bool = False  # committed offset and ledger loaded
    committed: int | None = None  # next offset to land, per the group's committed offset
    landed_uncommitted: int | None = None  # offset to commit for a landed batch
    replay: ledger.BatchRange | None = None  # a range landed before a crash, not committed

    def add(self, records: list[ConsumerRecord], now: float) -> None:
        if self.committed is not None and records[0].offset < self.committed:
            records = [r for r in records if r.offset >= self.committed]
        if self.records and records and records[0].offset <= self.records[-1].offset:
            records = [r for r in records if r.offset > self.records[-1].offset]
        if not records:
            return
        if not self.records:
            self.oldest = now
        self.records.extend(records)


@dataclass
class ConsumerStats:
    """Counters since the loop started, for metrics and reports."""

    messages: int = 0
    landed: int = 0
    rejected: int = 0
    duplicates: int = 0
    batches: int = 0
    objects: int = 0
    bytes_written: int = 0
    commits: int = 0
    commit_failures: int = 0
    landing_retries: int = 0
    replays: int = 0  # batches re-created from the ledger after a crash or lost commit
    rejected_by_reason: Counter = field(default_factory=Counter)
    landed_by_tenant: Counter = field(default_factory=Counter)
    last_commit_at: float | None = None

    def record(self, landed: LandedPartition) -> None:
        self.messages += landed.messages
        self.landed += sum(landed.landed.values())
        self.rejected += sum(landed.rejected.values())
        self.duplicates += landed.duplicates
        self.batches += 1
        self.objects += len(landed.objects)
        self.bytes_written += landed.bytes_written
        self.rejected_by_reason.update(landed.rejected)
        for tenant, rows in landed.landed.items():
            self.landed_by_tenant[f"{tenant}/{landed.dataset}"] += rows


class LoopFailed(RuntimeError):
    """The consumer loop stopped on an error it cannot recover from."""


class KafkaIngestLoop:
    """One member of the consumer group, landing what it consumes (see module docstring)."""

    def __init__(self, cfg: RecsysConfig, *, member: str | None = None) -> None:
        kafka = cfg.kafka
        if not kafka.bootstrap_servers:
            raise ValueError("no Kafka bootstrap servers (set kafka.bootstrap_servers / --bootstrap-servers)")
        self.cfg = cfg
        self.routes = topic_routes(kafka)
        self.options = storage.StorageOptions.from_config(cfg.storage)
        self.member = member or f"{socket.gethostname()}-{os.getpid()}"
        self.stats = ConsumerStats()
        self._partitions: dict[TopicPartition, PartitionState] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._started = time.monotonic()
        self._last_contact = time.monotonic()
        self._error: BaseException | None = None
        self._listener_error: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        """Run the loop as a task of the running event loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"kafka-{self.member}")
        return self._task

    async def stop(self) -> None:
        """Stop fetching, land and commit everything buffered, leave the group."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def run(self) -> None:
        """Consume until `stop()`; raises `LoopFailed` when it cannot go on."""
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kafka-land")
        monitor: asyncio.Task | None = None
        try:
            consumer = await self._connect()
            if consumer is None:
                return  # stopped before the broker could be reached
            monitor = asyncio.create_task(self._monitor(consumer))
            kafka = self.cfg.kafka
            timeout_ms = int(min(POLL_TIMEOUT_S, kafka.max_batch_seconds) * 1000)
            while not self._stopping.is_set():
                fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=kafka.max_batch_records)
                if self._listener_error is not None:
                    raise self._listener_error
                self._buffer(fetched)
                await self._land_and_commit(self._due())
            await self._drain()
        except Exception as exc:
            self._error = exc
            log.exception("Kafka consumer loop %s failed", self.member)
            raise LoopFailed(f"Kafka consumer loop failed: {exc!r}") from exc
        finally:
            if monitor is not None:
                monitor.cancel()
            if self._consumer is not None:
                try:
                    await self._consumer.stop()
                except Exception:  # the broker may be gone; leaving the group is best effort
                    log.warning("closing the Kafka consumer failed", exc_info=True)
            self._pool.shutdown(wait=True)

    def _make_consumer(self) -> AIOKafkaConsumer:
        kafka = self.cfg.kafka
        ssl_context = None
        if kafka.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            ssl_context = create_ssl_context(cafile=kafka.ssl_cafile)
        sasl: dict[str, Any] = {}
        if kafka.sasl_mechanism:
            sasl = {
                "sasl_mechanism": kafka.sasl_mechanism,
                "sasl_plain_username": kafka.sasl_username,
                "sasl_plain_password": kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            }
        return AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            client_id=f"recsys-ray-{self.member}",
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            isolation_level="read_committed",
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
            fetch_max_bytes=max(52_428_800, kafka.max_partition_fetch_bytes),
            security_protocol=kafka.security_protocol,
            ssl_context=ssl_context,
            **sasl,
        )

    async def _connect(self) -> AIOKafkaConsumer | None:
        """A started, subscribed consumer; retries while the broker is unreachable, up to
        `max_unreachable_seconds`. None if stopped meanwhile."""
        deadline = time.monotonic() + self.cfg.kafka.max_unreachable_seconds
        delay = 0.5
        while not self._stopping.is_set():
            consumer = self._make_consumer()
            consumer.subscribe(list(self.routes), listener=_Rebalance(self))
            self._consumer = consumer  # the assignment callback may run before start() returns
            try:
                await consumer.start()
            except KafkaError as exc:
                self._consumer = None
                await consumer.stop()
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("Kafka unreachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._last_contact = time.monotonic()
            return consumer
        return None

    # ---- batching --------------------------------------------------------------------

    def _buffer(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        now = time.monotonic()
        assigned = self._consumer.assignment()
        for tp, records in fetched.items():
            if not records or tp not in assigned:
                continue
            # Records may come before the assignment callback has run; keep them.
            self._partitions.setdefault(tp, PartitionState()).add(records, now)

    def _due(self) -> list[TopicPartition]:
        kafka = self.cfg.kafka
        now = time.monotonic()
        due = []
        for tp, state in self._partitions.items():
            if not state.ready or not state.records:
                continue
            waited = now - (state.oldest or now)
            if state.replay is not None:
                reached = state.records[-1].offset >= state.replay.last
                if reached or (waited >= kafka.max_batch_seconds and self._log_ends_before(tp, state.replay)):
                    due.append(tp)
            elif len(state.records) >= kafka.max_batch_records or waited >= kafka.max_batch_seconds:
                due.append(tp)
        return due

    def _log_ends_before(self, tp: TopicPartition, batch_range: ledger.BatchRange) -> bool:
        highwater = self._highwater(tp)
        return highwater is not None and highwater <= batch_range.last

    def _highwater(self, tp: TopicPartition) -> int | None:
        consumer = self._consumer
        if consumer is None or tp not in consumer.assignment():
            return None
        return consumer.highwater(tp)

    def _take(self, tp: TopicPartition, state: PartitionState) -> PartitionBatch | None:
        """Remove the next batch from the partition's buffer."""
        if state.replay is not None:
            batch_range, state.replay = state.replay, None
            count = sum(1 for r in state.records if r.offset <= batch_range.last)
            records = state.records[:count]
            if not records:
                return None  # the log no longer holds that range
            self.stats.replays += 1
            first = batch_range.first if records[0].offset >= batch_range.first else records[0].offset
            last = batch_range.last
        else:
            records = state.records[: self.cfg.kafka.max_batch_records]
            first, last = records[0].offset, records[-1].offset
        state.records = state.records[len(records):]
        state.oldest = time.monotonic() if state.records else None
        return PartitionBatch(tp.topic, tp.partition, [r.offset for r in records],
                              [r.value for r in records], first, last)

    # ---- landing and committing --------------------------------------------------------

    async def _land_and_commit(self, due: list[TopicPartition]) -> None:
        if not due:
            return
        async with self._lock:
            batches = []
            for tp in due:
                state = self._partitions.get(tp)
                if state is not None and state.ready and state.records:
                    batch = self._take(tp, state)
                    if batch is not None:
                        batches.append((tp, batch))
            if batches:
                started = time.monotonic()
                landed = await asyncio.gather(*(self._land(batch) for _, batch in batches))
                elapsed = time.monotonic() - started
                if elapsed * 1000 > self.cfg.kafka.max_poll_interval_ms / 2:
                    log.warning("landing took %.1fs, over half of max_poll_interval_ms; "
                                "lower kafka.max_batch_records", elapsed)
                for (tp, _), result in zip(batches, landed):
                    self.stats.record(result)
                    state = self._partitions.get(tp)
                    if state is not None:
                        state.landed_uncommitted = result.next_offset
            await self._commit()

    async def _land(self, batch: PartitionBatch) -> LandedPartition:
        """Land one batch in a worker thread, retrying storage errors (the write is idempotent)."""
        loop = asyncio.get_running_loop()
        route = self.routes[batch.topic]
        for attempt in range(1, LANDING_ATTEMPTS + 1):
            try:
                return await loop.run_in_executor(
                    self._pool, land_partition_batch, batch, route, self.cfg, self.cfg.kafka.group_id,
                    self.options)
            except OSError as exc:
                if attempt == LANDING_ATTEMPTS:
                    raise
                self.stats.landing_retries += 1
                log.warning("landing %s-%d [%d, %d] failed (%s); retrying", batch.topic,
                            batch.partition, batch.first, batch.last, exc)
                await asyncio.sleep(min(0.5 * 2 ** attempt, 10))
        raise AssertionError("unreachable")

    async def _commit(self) -> None:
        """Commit every landed batch's next offset; the caller holds the lock."""
        offsets = {tp: s.landed_uncommitted for tp, s in self._partitions.items()
                   if s.landed_uncommitted is not None}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced: the partitions go to their next owner, which
            # finds the landed ranges in the ledger and re-creates them exactly.
            self.stats.commit_failures += 1
            log.warning("commit failed after a rebalance (%s); the next owner replays the ledger", exc)
            for state in self._partitions.values():
                state.records, state.oldest, state.landed_uncommitted = [], None, None
                state.ready = False
            return
        self.stats.commits += 1
        self.stats.last_commit_at = time.time()
        self._last_contact = time.monotonic()
        for tp, offset in offsets.items():
            state = self._partitions[tp]
            state.committed, state.landed_uncommitted = offset, None

    async def _drain(self) -> None:
        """Graceful stop: land and commit everything buffered, batch by batch."""
        while True:
            ready = [tp for tp, s in self._partitions.items()
                     if s.ready and s.records and (s.replay is None or s.records[-1].offset >= s.replay.last)]
            if not ready:
                break
            await self._land_and_commit(ready)
        async with self._lock:
            await self._commit()

    # ---- rebalancing -----------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # waits for a landing in flight
            try:
                await self._commit()
            except KafkaError:
                log.warning("committing landed batches on revoke failed", exc_info=True)
            for tp in revoked:
                self._partitions.pop(tp, None)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        loop = asyncio.get_running_loop()
        for tp in assigned:
            self._partitions.setdefault(tp, PartitionState())
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            uri = ledger.ledger_uri(self.cfg.storage.root, self.cfg.kafka.group_id, tp.topic, tp.partition)
            recorded = await loop.run_in_executor(self._pool, ledger.read_range, uri, self.options)
            state = self._partitions.setdefault(tp, PartitionState())
            state.committed = committed
            if recorded is not None and (committed is None or recorded.last >= committed):
                log.info("%s-%d: re-creating batch [%d, %d] landed before its commit", tp.topic,
                         tp.partition, recorded.first, recorded.last)
                state.replay = recorded
            if committed is not None and state.records and state.records[0].offset < committed:
                state.records = [r for r in state.records if r.offset >= committed]
            state.ready = True

    # ---- monitoring --------------------------------------------------------------------

    async def _monitor(self, consumer: AIOKafkaConsumer) -> None:
        """Probe the broker regularly so that an unreachable broker shows in `health()`."""
        period = max(0.5, min(5.0, self.cfg.kafka.max_unreachable_seconds / 4))
        while True:
            await asyncio.sleep(period)
            try:
                await asyncio.wait_for(consumer.topics(), timeout=period * 2)
                self._last_contact = time.monotonic()
            except (KafkaError, asyncio.TimeoutError, OSError):
                log.warning("Kafka broker unreachable for %.0fs", time.monotonic() - self._last_contact)

    def partitions(self) -> list[dict[str, Any]]:
        """Per assigned partition: committed offset, buffered records, high watermark and lag."""
        out = []
        for tp, state in sorted(self._partitions.items()):
            highwater = self._highwater(tp)
            base = state.committed
            if base is None and state.records:
                base = state.records[0].offset
            lag = max(0, highwater - base) if highwater is not None and base is not None else None
            out.append({"topic": tp.topic, "partition": tp.partition, "committed": state.committed,
                        "buffered": len(state.records), "highwater": highwater, "lag": lag})
        return out

    def raise_if_unhealthy(self) -> None:
        """Raise if the loop died or the broker has been unreachable too long (for Ray health checks)."""
        status = self.health()
        if not status["healthy"]:
            raise RuntimeError(status["reason"])

    def health(self) -> dict[str, Any]:
        """`healthy` is False once the loop has died or the broker stayed unreachable too long."""
        now = time.monotonic()
        unreachable = now - self._last_contact
        reason = None
        if self._task is not None and self._task.done():
            stopped = self._stopping.is_set() and self._error is None
            reason = "stopped" if stopped else f"consumer loop died: {self._error!r}"
        elif unreachable > self.cfg.kafka.max_unreachable_seconds:
            reason = f"Kafka unreachable for {unreachable:.0f}s"
        return {
            "healthy": reason is None,
            "reason": reason,
            "member": self.member,
            "unreachable_s": round(unreachable, 1),
            "uptime_s": round(now - self._started, 1),
        }

    def snapshot(self) -> dict[str, Any]:
        """Health, counters and partitions as plain data."""
        stats = self.stats
        return {
            **self.health(),
            "pid": os.getpid(),
            "messages": stats.messages,
            "landed": stats.landed,
            "rejected": stats.rejected,
            "duplicates": stats.duplicates,
            "batches": stats.batches,
            "objects": stats.objects,
            "bytes_written": stats.bytes_written,
            "commits": stats.commits,
            "commit_failures": stats.commit_failures,
            "landing_retries": stats.landing_retries,
            "replays": stats.replays,
            "rejected_by_reason": dict(stats.rejected_by_reason),
            "landed_by_tenant": dict(stats.landed_by_tenant),
            "last_commit_at": stats.last_commit_at,
            "partitions": self.partitions(),
        }


class _Rebalance(ConsumerRebalanceListener):
    """Routes aiokafka's callbacks to the loop; aiokafka only logs a callback's error, so
    the error is handed to the loop, which stops on it instead of stalling."""

    def __init__(self, loop: KafkaIngestLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked):
        await self._forward(self._loop._on_revoked, revoked)

    async def on_partitions_assigned(self, assigned):
        await self._forward(self._loop._on_assigned, assigned)

    async def _forward(self, handler, partitions) -> None:
        try:
            await handler(set(partitions))
        except Exception as exc:
            self._loop._listener_error = exc
            raise
