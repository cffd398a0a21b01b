"""The byte-level JSON outline (`formats.scan_json`) against a character-by-character reading."""

import random
import subprocess
import sys

import pytest

from recsys_ray.io import formats
from recsys_ray.io.formats import InputError


def reference_outline(data: bytes, record_depth: int) -> tuple[int, int | None, int]:
    """(deepest nesting, line where it is first reached, records) read one character at a time:
    strings end at a line break, a closing bracket at depth 0 is ignored."""
    depth = deepest = records = 0
    deepest_line, line, in_string, i = None, 1, False, 0
    while i < len(data):
        char = data[i:i + 1]
        if char == b"\\" and data[i + 1:i + 2] in (b"\\", b'"'):
            i += 2
            continue
        if char == b"\n":
            in_string, line = False, line + 1
        elif char == b'"':
            in_string = not in_string
        elif not in_string and char in (b"[", b"{"):
            depth += 1
            records += char == b"{" and depth == record_depth + 1
            if depth > deepest:
                deepest, deepest_line = depth, line
        elif not in_string and char in (b"]", b"}"):
            depth = max(0, depth - 1)
        i += 1
    return deepest, deepest_line, records


def scanned_depth(data: bytes, block_bytes: int) -> tuple[int, int | None]:
    """The smallest max_depth `scan_json` accepts `data` with, and the line it names just below it."""
    for limit in range(0, 64):
        try:
            formats.scan_json(data, record_depth=0, max_depth=limit, block_bytes=block_bytes)
        except InputError as exc:
            line = exc.details["line"]
            continue
        return limit, (line if limit else None)
    raise AssertionError("deeper than the test expects")


@pytest.mark.parametrize("seed", range(300))
def test_scan_agrees_with_a_character_by_character_reading(seed):
    rng = random.Random(seed)
    alphabet = [b"[", b"]", b"{", b"}", b'"', b"\\", b"\n", b"a", b" ", b":", b","]
    weights = [6, 5, 6, 5, 6, 3, 2, 6, 2, 1, 1]
    data = b"".join(rng.choices(alphabet, weights, k=rng.randint(0, 300)))
    block_bytes = rng.choice([1, 2, 3, 7, 64, 1 << 18])
    deepest, line, _ = reference_outline(data, 0)
    assert scanned_depth(data, block_bytes) == (deepest, line)
    for record_depth in (0, 1):
        expected = reference_outline(data, record_depth)[2]
        assert formats.scan_json(data, record_depth=record_depth, max_depth=1000, block_bytes=block_bytes) == expected


def test_brackets_in_strings_and_escapes_do_not_count():
    title = '[[[[{{{{\\"]]]] \\\\' * 20
    line = ('{"item_id": "i", "title": "%s"}\n' % title).encode()
    assert formats.scan_json(line * 50, record_depth=0, block_bytes=5) == 50
    # A string cut off by its line break ends there: the next line's brackets count.
    with pytest.raises(InputError) as err:
        formats.scan_json(b'{"a": "open\n' + b"[" * 40, record_depth=0)
    assert err.value.details == {"line": 2, "max_depth": formats.MAX_JSON_DEPTH}


def test_stray_closing_brackets_do_not_hide_deep_nesting():
    with pytest.raises(InputError) as err:
        formats.scan_json(b"]" * 1000 + b"\n" + b"[" * 40 + b"\n", record_depth=0)
    assert (err.value.code, err.value.details["line"]) == ("invalid_json", 2)


def test_counting_stops_at_the_record_limit():
    # The garbage after the limit is never read: the answer is the row limit, not a parse error.
    body = b"{}\n" * 11 + b"\xff garbage"
    with pytest.raises(InputError) as err:
        formats.scan_json(body, record_depth=0, max_records=10, block_bytes=3)
    assert err.value.code == "too_many_rows" and err.value.details == {"limit": 10}
    assert formats.scan_json(b'[{"a": {}}, {}, {"b": [{}]}]', record_depth=1) == 3


def test_deep_json_that_crashed_arrows_reader_is_an_input_error():
    # Arrow's JSON reader segfaulted on this body, so it is decoded in a child process.
    program = (
        "from recsys_ray.io import formats\n"
        "body = b'{\"a\":' + b'[' * 20000 + b']' * 20000 + b'}\\n{}'\n"
        "for fmt in ('ndjson', 'json'):\n"
        "    try:\n"
        "        formats.decode(body, fmt, 'interactions')\n"
        "    except formats.InputError as exc:\n"
        "        print(fmt, exc.code, exc.details['line'])\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["ndjson invalid_json 1", "json invalid_json 1"]


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_very_deep_arrays_are_invalid_json_not_a_recursion_error(fmt):
    with pytest.raises(InputError) as err:
        formats.decode(b"[" * 100_000, fmt, "interactions")
    assert err.value.code == "invalid_json"
    assert err.value.details == {"line": 1, "max_depth": formats.MAX_JSON_DEPTH}


def test_check_json_depth_passes_flat_records_and_refuses_deep_ones():
    formats.check_json_depth(b'{"user_id": "u", "tags": [[1], {"a": 2}]}')
    with pytest.raises(InputError):
        formats.check_json_depth(b'{"v": ' + b"[" * 33 + b"]" * 33 + b"}")
