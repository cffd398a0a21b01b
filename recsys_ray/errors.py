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


def version_read_error(exc: BaseException, version_uri: str, expected: type[BaseException]) -> str | None:
    """What to tell a user when a command reading the version at `version_uri` failed with `exc`.

    The command's own error (`expected`) is its message; a missing or unreadable file, raised
    here or in a Ray task (wrapped), says the version is incomplete or unreadable. Anything
    else is a defect: None, so the caller re-raises it.
    """
    if isinstance(exc, expected):
        return str(exc)
    cause = root_cause(exc)
    if isinstance(cause, (OSError, expected)):
        return f"the version at {version_uri} is incomplete or unreadable: {cause}"
    return None
