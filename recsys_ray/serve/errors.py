"""Error responses: every failure is `{"error": {"code", "message", "details"}}` with a fitting status."""

from __future__ import annotations

from typing import Any

from recsys_ray.io.formats import InputError

# Whole-input problems that are the client's, by status; any other InputError code is a 400.
INPUT_ERROR_STATUS: dict[str, int] = {
    "missing_columns": 422,
    "unsupported_format": 415,
    "body_too_large": 413,
    "too_many_rows": 413,
}


class ApiError(Exception):
    """A request that cannot be served, with the HTTP status and error body to answer with."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


# Error bodies may quote the input (a CSV row in a parse error, a name); they quote it bounded.
MAX_MESSAGE_CHARS = 500
MAX_DETAIL_CHARS = 200
MAX_DETAIL_ITEMS = 20


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON error body; long text in `message` and `details` is cut short (marked with ...)."""
    return {"error": {"code": code, "message": _shortened(message, MAX_MESSAGE_CHARS),
                      "details": _bounded(details or {})}}


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return _shortened(value, MAX_DETAIL_CHARS)
    if isinstance(value, dict):
        return {key: _bounded(item) for key, item in list(value.items())[:MAX_DETAIL_ITEMS]}
    if isinstance(value, (list, tuple)):
        return [_bounded(item) for item in value[:MAX_DETAIL_ITEMS]]
    return value


def from_input_error(exc: InputError) -> ApiError:
    return ApiError(INPUT_ERROR_STATUS.get(exc.code, 400), exc.code, exc.message, exc.details)


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "a valid API key is required: 'Authorization: Bearer <key>' "
                    "or 'X-API-Key: <key>'", headers={"WWW-Authenticate": "Bearer"})


def unknown_dataset(dataset: str) -> ApiError:
    return ApiError(404, "unknown_dataset", "unknown dataset; expected 'interactions' or 'items'",
                    {"dataset": dataset[:64]})
