"""How a command that reads a version words its failures."""

from __future__ import annotations

import pytest

from recsys_ray.errors import version_read_error


class CommandError(Exception):
    pass


class Wrapper(Exception):
    """Stands for Ray's task error: the real error is its `cause`."""

    def __init__(self, cause: BaseException):
        super().__init__("task failed")
        self.cause = cause


def test_the_commands_own_error_is_its_message():
    assert version_read_error(CommandError("no eval set"), "s3://b/v1", CommandError) == "no eval set"


@pytest.mark.parametrize("cause", [FileNotFoundError("eval/part-0.parquet"), CommandError("bad shard")])
def test_a_wrapped_missing_file_or_command_error_says_the_version_is_unreadable(cause):
    message = version_read_error(Wrapper(cause), "s3://b/v1", CommandError)
    assert message == f"the version at s3://b/v1 is incomplete or unreadable: {cause}"


def test_anything_else_is_left_to_the_caller_to_raise():
    assert version_read_error(Wrapper(ValueError("a defect")), "s3://b/v1", CommandError) is None
    assert version_read_error(KeyError("x"), "s3://b/v1", CommandError) is None
