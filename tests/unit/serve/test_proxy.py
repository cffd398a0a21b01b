"""The edge middlewares over a real ASGI stack (Starlette apps served through httpx's ASGI transport)."""

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from recsys_ray.serve.proxy import HeaderLimit, ProxyAnswersAsJson, middlewares


async def _overloaded(request):
    return PlainTextResponse("Request dropped due to backpressure (num_queued_requests=2, max=1).",
                             status_code=503, headers={"Retry-After": "3"})


async def _json_error(request):
    return JSONResponse({"error": {"code": "mine"}}, status_code=429)


async def _hello(request):
    return PlainTextResponse("hello")


async def _no_answer(scope, receive, send):
    if scope["path"] != "/raises":
        return  # what Serve's proxy does when the replica died mid-request
    raise RuntimeError("replica died")


APP = Starlette(routes=[Route("/overloaded", _overloaded), Route("/json", _json_error), Route("/hello", _hello)])


def _get(app, path, **headers) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            return await client.get(path, headers=headers)
    return asyncio.run(go())


def test_plain_text_errors_of_the_proxy_become_json_with_their_headers():
    response = _get(ProxyAnswersAsJson(APP, retry_after_s=1), "/overloaded")
    assert (response.status_code, response.headers["retry-after"]) == (503, "3")
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == {"code": "unavailable", "details": {},
                                        "message": "Request dropped due to backpressure (num_queued_requests=2, max=1)."}
    missing = _get(ProxyAnswersAsJson(APP, retry_after_s=1), "/nowhere")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_application_answers_pass_through():
    assert _get(ProxyAnswersAsJson(APP, retry_after_s=1), "/json").json() == {"error": {"code": "mine"}}
    assert _get(ProxyAnswersAsJson(APP, retry_after_s=1), "/hello").text == "hello"


@pytest.mark.parametrize("path", ["/silent", "/raises"])
def test_a_request_left_without_answer_gets_503_json_with_retry_after(path):
    response = _get(ProxyAnswersAsJson(_no_answer, retry_after_s=2), path)
    assert (response.status_code, response.headers["retry-after"]) == (503, "2")
    error = response.json()["error"]
    assert error["code"] == "replica_failed" and "Idempotency-Key" in error["message"]


def test_oversized_headers_are_431_before_the_app_sees_them():
    app = HeaderLimit(APP, max_bytes=4096)
    assert _get(app, "/hello", **{"X-Small": "a" * 1000}).status_code == 200
    response = _get(app, "/hello", **{f"X-Big-{i}": "a" * 1000 for i in range(5)})
    assert response.status_code == 431
    assert response.json()["error"]["details"] == {"limit_bytes": 4096}


def test_the_proxy_callback_builds_both_middlewares(monkeypatch):
    monkeypatch.setenv("RECSYS_API_MAX_HEADER_BYTES", "2048")
    monkeypatch.setenv("RECSYS_SERVE_RETRY_AFTER_S", "7")
    built = middlewares()
    assert [(m.cls, m.kwargs) for m in built] == [(HeaderLimit, {"max_bytes": 2048}),
                                                  (ProxyAnswersAsJson, {"retry_after_s": 7})]
