"""Text around the values: comments and server messages are masked except what is proven to be
no one's data (identity keys, the server's own wording, names it quotes)."""

from __future__ import annotations

import pytest

from scalple.analysis import Analyzer, Catalog, Policy
from scalple.analysis.comments import mask_comment
from scalple.analysis.masking import mask

KEY = b"k" * 32
PHONE = "+44 20 7946 0011"


def analyzer(catalog: Catalog | None = None) -> Analyzer:
    policy = Policy.build(["users.email", "users.phone"], {"users.id": "customer"})
    return Analyzer(policy, KEY, catalog)


def shape(value: str) -> str:
    return mask(value, "shape", KEY)


# --- comments ---------------------------------------------------------------------------------


def test_sqlcommenter_comment_keeps_identity_keys_and_masks_other_values() -> None:
    sql = (
        "SELECT 1 /*user='alice%40corp.com',controller='refund',"
        "route='%2Fcustomers%2F4711',actor='svc'*/"
    )
    r = analyzer().analyze(sql)
    assert "user='alice%40corp.com'" in r.statement and "actor='svc'" in r.statement
    assert "controller='r*****'" in r.statement
    assert "4711" not in r.statement and "refund" not in r.statement


@pytest.mark.parametrize(
    "comment",
    [
        "-- called by Ann Smith about her refund",
        "/* customer +44 20 7946 0011 */",
        "/* user='alice' and then free text */",
        "/* nested /* Ann Smith */ still a comment */",
    ],
)
def test_free_text_comments_are_masked_whole(comment: str) -> None:
    sql = f"SELECT 1 {comment}\n"
    r = analyzer().analyze(sql)
    for word in ("Ann", "Smith", "refund", "7946", "alice", "free"):
        assert word not in r.statement, r.statement
    assert r.statement.startswith("SELECT 1 ") and r.statement.endswith("\n")


def test_masked_comment_can_neither_close_nor_open_a_comment() -> None:
    out = mask_comment("/* a/b a*/b /*x */", shape)
    assert out is not None and out.count("/*") == 1 and out.count("*/") == 1
    assert out.startswith("/*") and out.endswith("*/")


def test_empty_comment_is_kept() -> None:
    assert mask_comment("/**/", shape) is None and mask_comment("--", shape) is None


def test_comments_are_masked_on_the_cache_hit_path_too() -> None:
    a = analyzer()
    a.analyze("SELECT id FROM users WHERE id = 1 /* Ann */")
    r = a.analyze("SELECT id FROM users WHERE id = 2 /* Bob */")
    assert "Bob" not in r.statement


# --- server messages --------------------------------------------------------------------------

CATALOG = Catalog.from_tables({"public.users": ["id", "email", "phone", "name"]})


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ('invalid input syntax for type integer: "Ann Smith"', "Smith",
         "invalid input syntax for type integer: \""),
        ('invalid input syntax for type json: "{"phone": "+44 20 7946 0011"}"', "7946", "json: "),
        ('value "447946001122" is out of range for type bigint', "447946001122",
         "is out of range"),
        ('column "Ann" does not exist', "Ann", "does not exist"),
        ('syntax error at or near "\'Ann Smith\'"', "Smith", "syntax error at or near"),
        ('invalid value "an" for "MM"', '"an"', "invalid value"),
        ('invalid byte sequence for encoding "UTF8": 0xe9 0x41', "0xe9", 'encoding "UTF8"'),
        ('date/time field value out of range: "1984-02-30"', "1984", "out of range"),
        ("DETAIL:  Key (lower(email::text))=(ann.smith) already exists.", "ann.smith",
         "Key (lower(email::text))=("),
        (f"DETAIL:  Failing row contains (7, {PHONE}, Ann).", "7946", "Failing row contains ("),
        ("DETAIL:  Token \"Smith\" is invalid.", "Smith", "is invalid"),
    ],
)  # fmt: skip
def test_server_messages_lose_quoted_values(text: str, secret: str, kept: str) -> None:
    out = analyzer(CATALOG).mask_text(text)
    assert secret not in out and kept in out, out


@pytest.mark.parametrize(
    "text",
    [
        'relation "orders" does not exist',
        'duplicate key value violates unique constraint "users_email_key"',
        'null value in column "email" of relation "users" violates not-null constraint',
        'column "name" does not exist',
        'insert or update on table "orders" violates foreign key constraint "orders_fk"',
        "DETAIL:  Key (sku)=(A-100) already exists.",
        "division by zero",
        'unrecognized configuration parameter "scalple.noop"',
    ],
)
def test_server_wording_and_names_are_kept(text: str) -> None:
    assert analyzer(CATALOG).mask_text(text) == text


@pytest.mark.parametrize(
    ("sqlstate", "routine"),
    [("P0001", "exec_stmt_raise"), ("23505", "exec_stmt_raise"), ("P0004", None),
     ("00000", "exec_stmt_raise"), ("XX000", "PLy_elog_impl")],
)  # fmt: skip
def test_text_written_by_user_code_is_masked_whole(sqlstate: str, routine: str | None) -> None:
    text = "refund refused for Ann Smith (order 4711)"
    out = analyzer().mask_text(text, sqlstate=sqlstate, routine=routine)
    assert "Ann" not in out and "refund" not in out and "4711" not in out
    assert len(out) == len(text) and out.count(" ") == text.count(" ")


def test_server_text_is_not_free_text() -> None:
    text = 'relation "orders" does not exist'
    assert analyzer().mask_text(text, sqlstate="42P01", routine="parserOpenTable") == text
