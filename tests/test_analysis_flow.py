"""Where a value can go: a literal or parameter that can meet a PII column through any expression
is masked, and one whose destination analysis cannot tell is masked too (unsure -> mask)."""

from __future__ import annotations

import pytest

from scalple.analysis import Analyzer, Catalog, Policy, subject_hash
from scalple.analysis.flow import Flow, Reach
from scalple.analysis.lexer import scan
from scalple.analysis.shape import _actions
from scalple.analysis.verdict import Verdicts

KEY = b"k" * 32
PHONE = "+44 20 7946 0011"  # no value pattern matches it: only the column rule can mask it
NAME = "ann.smith"
TABLES = {
    "public.users": ["id", "email", "phone", "name", "profile", "created_at"],
    "public.orders": ["id", "customer_id", "total", "note"],
    "public.contacts": ["id", "phone"],
}
VIEWS = {"public.contacts": ["public.users.id", "public.users.phone"]}


def analyzer(catalog: Catalog | None = None, **options: object) -> Analyzer:
    policy = Policy.build(
        ["users.email", "users.phone", "users.profile"],
        {"users.id": "customer", "orders.customer_id": "customer", "users.email": "email"},
        **options,
    )
    return Analyzer(policy, KEY, catalog or Catalog.from_tables(TABLES, VIEWS, ["add_contact"]))


MASKED = [
    # regular expressions
    f"SELECT id FROM users WHERE email ~ '{NAME}'",
    f"SELECT id FROM users WHERE email ~* '{NAME}'",
    f"SELECT id FROM users WHERE email !~ '{NAME}'",
    f"SELECT id FROM users WHERE email !~* '{NAME}'",
    f"SELECT id FROM users WHERE phone SIMILAR TO '{PHONE}%'",
    f"SELECT id FROM users WHERE regexp_like(email, '{NAME}')",
    f"SELECT id FROM users WHERE regexp_match(email, '{NAME}') IS NOT NULL",
    f"SELECT regexp_replace(phone, '{PHONE}', 'x') FROM users",
    # row comparisons and row assignments
    f"SELECT id FROM users WHERE (email, phone) = ('{NAME}', '{PHONE}')",
    f"SELECT id FROM users WHERE (id, phone) IN ((1, '{PHONE}'), (2, '{PHONE}'))",
    f"UPDATE users SET (email, phone) = ('{NAME}', '{PHONE}') WHERE id = 7",
    f"UPDATE users SET (name, phone) = (SELECT 'Ann', '{PHONE}') WHERE id = 7",
    # CTEs, VALUES lists and derived tables that feed PII columns
    f"WITH v(e) AS (VALUES ('{NAME}')) INSERT INTO users(email) SELECT e FROM v",
    f"INSERT INTO users(email, phone) SELECT e, p FROM (VALUES ('{NAME}', '{PHONE}')) AS v(e, p)",
    f"UPDATE users SET phone = v.p FROM (VALUES (7, '{PHONE}')) AS v(id, p) WHERE users.id = v.id",
    f"SELECT u.id FROM users u JOIN (VALUES ('{PHONE}')) v(p) ON u.phone = v.p",
    f"WITH x AS (SELECT '{PHONE}' AS p) SELECT id FROM users, x WHERE users.phone = x.p",
    f"INSERT INTO users(phone) SELECT '{PHONE}' UNION SELECT '+44 20 7946 0099'",
    f"DELETE FROM users USING (VALUES ('{PHONE}')) AS v(p) WHERE users.phone = v.p",
    f"SELECT id FROM users WHERE phone IN (SELECT p FROM (VALUES ('{PHONE}')) t(p))",
    # scalar and IN subqueries
    f"SELECT id FROM users WHERE phone = (SELECT '{PHONE}')",
    f"SELECT id FROM users WHERE phone IN (SELECT '{PHONE}' UNION ALL SELECT 'x')",
    f"SELECT id FROM users WHERE phone = ANY(ARRAY['{PHONE}'])",
    # JSON documents compared with or written to a PII column
    f"SELECT id FROM users WHERE profile->>'phone' = '{PHONE}'",
    f'SELECT id FROM users WHERE profile @> \'{{"phone": "{PHONE}"}}\'',
    f"UPDATE users SET profile = jsonb_build_object('phone', '{PHONE}') WHERE id = 1",
    f'INSERT INTO users (id, profile) VALUES (1, \'{{"phone": "{PHONE}"}}\')',
    f"SELECT id FROM users WHERE jsonb_build_object('p', phone) = '{{\"p\": \"{PHONE}\"}}'",
    # any expression that combines the value with a PII column
    f"UPDATE users SET phone = phone || '{PHONE}' WHERE id = 1",
    f"SELECT id FROM users WHERE coalesce(phone, '{PHONE}') = name",
    f"SELECT id FROM users WHERE strpos(email, '{NAME}') > 0",
    f"SELECT CASE phone WHEN '{PHONE}' THEN 1 END FROM users",
    f"SELECT id FROM users WHERE position('{NAME}' IN email) > 0",
    # whole-row references carry every column of the row
    f"SELECT id FROM users u WHERE u::text LIKE '%{PHONE}%'",
    f"SELECT id FROM users u WHERE to_jsonb(u)->>'phone' = '{PHONE}'",
    # a function of the database's own: what it does with its arguments is not analysed
    f"SELECT add_contact('Ann', '{PHONE}')",
    # a view that reads a PII column; a relation or column the catalog does not know
    f"SELECT id FROM contacts WHERE phone = '{PHONE}'",
    f"SELECT id FROM temp_copy WHERE phone = '{PHONE}'",
    f"SELECT id FROM users WHERE phoen = '{PHONE}'",
]


@pytest.mark.parametrize("sql", MASKED)
def test_literal_that_can_meet_a_pii_column_is_masked(sql: str) -> None:
    r = analyzer().analyze(sql)
    assert PHONE not in r.statement and NAME not in r.statement, r.statement
    assert r.masked_fields


def test_insert_without_column_list_and_without_catalog_is_masked() -> None:
    a = Analyzer(Policy.build(["users.phone"]), KEY)
    r = a.analyze(f"INSERT INTO users VALUES (1, 'Ann', '{PHONE}')")
    assert PHONE not in r.statement and "'Ann'" not in r.statement
    r = a.analyze(f"INSERT INTO orders VALUES (1, 'Ann', '{PHONE}')")
    assert PHONE in r.statement  # orders has no PII column: nothing it holds is PII


KEPT = [
    ("SELECT id FROM users WHERE name = 'Ann' AND email = 'x' LIMIT 10 OFFSET 20",
     ["'Ann'", "10", "20"]),
    ("SELECT id FROM users WHERE created_at > now() - interval '7 days' AND name = 'Ann'",
     ["'7 days'", "'Ann'"]),
    ("SELECT name::varchar(20) FROM users WHERE id > 5 ORDER BY 1", ["20", "1"]),
    ("SELECT o.total FROM orders o JOIN (VALUES (1, 'gift')) v(id, note) ON o.note = v.note",
     ["'gift'", "1"]),
    ("WITH t AS (SELECT id, total FROM orders WHERE total > 100) SELECT id FROM t WHERE total < 5",
     ["100", "5"]),
    ("INSERT INTO orders (id, note) VALUES (1, 'gift') ON CONFLICT (id) DO UPDATE SET note = 'x'",
     ["'gift'", "'x'"]),
    ("SELECT 'hello' AS greeting, count(*) FROM orders GROUP BY 1", ["'hello'"]),
    ("SELECT to_char(total, '999D99'), format('%s', 'x') FROM orders", ["'999D99'", "'x'"]),
    ("UPDATE users SET (name, phone) = ('Ann', '+1 555') WHERE (id, name) IN ((1, 'Bo'))",
     ["'Ann'", "'Bo'"]),
    ("SELECT id FROM orders WHERE note ~ '^gift' AND total BETWEEN 5 AND 10", ["'^gift'", "5"]),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "kept"), KEPT)
def test_literal_proven_to_meet_no_pii_column_is_kept(sql: str, kept: list[str]) -> None:
    r = analyzer().analyze(sql)
    for text in kept:
        assert text in r.statement, (text, r.statement)


def test_parameters_follow_the_same_rule() -> None:
    a = analyzer()
    r = a.analyze("SELECT id FROM users WHERE email ~ $1 AND name = $2", [NAME.encode(), b"Ann"])
    assert r.params == ("a**.*****", "Ann")
    assert a.analyze("SELECT $1::text AS note", [b"x"]).params == ("x",)
    # A parameter the statement does not show: where it goes cannot be told.
    assert a.analyze("SELECT 1", [PHONE.encode()]).params != (PHONE,)


@pytest.mark.parametrize(
    "sql",
    [
        "WITH v(e) AS (VALUES ('Ann@X.org')) INSERT INTO users(email) SELECT e FROM v",
        "SELECT id FROM users WHERE (email, name) = ('Ann@X.org', 'Ann')",
        "UPDATE users SET (email, name) = ('Ann@X.org', 'Ann')",
        "SELECT id FROM users WHERE email = (SELECT 'Ann@X.org')",
        "SELECT u.id FROM users u JOIN (VALUES ('Ann@X.org')) v(e) ON u.email = v.e",
    ],
)
def test_subjects_follow_values_into_their_columns(sql: str) -> None:
    r = analyzer().analyze(sql)
    assert subject_hash(KEY, "email", "ann@x.org") in r.subjects
    assert "Ann@X.org" not in r.statement


def test_a_pattern_is_not_a_subject() -> None:
    r = analyzer().analyze("SELECT id FROM users WHERE email ~ 'ann@x.org' AND name = 'Ann'")
    assert r.subjects == ()


def test_standard_conforming_strings_off_reads_backslash_escapes() -> None:
    a = analyzer()
    sql = f"SELECT id FROM users WHERE phone = 'it\\'s {PHONE}' AND name = 'O\\'Brien'"
    r = a.analyze(sql, standard_strings=False)
    assert PHONE not in r.statement and "'O\\'Brien'" in r.statement
    assert r.analysis == "ok" and r.columns == ("public.users.id", "public.users.phone",
                                                "public.users.name")  # fmt: skip
    # The same text read with standard strings is another statement, cached apart.
    assert a.analyze(sql).statement != r.statement


def test_masked_value_is_quoted_for_the_session_reading() -> None:
    r = analyzer().analyze("UPDATE users SET phone = 'a\\\\b' WHERE id = 1", standard_strings=False)
    assert "SET phone = '" in r.statement and "\\\\" in r.statement and "b'" not in r.statement


@pytest.mark.parametrize(
    "literal",
    ["E'ann\\x40corp.com'", "E'ann\\100corp.com'", "U&'ann\\0040corp.com'", "'ann\\x40corp.com'"],
)
def test_escapes_the_analyzer_does_not_decode_are_masked(literal: str) -> None:
    r = analyzer().analyze(f"SELECT {literal} AS note", standard_strings=False)
    assert "corp" not in r.statement


def test_a_literal_the_walk_does_not_reach_is_masked_not_guessed() -> None:
    """A literal the tree has but the walk never visited is masked, even when values that
    lost their position (an interval's) could otherwise lend it their verdict."""
    sql = "SELECT id FROM orders WHERE note = 'gift' AND total > interval '7 days'"
    read = scan(sql)
    gift = read.literals[0].start
    kept = Reach(("public.orders.note",), ())
    flows = [Flow(loose=[kept, kept], unvisited=[gift])]
    actions, _ = _actions(read, flows, Verdicts(Policy.build(), None))
    assert actions[0] is not None and actions[0].mask  # 'gift': in the tree, not walked
    assert actions[1] is None  # '7 days': lost its position; every such value is kept
    r = analyzer().analyze("SELECT id FROM orders TABLESAMPLE SYSTEM (10) WHERE note = 'gift'")
    assert "SYSTEM (10)" in r.statement and "'gift'" in r.statement  # the walk reaches both
