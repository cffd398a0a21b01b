import json

from recsys_ray.io.formats import InputError
from recsys_ray.serve.errors import MAX_DETAIL_CHARS, MAX_MESSAGE_CHARS, error_body, from_input_error


def test_error_bodies_quote_input_only_up_to_a_bound():
    row = "x," * 500_000
    body = error_body("invalid_csv", f"cannot parse CSV: Expected 4 columns, got 500001: {row}",
                      {"name": row, "rows": [row] * 1000, "nested": {"value": row}, "limit": 5})
    error = body["error"]
    assert len(error["message"]) == MAX_MESSAGE_CHARS and error["message"].endswith("...")
    assert error["message"].startswith("cannot parse CSV: Expected 4 columns")
    assert len(error["details"]["name"]) == MAX_DETAIL_CHARS
    assert len(error["details"]["rows"]) == 20 and error["details"]["nested"]["value"].endswith("...")
    assert error["details"]["limit"] == 5
    assert len(json.dumps(body)) < 10_000


def test_short_errors_are_unchanged():
    api = from_input_error(InputError("invalid_json", "line 3 is not valid JSON", {"line": 3}))
    assert (api.status, api.body()) == (400, {"error": {"code": "invalid_json", "message": "line 3 is not valid JSON",
                                                        "details": {"line": 3}}})
