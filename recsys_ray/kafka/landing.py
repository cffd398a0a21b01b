"""Landing one partition's micro-batch: validate, record its range, write its objects.

The consumer calls `land_partition_batch` and commits the partition's offset
(`last + 1`) only after it returns. Objects are named from topic, partition and
offset range (`kafka-{topic}-{partition}-{first}-{last}.parquet`), one per tenant
present in the batch, under `{root}/tenants/{tenant}/raw/{dataset}/` and, for
rejected rows and dead letters, `.../quarantine/{dataset}/`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from recsys_ray import ingest, validation
from recsys_ray.config import RecsysConfig
from recsys_ray.io import storage
from recsys_ray.kafka import ledger
from recsys_ray.kafka.messages import PartitionBatch, TopicRoute, prepare_partition_batch


@dataclass(frozen=True)
class LandedPartition:
    """What one partition's batch put where; `next_offset` is the offset to commit."""

    topic: str
    partition: int
    first: int
    last: int
    messages: int
    dataset: str
    landed: dict[str, int] = field(default_factory=dict)  # rows per tenant
    rejected: dict[str, int] = field(default_factory=dict)  # rows per reason
    duplicates: int = 0
    objects: tuple[str, ...] = ()
    bytes_written: int = 0

    @property
    def next_offset(self) -> int:
        return self.last + 1


def land_partition_batch(
    batch: PartitionBatch,
    route: TopicRoute,
    cfg: RecsysConfig,
    group_id: str,
    options: storage.StorageOptions | None = None,
) -> LandedPartition:
    """Validate `batch`, record its offset range in the ledger, then write its objects.

    Idempotent: landing the same batch again replaces the same objects.
    """
    prepared = prepare_partition_batch(batch, route, cfg.validation)
    root = cfg.storage.root
    ledger.write_range(ledger.ledger_uri(root, group_id, batch.topic, batch.partition),
                       ledger.BatchRange(batch.first, batch.last), options)
    landed: dict[str, int] = {}
    rejected: Counter[str] = Counter()
    objects: list[str] = []
    written = duplicates = 0
    for tenant, tenant_batch in sorted(prepared.items()):
        result = ingest.land_batch(tenant_batch, root=root, tenant=tenant,
                                   object_name=batch.object_name, options=options)
        objects.extend(result.objects)
        written += result.bytes_written
        duplicates += tenant_batch.duplicates
        if tenant_batch.valid.num_rows:
            landed[tenant] = tenant_batch.valid.num_rows
        rejected.update(validation.reason_counts(tenant_batch.rejected))
    return LandedPartition(
        topic=batch.topic,
        partition=batch.partition,
        first=batch.first,
        last=batch.last,
        messages=len(batch.offsets),
        dataset=route.dataset,
        landed=landed,
        rejected=dict(rejected),
        duplicates=duplicates,
        objects=tuple(objects),
        bytes_written=written,
    )
