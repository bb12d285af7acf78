"""Identity claims read from statements, comments (only real ones) and startup options."""

from __future__ import annotations

import pytest

from scalple.analysis.lexer import lex
from scalple.proxy.attribution import Attribution
from scalple.proxy.commands import Kind, classify
from scalple.proxy.identity import (
    Claim,
    ConflictingClaims,
    comment_claim,
    strip_startup_option,
    trusted,
)


@pytest.mark.parametrize(
    ("sql", "value", "local"),
    [
        ("SET scalple.user = 'alice@x.io'", "alice@x.io", False),
        ("set scalple.user to bob;", "bob", False),
        ("SET SESSION scalple.user = 'o''brien'", "o'brien", False),
        ("SET LOCAL scalple.user = 'carol'", "carol", True),
        ("RESET scalple.user", None, False),
        ("SET scalple.user TO DEFAULT", None, False),
        ('SET "scalple"."user" = \'dave\'', "dave", False),  # spellings the server accepts
        ("SET U&\"scalple\\002euser\" = 'erin'", "erin", False),
        ("SET LOCAL \"SCALPLE.USER\" = 'fay'", "fay", True),
    ],
)
def test_identity_set(sql: str, value: str | None, local: bool) -> None:
    command = classify(sql, lex(sql))
    assert (command.kind, command.value, command.local) == (Kind.IDENTITY, value, local)


@pytest.mark.parametrize(
    "sql",
    [
        "SET scalple.user = 'a', 'b'",
        "SELECT set_config('scalple.user', 'alice', false)",
        "SELECT pg_catalog.set_config(lower('SCALPLE.USER'), 'alice', false)",
        "ALTER DATABASE app SET scalple.\"user\" = 'alice'",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET \"scalple.user\" = 'a' AS 'select 1'",
        "DO $$ BEGIN PERFORM set_config('scalple.user', 'a', false); END $$",
    ],
)
def test_other_ways_to_set_the_identity_are_refused(sql: str) -> None:
    assert classify(sql, lex(sql)).refusal is not None


def test_reading_the_setting_is_harmless() -> None:
    sql = "SELECT current_setting('scalple.user', true)"
    assert classify(sql, lex(sql)).refusal is None


def _comment(sql: str) -> str | None:
    claim = comment_claim(sql, lex(sql).comments)
    return claim.actor if claim else None


@pytest.mark.parametrize(
    ("sql", "actor"),
    [
        ("SELECT 1 /*user='alice%40corp.com',route='%2Fx'*/", "alice@corp.com"),
        ("/*user='bob'*/ SELECT 1", "bob"),
        ("SELECT 1 /*application='x'*/", None),
        ("SELECT '/*user=''mallory''*/'", None),  # inside a string literal
        ("SELECT 1 -- /*user='mallory'*/", None),  # inside a line comment: not sqlcommenter
        ("SELECT $$ /*user='mallory'*/ $$", None),
        ("SELECT 1 AS \"/*user='mallory'*/\"", None),  # inside a quoted name
        ("SELECT E'\\' /*user=''mallory''*/'", None),  # inside an escaped string
        ("SELECT 1 /* outer /*user='mallory'*/ */", None),  # free text around it: no claim
        ("SELECT 1 /* fixes the report for user='bob' */", None),
        ("SELECT /*user='dave'*/ 1", "dave"),
        ("SELECT 1 --user='erin'", "erin"),  # a line comment holding only pairs
    ],
)
def test_comment_claims(sql: str, actor: str | None) -> None:
    assert _comment(sql) == actor


def test_comments_naming_two_people_conflict() -> None:
    with pytest.raises(ConflictingClaims):
        _comment("/*user='alice'*/ SELECT 1 /*user='bob'*/")
    assert _comment("/*user='alice'*/ SELECT 1 /*user='alice'*/") == "alice"


def test_standard_conforming_strings_off_changes_what_is_a_comment() -> None:
    sql = "SELECT 'a\\' /*user='mallory'*/ , 'x'"
    assert comment_claim(sql, lex(sql, standard_strings=False).comments) is None
    assert comment_claim(sql, lex(sql).comments) is not None  # as a server with it on reads it


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
    a = Attribution("app_user", "127.0.0.1", require_identity=True)
    for sql in ("BEGIN", "  commit;", "ROLLBACK TO SAVEPOINT s", "SAVEPOINT s"):
        assert a.unattributed(classify(sql, lex(sql)), None) is None, sql
    for sql in ("SELECT * FROM customers", "FETCH 1 FROM c", "EXECUTE p"):
        assert a.unattributed(classify(sql, lex(sql)), None) is not None, sql
