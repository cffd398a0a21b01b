"""Errors as users should see them."""

from __future__ import annotations


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of an error raised in a Ray task (Ray wraps it, Ray Data may wrap it again)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(nxt, BaseException):
            break
        exc = nxt
    return exc
