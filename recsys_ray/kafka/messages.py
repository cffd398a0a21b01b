"""From one partition's micro-batch of Kafka messages to landed rows and dead letters.

A micro-batch holds messages of one topic partition in offset order; each
message is one JSON event. `prepare_partition_batch` decodes the payloads,
resolves every message's tenant and validates the rows with
`recsys_ray.ingest.prepare_batch`, exactly as HTTP and the batch build do: an
interaction without an `event_id` gets the same content-derived id on every
channel (`validation.fill_event_ids`), so a producer's retry of an event,
landed at another offset, is the same event. It
returns one `PreparedBatch` per tenant whose rejected rows include the dead
letters: payloads that are not JSON objects and messages that name no valid
tenant. Every rejected row carries its Kafka coordinates
(`source = "kafka:{topic}:{partition}:{offset}"`, `row = offset`), the reason,
and the raw payload in `original`, so nothing is lost and no bad message blocks
its partition.

Pure Arrow and NumPy: no Kafka client and no Ray here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from recsys_ray import schemas
from recsys_ray.config import KafkaConfig, ValidationConfig
from recsys_ray.ingest import PreparedBatch, prepare_batch
from recsys_ray.io import formats, layout

# Reasons a message becomes a dead letter before row validation; the row-level
# reasons are schemas.REJECT_REASONS.
MESSAGE_REJECT_REASONS: dict[str, str] = {
    "invalid_utf8": "payload is not valid UTF-8",
    "invalid_json": "payload is not valid JSON",
    "expected_object": "payload is not a JSON object",
    "invalid_tenant": "tenant_id is not a valid tenant name",
    "unknown_tenant": "tenant_id is not one of the allowed tenants",
    "tenant_mismatch": "tenant_id differs from the tenant the topic belongs to",
}
TENANT_FIELD = "tenant_id"
_TENANT_REASONS = frozenset({"invalid_tenant", "unknown_tenant", "tenant_mismatch"})
_JSON_BLOCK_SIZE = 4 << 20
_MAX_NAME = 200


@dataclass(frozen=True)
class TopicRoute:
    """Where the messages of one topic go.

    `tenant` is set when the topic belongs to one tenant (topic -> tenant mapping):
    then a message's `tenant_id`, if any, must agree. Otherwise a message's
    `tenant_id` names its tenant and `default_tenant` takes the rest.
    """

    topic: str
    dataset: str
    tenant: str | None
    default_tenant: str | None
    allowed_tenants: frozenset[str] = frozenset()

    @property
    def dead_letter_tenant(self) -> str:
        """The tenant whose quarantine receives messages that name no valid tenant."""
        tenant = self.tenant or self.default_tenant
        assert tenant is not None
        return tenant


def dataset_for_topic(topic: str, topic_datasets: dict[str, str]) -> str:
    """The dataset a topic carries: from the config, else the topic name's last word."""
    if topic in topic_datasets:
        return layout.check_dataset(topic_datasets[topic])
    last_word = re.split(r"[._-]", topic)[-1].lower()
    if last_word in schemas.DATASETS:
        return last_word
    raise ValueError(
        f"cannot tell which dataset topic {topic!r} carries: end its name with "
        f"'.interactions' or '.items', or set kafka.topic_datasets"
    )


def topic_routes(cfg: KafkaConfig) -> dict[str, TopicRoute]:
    """Resolve every subscribed topic's dataset and tenants; raise ValueError early."""
    if not cfg.topics:
        raise ValueError("no Kafka topics to consume (set kafka.topics / --topics)")
    default = layout.check_name(cfg.default_tenant, "tenant") if cfg.default_tenant else None
    allowed = frozenset(layout.check_name(t, "tenant") for t in cfg.allowed_tenants)
    routes: dict[str, TopicRoute] = {}
    for topic in cfg.topics:
        tenant = cfg.topic_tenants.get(topic)
        if tenant is not None:
            layout.check_name(tenant, "tenant")
        if tenant is None and default is None:
            raise ValueError(
                f"topic {topic!r} has no tenant: map it in kafka.topic_tenants or set a default "
                "tenant (--tenant), which also receives dead letters that name no tenant"
            )
        for name in (tenant, default):
            if allowed and name is not None and name not in allowed:
                raise ValueError(f"tenant {name!r} of topic {topic!r} is not in kafka.allowed_tenants")
        routes[topic] = TopicRoute(topic, dataset_for_topic(topic, cfg.topic_datasets), tenant, default, allowed)
    return routes


@dataclass(frozen=True)
class PartitionBatch:
    """Messages of one topic partition in offset order.

    `first`/`last` is the offset range that names the landed objects: normally the
    first and last offset held, but a batch re-created after a crash keeps the
    range recorded before the crash so that its objects replace the earlier ones.
    """

    topic: str
    partition: int
    offsets: Sequence[int]
    values: Sequence[bytes | None]
    first: int
    last: int

    @property
    def object_name(self) -> str:
        return object_name(self.topic, self.partition, self.first, self.last)


def object_name(topic: str, partition: int, first: int, last: int) -> str:
    """Deterministic object name of a partition's offsets [first, last]."""
    name = f"kafka-{topic}-{partition}-{first:019d}-{last:019d}"
    if len(name) > _MAX_NAME or ".." in name:
        name = f"kafka-{_topic_digest(topic)}-{partition}-{first:019d}-{last:019d}"
    return name


def coordinates(topic: str, partition: int, offset: int) -> str:
    """`kafka:{topic}:{partition}:{offset}`: where a message was read, its dead letter's `source`."""
    return f"kafka:{topic}:{partition}:{offset}"


def _topic_digest(topic: str) -> str:
    return "t" + hashlib.sha256(topic.encode()).hexdigest()[:16]


def payload_text(value: bytes | None) -> str:
    """The raw payload as text for the dead letters; bytes that are not UTF-8 as `base64:...`."""
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode("ascii")


@dataclass(frozen=True)
class DecodedMessages:
    """The JSON objects of a batch as a table, and the messages that are not JSON objects."""

    table: pa.Table
    index: np.ndarray  # position in the batch of each table row's message
    tenant_ids: pa.Array  # `tenant_id` of each row as text; null when absent or not a string
    tenant_not_text: np.ndarray  # rows whose `tenant_id` is present but not a JSON string
    failed: list[tuple[int, str, str]]  # (position, reason, message)


def decode_payloads(values: Sequence[bytes | None], dataset: str) -> DecodedMessages:
    """Decode each message as one JSON object.

    The whole batch goes through Arrow's JSON reader at once; when that fails
    (a bad message, values of mixed types) every message is decoded on its own
    so that each bad one is named and the good ones still land.
    """
    positions = np.arange(len(values), dtype=np.int64)
    if None not in values:
        table = _read_json_messages(values, dataset)
        if table is not None:
            return _decoded(table, positions, [], dataset)
    return _decode_each(values, positions, dataset)


def _decode_each(values: Sequence[bytes | None], positions: np.ndarray, dataset: str) -> DecodedMessages:
    """Decode the messages at `positions` one by one, naming each bad one."""
    records: list[dict] = []
    index: list[int] = []
    failed: list[tuple[int, str, str]] = []
    for position in positions.tolist():
        value = values[position]
        if not value or value.isspace():
            failed.append((position, "invalid_json", "message has no payload"))
            continue
        try:
            formats.check_json_depth(value)
        except formats.InputError as exc:
            failed.append((position, "invalid_json", f"payload is not valid JSON: {exc.message}"))
            continue
        try:
            record = json.loads(value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            failed.append((position, "invalid_utf8", f"payload is not valid UTF-8 (byte {exc.start})"))
            continue
        except (ValueError, RecursionError) as exc:
            detail = f": {exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            failed.append((position, "invalid_json", f"payload is not valid JSON{detail}"))
            continue
        if not isinstance(record, dict):
            failed.append((position, "expected_object", f"payload is a JSON {type(record).__name__}, not an object"))
            continue
        if _SURROGATE_ESCAPE.search(value) and formats.has_lone_surrogate(record):
            failed.append((position, "invalid_utf8", formats.LONE_SURROGATE))
            continue
        records.append(record)
        index.append(position)
    table = formats.records_to_table(records, dataset)
    raw_tenants = [r.get(TENANT_FIELD) for r in records]
    tenant_ids = pa.array([t if isinstance(t, str) else None for t in raw_tenants], pa.string())
    not_text = np.array([t is not None and not isinstance(t, str) for t in raw_tenants], dtype=bool)
    return DecodedMessages(table, np.asarray(index, dtype=np.int64), tenant_ids, not_text, failed)


_WRAP_HEAD, _WRAP_SEP, _WRAP_TAIL = b'{"v":', b'}\n{"v":', b"}"
# A JSON escape of a UTF-16 surrogate (\ud800-\udfff): only such a message can hold a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _read_json_messages(values: Sequence[bytes], dataset: str) -> pa.Table | None:
    """All messages parsed by Arrow in one go, or None when any message needs a closer look.

    Each message is wrapped as `{"v": <message>}` on a line of its own, so a
    message that is empty, holds several JSON values or is not a JSON object
    fails the whole read instead of shifting rows against their messages.
    """
    if not values:
        return pa.table({})
    body = _WRAP_SEP.join(values)
    if body.count(b"\n") != len(values) - 1 or b"\r" in body:
        # Line breaks inside valid JSON are whitespace; each message must stay on one line.
        body = _WRAP_SEP.join(v.replace(b"\n", b" ").replace(b"\r", b" ") for v in values)
    data = _WRAP_HEAD + body + _WRAP_TAIL
    try:
        formats.check_json_depth(data)  # Arrow's reader crashes the process on deep nesting
    except formats.InputError:
        return None
    try:
        table = _read_json(data, None)
        # Arrow reads text that looks like a date as a timestamp; ids and names stay text.
        misread = [field.name for field in _fields(table)
                   if field.name in (*schemas.text_fields(dataset), TENANT_FIELD) and pa.types.is_timestamp(field.type)]
        if misread:
            table = _read_json(data, pa.schema([("v", pa.struct([(name, pa.string()) for name in misread]))]))
        table.validate(full=True)  # Arrow's JSON reader does not check UTF-8 by itself
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    wrapped = table.column("v") if table.num_columns == 1 else None
    if wrapped is None or not pa.types.is_struct(wrapped.type) or wrapped.null_count or len(wrapped) != len(values):
        return None  # a message that is not an object (all alike, or JSON null)
    wrapped = wrapped.combine_chunks()
    if wrapped.type.num_fields == 0:
        return pa.table({"_": pa.nulls(len(values))}).drop_columns(["_"])
    return pa.Table.from_arrays(wrapped.flatten(), names=[f.name for f in wrapped.type])


def _fields(table: pa.Table) -> list[pa.Field]:
    if table.num_columns != 1 or not pa.types.is_struct(table.schema.field(0).type):
        return []
    return list(table.schema.field(0).type)


def _read_json(data: bytes, explicit: pa.Schema | None) -> pa.Table:
    return pajson.read_json(
        pa.BufferReader(data),
        read_options=pajson.ReadOptions(block_size=_JSON_BLOCK_SIZE),
        parse_options=pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer"),
    )


def _is_text_or_null(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)


def _decoded(table: pa.Table, index: np.ndarray, failed: list, dataset: str) -> DecodedMessages:
    n = table.num_rows
    if TENANT_FIELD in table.column_names:
        raw = table.column(TENANT_FIELD).combine_chunks()
    else:
        raw = pa.nulls(n, pa.string())
    if _is_text_or_null(raw.type):
        tenant_ids = raw.cast(pa.string())
        not_text = np.zeros(n, dtype=bool)
    else:
        tenant_ids = pa.nulls(n, pa.string())
        not_text = pc.is_valid(raw).to_numpy(zero_copy_only=False)
    contract = table.select([f for f in schemas.schema_for(dataset).names if f in table.column_names])
    return DecodedMessages(contract, index, tenant_ids, not_text, failed)


def prepare_partition_batch(
    batch: PartitionBatch, route: TopicRoute, cfg: ValidationConfig
) -> dict[str, PreparedBatch]:
    """Decode, route and validate one partition's batch: one PreparedBatch per tenant."""
    dataset = route.dataset
    decoded = decode_payloads(batch.values, dataset)
    table = decoded.table
    n = table.num_rows

    tenants, reasons = _resolve_tenants(decoded, route)

    refused = [(int(decoded.index[row]), reasons[row], MESSAGE_REJECT_REASONS[reasons[row]])
               for row in np.flatnonzero(reasons != None)]  # noqa: E711 (object array)
    letters = decoded.failed + refused

    out: dict[str, PreparedBatch] = {}
    accepted = reasons == None  # noqa: E711
    tenant_values = tenants.to_numpy(zero_copy_only=False) if n else np.array([], dtype=object)
    for tenant in sorted(set(tenant_values[accepted].tolist())):
        rows = np.flatnonzero(accepted & (tenant_values == tenant))
        subset = table.take(pa.array(rows)) if len(rows) < n else table
        prepared = prepare_batch(subset, dataset, cfg)
        rejected = prepared.rejected
        if rejected.num_rows:
            # validation numbers rejected rows within `subset`; point them at their messages
            positions = decoded.index[rows][rejected.column("row").to_numpy()]
            rejected = _quarantine_rows(batch, dataset, positions, rejected.column("reason").to_pylist(),
                                        rejected.column("field").to_pylist(),
                                        rejected.column("message").to_pylist())
        out[tenant] = PreparedBatch(dataset, prepared.valid, rejected, prepared.duplicates)

    if letters:
        positions, why, messages = zip(*letters)
        dead = _quarantine_rows(batch, dataset, np.asarray(positions), list(why),
                                [TENANT_FIELD if r in _TENANT_REASONS else None for r in why], list(messages))
        tenant = route.dead_letter_tenant
        prior = out.get(tenant)
        if prior is None:
            out[tenant] = PreparedBatch(dataset, schemas.schema_for(dataset).empty_table(), dead, 0)
        else:
            merged = pa.concat_tables([prior.rejected, dead]).sort_by("row")
            out[tenant] = PreparedBatch(dataset, prior.valid, merged, prior.duplicates)
    return out


def _resolve_tenants(decoded: DecodedMessages, route: TopicRoute) -> tuple[pa.Array, np.ndarray]:
    """Each row's tenant, and the reason (or None) it cannot be landed there."""
    named = pc.utf8_trim_whitespace(decoded.tenant_ids)
    named = pc.if_else(pc.equal(pc.utf8_length(named), 0), pa.scalar(None, pa.string()), named)
    n = len(named)
    reasons = np.full(n, None, dtype=object)
    reasons[decoded.tenant_not_text] = "invalid_tenant"
    if route.tenant is not None:
        differs = pc.fill_null(pc.not_equal(named, route.tenant), False).to_numpy(zero_copy_only=False)
        reasons[differs & (reasons == None)] = "tenant_mismatch"  # noqa: E711
        return pa.array([route.tenant] * n, pa.string()), reasons
    tenants = pc.fill_null(named, route.default_tenant)
    for tenant in pc.unique(tenants).to_pylist():
        reason = _tenant_problem(tenant, route.allowed_tenants)
        if reason:
            mask = pc.equal(tenants, tenant).to_numpy(zero_copy_only=False)
            reasons[mask & (reasons == None)] = reason  # noqa: E711
    return tenants, reasons


def _tenant_problem(tenant: str, allowed: frozenset[str]) -> str | None:
    try:
        layout.check_name(tenant, "tenant")
    except ValueError:
        return "invalid_tenant"
    if allowed and tenant not in allowed:
        return "unknown_tenant"
    return None


def _quarantine_rows(batch: PartitionBatch, dataset: str, positions: np.ndarray, reasons: list[str],
                     fields: list[str | None], messages: list[str]) -> pa.Table:
    """Quarantine rows for the messages at `positions` of `batch`, in offset order:
    their coordinates, why they were refused, and their raw payloads."""
    order = np.argsort(positions, kind="stable")
    at = [int(positions[i]) for i in order]
    offsets = [int(batch.offsets[p]) for p in at]
    return pa.table(
        {
            "dataset": pa.array([dataset] * len(at), pa.string()),
            "source": pa.array([coordinates(batch.topic, batch.partition, o) for o in offsets], pa.string()),
            "row": pa.array(offsets, pa.int64()),
            "reason": pa.array([reasons[i] for i in order], pa.string()),
            "field": pa.array([fields[i] for i in order], pa.string()),
            "message": pa.array([messages[i] for i in order], pa.string()),
            "original": pa.array([payload_text(batch.values[p]) for p in at], pa.string()),
        },
        schema=schemas.QUARANTINE,
    )
