"""Identity claims parsed from strings: SET, comments (never inside literals), startup options."""

from __future__ import annotations

import pytest

from scalple.proxy.identity import (
    Claim,
    IdentitySyntaxError,
    needs_no_identity,
    parse_comment,
    parse_set,
    strip_startup_option,
    trusted,
)


@pytest.mark.parametrize(
    ("sql", "claim"),
    [
        ("SET scalple.user = 'alice@x.io'", Claim("alice@x.io", "set")),
        ("set scalple.user to bob;", Claim("bob", "set")),
        ("SET SESSION scalple.user = 'o''brien'", Claim("o'brien", "set")),
        ("SET LOCAL scalple.user = 'carol'", Claim("carol", "set", local=True)),
        ("RESET scalple.user", Claim(None, "set")),
        ("SET scalple.user TO DEFAULT", Claim(None, "set")),
        ("SELECT 1", None),
        ("SELECT 'scalple.user'", None),
    ],
)
def test_parse_set(sql: str, claim: Claim | None) -> None:
    assert parse_set(sql) == claim


def test_set_in_an_unknown_form_is_refused_not_forwarded() -> None:
    with pytest.raises(IdentitySyntaxError):
        parse_set("SET scalple.user = 'a', 'b'")
    with pytest.raises(IdentitySyntaxError, match="use SET"):
        parse_set("SELECT set_config('scalple.user', 'alice', false)")
    assert parse_set("SELECT current_setting('scalple.user', true)") is None  # reading is harmless


@pytest.mark.parametrize(
    ("sql", "actor"),
    [
        ("SELECT 1 /*user='alice%40corp.com',route='%2Fx'*/", "alice@corp.com"),
        ("/*user='bob'*/ SELECT 1", "bob"),
        ("SELECT 1 /*application='x'*/", None),
        ("SELECT '/*user=''mallory''*/'", None),  # inside a string literal
        ("SELECT 1 -- /*user='mallory'*/", None),  # inside a line comment
        ("SELECT $$ /*user='mallory'*/ $$", None),
        ("SELECT 1 /* outer /*user='mallory'*/ */", None),  # nested: the inner is no sqlcommenter
        ("SELECT /*user='dave'*/ 1", "dave"),
    ],
)
def test_parse_comment(sql: str, actor: str | None) -> None:
    claim = parse_comment(sql)
    assert (claim.actor if claim else None) == actor


def test_startup_option_is_stripped_and_the_rest_kept() -> None:
    rest, claim = strip_startup_option(r"-c search_path=a\ b -c scalple.user=alice@x.io")
    assert rest == r"-c search_path=a\ b" and claim == Claim("alice@x.io", "startup")
    assert strip_startup_option("--scalple.user=bob") == ("", Claim("bob", "startup"))
    assert strip_startup_option("-c geqo=off") == ("-c geqo=off", None)


def test_trust_by_role_and_network() -> None:
    nets = ("127.0.0.0/8",)
    assert trusted("app_user", "127.0.0.1", (), nets)
    assert not trusted("app_user", "10.0.0.1", (), nets)
    assert not trusted("app_user", "127.0.0.1", ("svc",), nets)


def test_transaction_control_needs_no_identity() -> None:
    assert needs_no_identity("BEGIN") and needs_no_identity("  commit;")
    assert not needs_no_identity("SELECT * FROM customers")
