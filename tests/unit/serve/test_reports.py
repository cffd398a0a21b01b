from datetime import datetime, timezone

from recsys_ray.io import layout
from recsys_ray.serve.reports import IdempotencyClaim, batch_of, new_batch_id, upload_id_for


def test_upload_ids_name_their_batch_and_position():
    batch_id = new_batch_id(datetime(2024, 5, 1, 12, 30, 5, tzinfo=timezone.utc))
    assert batch_id.startswith("20240501T123005Z-")
    upload_id = upload_id_for(batch_id, 7)
    assert batch_of(upload_id) == (batch_id, 7)
    assert layout.check_name(upload_id) == upload_id
    assert new_batch_id() != new_batch_id()


def test_other_names_are_not_upload_ids():
    for name in ["", "..", "key-abc", "20240501T123005Z-0123456789abcdef", "x.1",
                 "20240501T123005Z-0123456789abcdef.1/../x"]:
        assert batch_of(name) is None


def test_idempotency_claims_are_per_tenant_and_per_request():
    claim = IdempotencyClaim.for_request("acme", "key-1", "POST /v1/items", "d1")
    assert claim == IdempotencyClaim.for_request("acme", "key-1", "POST /v1/items", "d1")
    assert claim.record != IdempotencyClaim.for_request("globex", "key-1", "POST /v1/items", "d1").record
    assert claim.fingerprint != IdempotencyClaim.for_request("acme", "key-1", "POST /v1/items", "d2").fingerprint
    assert claim.fingerprint != IdempotencyClaim.for_request("acme", "key-1", "POST /v1/interactions", "d1").fingerprint
    assert "key-1" not in claim.record
    assert layout.check_name(claim.record) == claim.record
    assert batch_of(claim.record) is None
