"""The ingestion service: a FastAPI ingress on Ray Serve, built from `RecsysConfig`.

`build_app` is the typed application builder that `serve run` / `serve deploy`
call with the `args` of `deploy/serve_config.yaml`; `ingest_application(cfg)`
builds the same application from a config in hand (`recsys-ray serve`, tests).

A 2xx answer means the accepted rows are in storage. Requests of the record
endpoints are validated and written together in write batches
(`recsys_ray.serve.batcher`), so many small requests become few objects while
each one still waits for its own rows to be written. Whole-file uploads are
spooled to disk while their bytes are counted and land as their own batch.
"""

# No `from __future__ import annotations` here: Serve reads `build_app`'s
# argument annotation as a class to validate the builder's args.

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys_ray import __version__, ingest, schemas
from recsys_ray.config import RecsysConfig, ServeAppArgs
from recsys_ray.io import formats, layout, storage
from recsys_ray.io.formats import InputError
from recsys_ray.serve import auth, bodies, landing
from recsys_ray.serve.batcher import WriteBatcher
from recsys_ray.serve.errors import ApiError, error_body, from_input_error, unauthorized, unknown_dataset
from recsys_ray.serve.events import UploadEventPublisher
from recsys_ray.serve.metrics import IngestMetrics
from recsys_ray.serve.proxy import HeaderLimit
from recsys_ray.serve.reports import IdempotencyClaim, new_batch_id, upload_id_for

log = logging.getLogger("recsys_ray.serve")

# Bodies up to this size are decoded on the event loop; larger ones in a worker thread.
INLINE_DECODE_BYTES = 256 << 10
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Write batches landing at once per replica. More only split the same requests into more,
# smaller batches on a busy replica (validation is CPU-bound); two keep one batch's storage
# writes overlapping the next batch's validation.
MAX_CONCURRENT_BATCHES = 2
HEALTHY = b'{"status":"ok"}'


def body_read_slots(max_ongoing_requests: int) -> int:
    """How many requests of a replica may be receiving their bodies at once: all but an
    eighth of its request slots (at least one), which stay free for health checks,
    reads and requests past their bodies, however many senders are slow."""
    return max(1, max_ongoing_requests - max(1, max_ongoing_requests // 8))


class RequestMetricsMiddleware:
    """Counts every request by endpoint template, method, status and tenant, and times it."""

    def __init__(self, asgi_app, metrics: IngestMetrics) -> None:
        self.app = asgi_app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            tenant = scope.get("state", {}).get("tenant", "")
            self.metrics.request(endpoint, scope["method"], status, tenant, time.perf_counter() - started)


def create_api(service: "IngestService", metrics: IngestMetrics, max_header_bytes: int) -> FastAPI:
    """The HTTP API of one replica: thin routes onto `service`, JSON error bodies throughout."""
    api = FastAPI(title="recsys_ray ingestion", version=__version__,
                  docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @api.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return await api_error(request, from_input_error(exc))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"loc": [str(part) for part in e.get("loc", ())], "msg": e.get("msg", "")}
                    for e in exc.errors()[:10]]
        return JSONResponse(error_body("invalid_request", "the request's parameters are invalid",
                                       {"problems": problems}), status_code=400)

    @api.exception_handler(OSError)
    async def storage_error(request: Request, exc: OSError) -> JSONResponse:
        log.error("storage failed during %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body("storage_unavailable", "storage could not be written or read; "
                                       "nothing was acknowledged, retry later"),
                            status_code=503, headers={"Retry-After": "5"})

    @api.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("internal_error", "the request failed unexpectedly; "
                                       "nothing was acknowledged"), status_code=500)

    @api.get("/healthz")
    async def healthz() -> Response:
        return Response(HEALTHY, media_type="application/json")

    @api.get("/readyz")
    async def readyz() -> Response:
        return await service.readyz()

    @api.post("/v1/interactions")
    async def post_interactions(request: Request) -> Response:
        return await service.post_records("interactions", request)

    @api.post("/v1/items")
    async def post_items(request: Request) -> Response:
        return await service.post_records("items", request)

    @api.post("/v1/uploads/{dataset}")
    async def post_upload(dataset: str, request: Request, format: Optional[str] = None) -> Response:
        return await service.post_upload(dataset, request, format)

    @api.post("/v1/validate/{dataset}")
    async def post_validate(dataset: str, request: Request, format: Optional[str] = None) -> Response:
        return await service.post_validate(dataset, request, format)

    @api.get("/v1/uploads/{upload_id}")
    async def get_upload(upload_id: str, request: Request) -> Response:
        return await service.get_upload(upload_id, request)

    @api.get("/v1/schema/{dataset}")
    async def get_schema(dataset: str, request: Request) -> Response:
        return await service.get_schema(dataset, request)

    api.add_middleware(HeaderLimit, max_bytes=max_header_bytes)
    api.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return api


@dataclass(frozen=True)
class Submission:
    """One record-endpoint request waiting to be validated and landed with others."""

    table: pa.Table
    claim: Optional[IdempotencyClaim]


@serve.deployment(name="IngestService")
@serve.ingress()
class IngestService:
    """One replica of the ingestion service.

    Takes the config with API keys removed and the keys' SHA-256 digests
    separately, so no key travels to or is stored by Serve in the clear.
    """

    def __init__(self, cfg: RecsysConfig, key_digests: dict[str, str]) -> None:
        self._cfg = cfg
        digests = dict(key_digests)
        if cfg.api.keys_file:
            auth.add_keys_file(digests, cfg.api.keys_file)
        self._keys = auth.KeyRing(digests)
        if not len(self._keys):
            log.warning("no API keys are configured (RECSYS_API_KEYS or api.keys_file): "
                        "every request but health checks will be refused")
        self._root = cfg.storage.root
        self._options = storage.StorageOptions.from_config(cfg.storage)
        self._spool = bodies.SpoolDirectory(cfg.serve.spool_dir or bodies.DEFAULT_SPOOL_DIR)
        if self._spool.removed:
            log.warning("removed %d spool directories left by replicas that stopped: %s",
                        len(self._spool.removed), ", ".join(self._spool.removed))
        self._timeouts = bodies.BodyTimeouts.from_config(cfg.api)
        self._readers = bodies.BodyReaders(cfg.api.max_body_reads_per_tenant,
                                           body_read_slots(cfg.serve.max_ongoing_requests), cfg.serve.retry_after_s)
        self._publisher = UploadEventPublisher(cfg.kafka, cfg.serve.publish_timeout_s, cfg.storage.root)
        self._metrics = IngestMetrics()
        self._in_flight: dict[str, asyncio.Future] = {}
        self._batcher = WriteBatcher(self._land_group, max_size=cfg.serve.batch_max_requests,
                                     wait_s=cfg.serve.batch_wait_s, max_concurrent=MAX_CONCURRENT_BATCHES)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self, self._metrics, self._cfg.api.max_header_bytes)

    # ---- health ---------------------------------------------------------------------------

    async def readyz(self) -> Response:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._check_storage), timeout=10)
        except Exception as exc:
            raise ApiError(503, "storage_unreachable", f"storage is not reachable: {type(exc).__name__}: {exc}",
                           headers={"Retry-After": "5"}) from exc
        return Response(b'{"status":"ready"}', media_type="application/json")

    def _check_storage(self) -> None:
        fs, path = storage.resolve(self._root, self._options)
        if storage.is_s3(self._root):
            bucket = path.split("/", 1)[0]
            if fs.get_file_info(bucket).type.name == "NotFound":
                raise FileNotFoundError(f"bucket {bucket!r} does not exist")
        else:
            os.makedirs(path, exist_ok=True)
            if not os.access(path, os.W_OK):
                raise PermissionError(f"{path} is not writable")

    async def check_health(self) -> None:
        """Serve's replica health check: the replica can still spool uploads."""
        if not os.access(self._spool.path, os.W_OK):
            raise RuntimeError(f"spool directory {self._spool.path} is missing or not writable")

    # ---- ingestion ------------------------------------------------------------------------

    async def post_records(self, dataset: str, request: Request) -> Response:
        tenant = self._tenant(request)
        fmt = _record_format(request)
        limit = self._cfg.api.max_request_bytes
        bodies.check_declared_length(request.headers.get("content-length"), limit)
        key = _idempotency_key(request)
        body = await self._read_body(request, tenant, limit)
        self._metrics.received(tenant, dataset, len(body))
        claim = self._claim(request, tenant, key, hashlib.sha256(body).hexdigest() if key else None)
        return await self._at_most_once(tenant, claim, lambda: self._land_records(tenant, dataset, fmt, body, claim))

    async def post_upload(self, dataset: str, request: Request, format: Optional[str] = None) -> Response:
        tenant = self._tenant(request)
        _check_dataset(dataset)
        fmt = _file_format(request, format)
        limit = self._cfg.api.max_upload_bytes
        bodies.check_declared_length(request.headers.get("content-length"), limit)
        key = _idempotency_key(request)
        body = await self._spool_body(request, tenant, limit, digest=key is not None)
        try:
            self._metrics.received(tenant, dataset, body.size)
            claim = self._claim(request, tenant, key, body.sha256)
            return await self._at_most_once(
                tenant, claim, lambda: self._land_file(tenant, dataset, fmt, body.path, claim))
        finally:
            body.remove()

    async def post_validate(self, dataset: str, request: Request, format: Optional[str] = None) -> Response:
        tenant = self._tenant(request)
        _check_dataset(dataset)
        fmt = _file_format(request, format, default="json")
        limit = self._cfg.api.max_upload_bytes
        bodies.check_declared_length(request.headers.get("content-length"), limit)
        body = await self._spool_body(request, tenant, limit)
        try:
            prepared = await asyncio.to_thread(
                ingest.prepare_file, body.path, fmt, dataset, self._cfg.validation,
                chunk_rows=self._cfg.serve.upload_chunk_rows, work_dir=None)
        finally:
            body.remove()
        return JSONResponse(landing.file_report(prepared, None, []))

    # ---- reading --------------------------------------------------------------------------

    async def get_upload(self, upload_id: str, request: Request) -> Response:
        tenant = self._tenant(request)
        try:
            layout.check_name(upload_id, "upload id")
        except ValueError as exc:
            raise ApiError(400, "invalid_name", str(exc)) from exc
        report = await asyncio.to_thread(landing.read_report, self._root, tenant, upload_id, self._options)
        if report is None:
            raise ApiError(404, "upload_not_found", "no upload with this id", {"upload_id": upload_id})
        return JSONResponse(report)

    async def get_schema(self, dataset: str, request: Request) -> Response:
        self._tenant(request)
        _check_dataset(dataset)
        return JSONResponse(schemas.json_schema(dataset, max_id_length=self._cfg.validation.max_id_length))

    # ---- internals ------------------------------------------------------------------------

    async def _read_body(self, request: Request, tenant: str, limit: int) -> bytes:
        """The decoded body within `limit` bytes and the body timeouts, read in one of the tenant's slots."""
        encoding = bodies.check_content_encoding(request.headers.get("content-encoding"))
        with self._readers.reading(tenant):
            return await bodies.read_body(self._chunks(request, encoding), limit)

    async def _spool_body(self, request: Request, tenant: str, limit: int, *,
                          digest: bool = False) -> bodies.SpooledBody:
        """As `_read_body`, into a file of the replica's spool directory."""
        encoding = bodies.check_content_encoding(request.headers.get("content-encoding"))
        with self._readers.reading(tenant):
            return await bodies.spool_body(self._chunks(request, encoding), limit, self._spool.path, digest=digest)

    def _chunks(self, request: Request, encoding: str):
        return bodies.decoded(bodies.timed(request.stream(), self._timeouts), encoding)

    def _tenant(self, request: Request) -> str:
        key = auth.key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
        tenant = self._keys.tenant_for(key)
        if tenant is None:
            raise unauthorized()
        request.state.tenant = tenant
        return tenant

    def _claim(self, request: Request, tenant: str, key: Optional[str],
               body_sha256: Optional[str]) -> Optional[IdempotencyClaim]:
        if key is None:
            return None
        return IdempotencyClaim.for_request(tenant, key, f"{request.method} {request.url.path}", body_sha256 or "")

    async def _land_records(self, tenant: str, dataset: str, fmt: str, body: bytes,
                            claim: Optional[IdempotencyClaim]) -> dict[str, Any]:
        limit = self._cfg.api.max_rows_per_request
        try:
            if len(body) <= INLINE_DECODE_BYTES:
                table = formats.decode(body, fmt, dataset, max_rows=limit)
            else:
                table = await asyncio.to_thread(formats.decode, body, fmt, dataset, max_rows=limit)
        except InputError as exc:
            if exc.code != "too_many_rows":
                raise
            raise ApiError(413, "too_many_rows", f"the request holds more than {limit} rows, the limit per "
                           "request; send fewer rows per request or use POST /v1/uploads/{dataset}",
                           {"limit": limit}) from exc
        return await self._batcher.submit((tenant, dataset), Submission(table, claim))

    async def _land_group(self, key: tuple[str, str], group: list[Submission]) -> list[Any]:
        """Validate and land one write batch of a tenant and dataset; a report (or the failure) per request."""
        tenant, dataset = key
        try:
            reports = await asyncio.to_thread(self._prepare_and_land, tenant, dataset, group)
        except Exception as exc:  # each request of the batch gets the failure, nothing else does
            log.exception("landing %d upload(s) for tenant %s failed", len(group), tenant)
            return [exc] * len(group)
        await self._after_landing(tenant, dataset, reports)
        return reports

    def _prepare_and_land(self, tenant: str, dataset: str, group: list[Submission]) -> list[dict[str, Any]]:
        prepared = ingest.prepare_many([s.table for s in group], dataset, self._cfg.validation)
        return landing.land_uploads(prepared, root=self._root, tenant=tenant, dataset=dataset,
                                    options=self._options, claims=[s.claim for s in group])

    async def _land_file(self, tenant: str, dataset: str, fmt: str, path: str,
                         claim: Optional[IdempotencyClaim]) -> dict[str, Any]:
        batch_id = new_batch_id()

        def prepare_and_land() -> dict[str, Any]:
            prepared = ingest.prepare_file(
                path, fmt, dataset, self._cfg.validation, chunk_rows=self._cfg.serve.upload_chunk_rows,
                work_dir=self._spool.path, source=upload_id_for(batch_id, 0))
            try:
                return landing.land_file(prepared, root=self._root, tenant=tenant, batch_id=batch_id,
                                         options=self._options, claim=claim)
            finally:
                prepared.remove()

        report = await asyncio.to_thread(prepare_and_land)
        await self._after_landing(tenant, dataset, [report])
        return report

    async def _after_landing(self, tenant: str, dataset: str, reports: list[dict[str, Any]]) -> None:
        self._metrics.landed(tenant, dataset, reports)
        failed = await self._publisher.publish(tenant, reports)
        self._metrics.events_failed(tenant, failed)

    async def _at_most_once(self, tenant: str, claim: Optional[IdempotencyClaim],
                            work: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
        """Run `work` once per idempotency claim; a repeated claim gets the first response back.

        Requests with the same key on this replica wait for the first one;
        afterwards the stored record answers, from any replica.
        """
        if claim is None:
            return JSONResponse(await work())
        while (running := self._in_flight.get(claim.record)) is not None:
            outcome = await asyncio.shield(running)
            if outcome is not None:
                return _replay(claim, outcome)
        future = asyncio.get_running_loop().create_future()
        self._in_flight[claim.record] = future
        outcome = None
        try:
            outcome = await asyncio.to_thread(
                landing.read_idempotency_record, self._root, tenant, claim, self._options)
            if outcome is not None:
                return _replay(claim, outcome)
            report = await work()
            outcome = {"fingerprint": claim.fingerprint, "response": report}
            return JSONResponse(report)
        finally:
            del self._in_flight[claim.record]
            future.set_result(outcome)

    async def __del__(self) -> None:
        self._metrics.flush()
        await self._publisher.close()
        self._spool.close()


def _replay(claim: IdempotencyClaim, outcome: dict[str, Any]) -> Response:
    if outcome.get("fingerprint") != claim.fingerprint:
        raise ApiError(422, "idempotency_key_reused",
                       "this Idempotency-Key was already used for a different request")
    return JSONResponse(outcome["response"], headers={"Idempotent-Replayed": "true"})


def _idempotency_key(request: Request) -> Optional[str]:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise ApiError(400, "invalid_idempotency_key",
                       f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable characters")
    return key


def _check_dataset(dataset: str) -> None:
    if dataset not in schemas.DATASETS:
        raise unknown_dataset(dataset)


def _record_format(request: Request) -> str:
    content_type = request.headers.get("content-type")
    if not content_type:
        return "json"
    fmt = formats.format_from_content_type(content_type)
    if fmt not in ("json", "ndjson"):
        raise ApiError(415, "unsupported_media_type",
                       "send records as application/json (an array) or application/x-ndjson; "
                       "whole files go to POST /v1/uploads/{dataset}", {"content_type": content_type[:100]})
    return fmt


def _file_format(request: Request, explicit: Optional[str], default: Optional[str] = None) -> str:
    if explicit is not None:
        if explicit not in formats.FORMATS:
            raise ApiError(415, "unsupported_format", f"format must be one of {list(formats.FORMATS)}",
                           {"format": explicit[:64]})
        return explicit
    content_type = request.headers.get("content-type")
    fmt = formats.format_from_content_type(content_type)
    if fmt is None:
        if not content_type and default:
            return default
        raise ApiError(415, "unsupported_media_type",
                       "set Content-Type to text/csv, application/json, application/x-ndjson or "
                       "application/vnd.apache.parquet (or pass ?format=)",
                       {"content_type": (content_type or "")[:100]})
    return fmt


# ---- application builders --------------------------------------------------------------------


def build_app(args: ServeAppArgs) -> Application:
    """Typed Serve application builder: `import_path: recsys_ray.serve.app:build_app`."""
    return ingest_application(args.to_config())


def ingest_application(cfg: RecsysConfig) -> Application:
    """The ingestion application for `cfg`, with its Serve options taken from `cfg.serve`."""
    digests = auth.parse_key_pairs(cfg.api.keys.get_secret_value()) if cfg.api.keys is not None else {}
    keyless = cfg.model_copy(update={"api": cfg.api.model_copy(update={"keys": None})})
    s = cfg.serve
    return IngestService.options(
        num_replicas=s.num_replicas,
        max_ongoing_requests=s.max_ongoing_requests,
        max_queued_requests=s.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=s.overload_status, retry_after_s=s.retry_after_s),
        ray_actor_options={"num_cpus": s.replica_cpus},
        health_check_period_s=s.health_check_period_s,
        health_check_timeout_s=s.health_check_timeout_s,
        logging_config={"enable_access_log": s.access_log},
    ).bind(keyless, digests)
