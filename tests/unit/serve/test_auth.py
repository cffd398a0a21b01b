import pytest
from pydantic import SecretStr

from recsys_ray.config import ApiConfig
from recsys_ray.serve import auth


def test_key_pairs_map_digests_to_tenants():
    digests = auth.parse_key_pairs(" acme:k1 , globex:k2,")
    ring = auth.KeyRing(digests)
    assert ring.tenant_for("k1") == "acme"
    assert ring.tenant_for("k2") == "globex"
    assert ring.tenant_for("k3") is None
    assert ring.tenant_for(None) is None
    assert ring.tenant_for("") is None
    assert "k1" not in repr(digests) and "k2" not in repr(digests)


def test_key_may_contain_colons():
    assert auth.KeyRing(auth.parse_key_pairs("acme:a:b:c")).tenant_for("a:b:c") == "acme"


@pytest.mark.parametrize("text", ["acmeSECRET", "acme:", ":SECRET", "ok:k1,SECRET", "../x:SECRET"])
def test_malformed_pairs_are_refused_without_echoing_keys(text):
    with pytest.raises(ValueError) as info:
        auth.parse_key_pairs(text)
    assert "SECRET" not in str(info.value)


def test_tenant_names_cannot_climb_out_of_the_layout():
    with pytest.raises(ValueError, match="invalid tenant"):
        auth.parse_key_pairs("../etc:secret-key")


def test_one_key_for_two_tenants_is_refused():
    with pytest.raises(ValueError, match="two tenants"):
        auth.parse_key_pairs("acme:same,globex:same")


def test_keys_file_holds_hashed_keys(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2024-05\nacme:{auth.hash_key('k1')}\n\nglobex:{auth.hash_key('k2').upper()}\n")
    digests = auth.digests_from_config(ApiConfig(keys=SecretStr("initech:k3"), keys_file=str(path)))
    ring = auth.KeyRing(digests)
    assert (ring.tenant_for("k1"), ring.tenant_for("k2"), ring.tenant_for("k3")) == ("acme", "globex", "initech")
    assert ring.tenants == {"acme", "globex", "initech"}


def test_keys_file_giving_an_env_key_to_another_tenant_is_refused(tmp_path):
    """The replica merges its keys file into the digests it was given (from RECSYS_API_KEYS)."""
    path = tmp_path / "keys"
    path.write_text(f"globex:{auth.hash_key('k1')}\n")
    digests = auth.parse_key_pairs("acme:k1")
    with pytest.raises(ValueError, match="two tenants"):
        auth.add_keys_file(digests, str(path))


@pytest.mark.parametrize("line", ["acme:notahash", "acme", f"acme:{'g' * 64}"])
def test_malformed_keys_file_lines_are_refused(line):
    with pytest.raises(ValueError, match="line 1"):
        auth.parse_keys_file(line)


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", None, "abc"),
        (None, "xyz", "xyz"),
        ("Basic abc", "xyz", "xyz"),
        ("Bearer ", None, None),
        (None, "  ", None),
        (None, None, None),
    ],
)
def test_key_from_headers(authorization, x_api_key, expected):
    assert auth.key_from_headers(authorization, x_api_key) == expected
