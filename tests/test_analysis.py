"""Analysis unit tests: masking (literals, params, patterns, styles), subjects, fallback."""

from __future__ import annotations

import pytest

from scalple.analysis import Analyzer, Catalog, Policy, ResultField, subject_hash
from scalple.analysis.lexer import scan
from scalple.analysis.masking import mask
from scalple.analysis.patterns import BUILTIN, iban_ok, luhn_ok
from scalple.analysis.subjects import SubjectHasher

KEY = b"k" * 32
CATALOG = Catalog.from_tables(
    {"public.users": ["id", "email", "phone", "name"], "public.orders": ["id", "customer_id"]}
)


def analyzer(style: str = "shape", catalog: Catalog | None = CATALOG) -> Analyzer:
    policy = Policy.build(
        ["users.email", "users.phone"],
        {"users.id": "customer", "orders.customer_id": "customer", "users.email": "email"},
        mask_style=style,
    )
    return Analyzer(policy, KEY, catalog)


def test_literal_compared_with_pii_column_is_masked() -> None:
    r = analyzer().analyze("SELECT name FROM users WHERE email = 'john@example.com'")
    assert r.statement == "SELECT name FROM users WHERE email = 'j***@***.com'"
    assert r.masked_fields == ("public.users.email → j***@***.com",)
    assert r.subjects == (subject_hash(KEY, "email", "John@Example.com"),)


def test_non_pattern_pii_literal_masked_by_column_only() -> None:
    r = analyzer().analyze("UPDATE users SET phone = '+1 555-0100' WHERE name = 'Ann'")
    assert "555-0100" not in r.statement and "'Ann'" in r.statement


def test_params_masked_by_position_and_pattern() -> None:
    r = analyzer().analyze(
        "INSERT INTO users (id, phone, name) VALUES ($1, $2, $3)",
        [b"42", b"+15550100", b"mail me: ann@corp.io"],
    )
    assert r.params[1] == "+********"
    assert r.params[2] == "mail me: a***@***.io"
    assert subject_hash(KEY, "customer", "42") in r.subjects


def test_binary_param_shown_as_integer_and_hashed() -> None:
    r = analyzer().analyze("SELECT * FROM orders WHERE customer_id = $1", [b"\0\0\0*"], [1])
    assert r.subjects == (subject_hash(KEY, "customer", "42"),)


@pytest.mark.parametrize(
    "text",
    ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "4111 1111 1111 1111", "a.b@c.de"],
)
def test_value_patterns_masked_anywhere(text: str) -> None:
    r = analyzer().analyze(f"SELECT '{text}' AS note")
    assert text not in r.statement and r.masked_fields


def test_patterns_reject_lookalikes() -> None:
    assert not luhn_ok("4111111111111112")
    assert not iban_ok("DE00370400440532013000")
    assert not list(BUILTIN["card"].find("order 1234567890123"))


@pytest.mark.parametrize(
    ("style", "expected"), [("redact", "'***'"), ("hash", "'hmac:"), ("shape", "'j***@***.com'")]
)
def test_mask_styles(style: str, expected: str) -> None:
    r = analyzer(style).analyze("SELECT 1 FROM users WHERE email = 'john@example.com'")
    assert expected in r.statement and "john@" not in r.statement


def test_unparseable_statement_masks_every_literal() -> None:
    r = analyzer().analyze("SELEKT * FRUM users WHERE x = 'secret' AND y = 12345", [b"p"])
    assert r.analysis == "failed"
    assert "secret" not in r.statement and "12345" not in r.statement
    assert r.params == ("***",) or r.params == ("*",)


def test_role_password_masked() -> None:
    r = analyzer().analyze("ALTER ROLE bob WITH PASSWORD 'hunter2'")
    assert r.audit_class == "ROLE" and "hunter2" not in r.statement


def test_cache_hit_applies_to_new_values() -> None:
    a = analyzer()
    a.analyze("SELECT 1 FROM users WHERE email = 'a@b.com' AND id = 1")
    r = a.analyze("SELECT 1 FROM users WHERE email = 'zed@q.org' AND id = 2")
    assert "zed" not in r.statement and len(a._shapes) == 1


def test_subject_cap() -> None:
    policy = Policy.build((), {"users.id": "customer"}, subject_cap=3)
    r = Analyzer(policy, KEY).analyze("SELECT * FROM users WHERE id IN (1, 2, 3, 4, 5)")
    assert len(r.subjects) == 3 and r.subjects_capped


def test_subject_hash_normalizes() -> None:
    assert subject_hash(KEY, "customer", "042") == subject_hash(KEY, "customer", "42")
    assert subject_hash(KEY, "email", "A@B.com") == subject_hash(KEY, "email", " a@b.com")
    assert subject_hash(KEY, "customer", "42") != subject_hash(KEY, "email", "42")


def test_scan_skips_identifiers_and_finds_prefixed_strings() -> None:
    s = scan("SELECT \"t1\".\"it's\", col2 FROM t WHERE a = E'x\\'y' AND b = $$z$$ AND c = 3")
    assert [t.value() for t in s.literals] == ["x'y", "z", "3"]


def _row(*values: bytes | None) -> bytes:
    out = len(values).to_bytes(2, "big")
    for v in values:
        out += (-1).to_bytes(4, "big", signed=True) if v is None else len(v).to_bytes(4, "big") + v
    return out


def test_result_plan_decodes_subject_columns() -> None:
    users = CATALOG.relation("public.users")
    assert users is not None
    fields = [
        ResultField("id", users.oid, 1, 23, 1),
        ResultField("name", users.oid, 4, 25, 0),
        ResultField("email", users.oid, 2, 25, 0),
    ]
    plan = analyzer().result_plan(fields)
    assert plan is not None
    assert plan.columns == ("public.users.id", "public.users.name", "public.users.email")
    hashes = plan.subjects_in_row(_row((7).to_bytes(4, "big"), b"Ann", b"ann@x.org"))
    assert hashes == (subject_hash(KEY, "customer", "7"), subject_hash(KEY, "email", "ann@x.org"))
    assert plan.subjects_in_row(_row(None, b"Ann", None)) == ()


def test_result_plan_without_catalog_uses_statement_columns() -> None:
    a = analyzer(catalog=None)
    st = a.analyze("SELECT id, name FROM users")
    plan = a.result_plan(
        [ResultField("id", 99999, 1, 23, 0), ResultField("?column?", 0, 0, 23)], st
    )
    assert plan is not None and plan.columns == ("public.users.id", None)


def test_copy_plan_text_format() -> None:
    plan = analyzer().copy_plan("COPY users (name, id, email) FROM STDIN")
    assert plan is not None
    assert plan.subjects_in_line(b"Ann\t7\tann@x.org\n") == (
        subject_hash(KEY, "customer", "7"),
        subject_hash(KEY, "email", "ann@x.org"),
    )
    assert plan.subjects_in_line(b"Ann\t\\N\t\\N\n") == ()
    assert analyzer().copy_plan("COPY orders (id) FROM STDIN") is None


def test_copy_of_a_query_hashes_the_subject_columns_it_outputs() -> None:
    plan = analyzer().copy_plan(
        "COPY (SELECT u.email AS mail, 1 + 1, u.id FROM users u JOIN orders o ON o.uid = u.id) "
        "TO STDOUT WITH (FORMAT csv)"
    )
    assert plan is not None
    assert plan.columns == ("public.users.email", "", "public.users.id")
    assert plan.subjects_in_line(b"ann@x.org,2,7\n") == (
        subject_hash(KEY, "email", "ann@x.org"),
        subject_hash(KEY, "customer", "7"),
    )
    # One table and no qualifier; a set operation's fields are not traced.
    plan = analyzer().copy_plan("COPY (SELECT name, id FROM users) TO STDOUT")
    assert plan is not None and plan.subject_fields == ((1, "customer"),)
    assert analyzer().copy_plan("COPY (SELECT id FROM users UNION SELECT 1) TO STDOUT") is None
    assert analyzer().copy_plan("COPY (SELECT total FROM orders) TO STDOUT") is None


@pytest.mark.parametrize("key", [b"k" * 32, b"", b"x" * 64, b"long" * 40])
def test_subject_hasher_matches_subject_hash(key: bytes) -> None:
    hasher = SubjectHasher(key)
    for kind, value in [("customer", "042"), ("email", " Ann@X.org"), ("iban", "")]:
        assert hasher(kind, value) == subject_hash(key, kind, value)


def test_exact_text_cache_gives_the_fresh_analysis() -> None:
    sql = "SELECT id FROM users WHERE id = 7 AND email = $1 /* ann@x.org */ LIMIT 21"
    a = analyzer()
    first = a.analyze(sql, [b"bob@y.com"])
    again = a.analyze(sql, [b"cy@z.net"])
    fresh = analyzer().analyze(sql, [b"cy@z.net"])
    assert again == fresh and first.statement == again.statement
    assert subject_hash(KEY, "customer", "7") in again.subjects
    assert subject_hash(KEY, "email", "cy@z.net") in again.subjects
    assert "ann@x.org" not in again.statement and len(a._exact) == 1


def test_exact_text_cache_forgets_on_catalog_change() -> None:
    catalog = Catalog.from_tables({"public.users": ["id", "email"]})
    a = analyzer(catalog=catalog)
    assert a.analyze("SELECT * FROM users WHERE id = $1", [b"1"]).columns[-1] == (
        "public.users.email"
    )
    catalog._set((), {})
    assert a.analyze("SELECT * FROM users WHERE id = $1", [b"1"]).columns == (
        "public.users.*",
        "public.users.id",
    )


@pytest.mark.parametrize(
    "sql", ["SELECT E'4111\\ 1111 1111 1111' AS c", "SELECT 4_111_111_111_111_111 AS c"]
)
def test_patterns_see_literal_values_not_their_spelling(sql: str) -> None:
    r = analyzer().analyze(sql)
    assert r.masked_fields and "1111 1111" not in r.statement and "111_111" not in r.statement


def test_scan_keys_ignore_digits_in_names_and_parameters() -> None:
    s = scan('SELECT t1.a2, "x1", $1, $12 FROM t1 WHERE b = 3.5 AND c = .5')
    assert [t.value() for t in s.literals] == ["3.5", ".5"]  # .5 is a number to the server
    assert s.key == 'SELECT t1.a2, "x1", $1, $12 FROM t1 WHERE b = ? AND c = ?'


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        ('invalid input syntax for type integer: "alice@x.com"', "alice@x.com", "a***@***.com"),
        (
            'duplicate key value violates unique constraint "users_phone_key"\n'
            "DETAIL:  Key (phone)=(+1 555 0100) already exists.",
            "555 0100",
            "Key (phone)=(",
        ),
        (
            'DETAIL:  Key (customer_id)=(42) is not present in table "users".',
            "(42)",
            'is not present in table "users".',
        ),
        (
            'new row for relation "users" violates check constraint "c"\n'
            "DETAIL:  Failing row contains (7, +1 555 0100, Ann).",
            "555 0100",
            "Failing row contains (",
        ),
        ("account DE89 3704 0044 0532 0130 00 is closed", "3704 0044", "account "),
    ],
)
def test_mask_text_masks_server_messages(text: str, gone: str, kept: str) -> None:
    out = analyzer().mask_text(text)
    assert gone not in out and kept in out


def test_mask_text_keeps_harmless_text() -> None:
    text = 'relation "orders" does not exist\nDETAIL:  Key (sku)=(A-100) already exists.'
    assert analyzer().mask_text(text) == text
    assert analyzer().mask_text("") == ""


STAR_CATALOG = Catalog.from_tables(
    {"public.users": ["id", "email"], "public.orders": ["id", "customer_id"], "app.notes": ["n"]}
)


@pytest.mark.parametrize(
    ("sql", "columns"),
    [
        ("SELECT * FROM users", {"users.id", "users.email"}),
        ("SELECT u.*, o.id FROM users u JOIN orders o ON o.customer_id = u.id",
         {"users.id", "users.email", "orders.id", "orders.customer_id"}),
        ("SELECT * FROM users, app.notes", {"users.id", "users.email", "app.notes.n"}),
        ("SELECT * FROM users JOIN ghosts g ON g.id = users.id",
         {"users.id", "users.email", "ghosts.*", "ghosts.id"}),
        ("WITH t AS (SELECT * FROM orders) SELECT * FROM t", {"orders.id", "orders.customer_id"}),
        ("DELETE FROM orders RETURNING *", {"orders.id", "orders.customer_id"}),
        ("INSERT INTO users VALUES (1, 'a@b.c')", {"users.id", "users.email"}),
        ("COPY users TO STDOUT", {"users.id", "users.email"}),
        ("SELECT count(*) FROM users", set()),
    ],
)  # fmt: skip
def test_star_expands_from_the_catalog(sql: str, columns: set[str]) -> None:
    r = analyzer(catalog=STAR_CATALOG).analyze(sql)
    assert set(r.columns) == {c if c.startswith("app.") else f"public.{c}" for c in columns}


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN (ANALYZE, BUFFERS) SELECT name FROM users WHERE email = 'john@example.com'",
        "PREPARE q (int) AS SELECT name FROM users WHERE email = 'john@example.com'",
        "DECLARE c CURSOR WITH HOLD FOR SELECT name FROM users WHERE email = 'john@example.com'",
        "MERGE INTO users u USING (VALUES (1)) v(id) ON u.email = 'john@example.com' "
        "WHEN MATCHED THEN DELETE",
    ],
)
def test_wrapped_and_merge_statements_mask_by_column(sql: str) -> None:
    r = analyzer().analyze(sql)
    assert "'j***@***.com'" in r.statement and r.analysis == "ok"
    assert r.subjects == (subject_hash(KEY, "email", "john@example.com"),)


def test_utility_statement_sqlglot_cannot_parse_is_ok_and_masked() -> None:
    r = analyzer().analyze("NOTIFY order_events, 'paid by ann@x.org 555 0100'")
    assert r.analysis == "ok" and r.audit_class == "MISC" and r.command_tag_guess == "NOTIFY"
    assert "555 0100" not in r.statement and "ann@" not in r.statement
    assert analyzer().analyze("CLUSTER orders USING orders_pkey").tables == ("public.orders",)


@pytest.mark.parametrize("value", ["paid by ann@x.org 555 0100", "a@b.c 4242", "x@y.1234567"])
def test_shape_mask_keeps_no_trailing_text_of_an_at_sign_value(value: str) -> None:
    masked = mask(value, "shape", KEY)
    assert not any(part in masked for part in [*value.split()[1:], "1234567"] if len(part) > 3)


def test_an_in_list_is_learned_once_whatever_its_length() -> None:
    """`IN (l1, …, ln)` is parsed as `IN (l1)`: every element still gets its list's treatment
    (masked, its subject captured), and lists of any length share one learned shape."""
    a = analyzer()
    short = a.analyze("SELECT name FROM users WHERE email IN ('a@x.io', 'b@y.io')")
    ids = ", ".join(str(i) for i in range(100_000))
    long = a.analyze(
        f"SELECT name FROM users WHERE id IN ({ids}) AND email IN ('c@z.io', 'd@w.io')"
    )
    assert "a@x.io" not in short.statement and "b@y.io" not in short.statement
    assert set(short.subjects) == {subject_hash(KEY, "email", e) for e in ("a@x.io", "b@y.io")}
    assert "c@z.io" not in long.statement and "d@w.io" not in long.statement
    assert subject_hash(KEY, "customer", "99999") in long.subjects or long.subjects_capped
    assert long.tables == ("public.users",)
    for n in (2, 3, 5):
        ids = ", ".join(str(i) for i in range(1, n + 1))
        r = a.analyze(
            f"SELECT name FROM users WHERE id IN ({ids}) AND email IN ('e@v.io', 'f@u.io')"
        )
        assert set(r.subjects) >= {subject_hash(KEY, "customer", str(i)) for i in range(1, n + 1)}
    assert len(a._shapes) == 2  # the short statement's shape, and one for every id-list length


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO users (id, email) VALUES (7, 'g@t.io')",  # a row: each value its column
        "SELECT name FROM users WHERE (id, email) IN ((7, 'g@t.io'), (8, 'h@s.io'))",
        "SELECT name FROM users WHERE email IN ('g@t.io', E'h@s.io')",  # kinds differ
        "SELECT name FROM users WHERE id IN (7, -8) OR email = 'g@t.io'",
    ],
)
def test_only_plain_in_lists_are_cut(sql: str) -> None:
    r = analyzer().analyze(sql)
    assert "g@t.io" not in r.statement and "h@s.io" not in r.statement
    assert subject_hash(KEY, "email", "g@t.io") in r.subjects
