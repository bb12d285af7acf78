"""Catalog against the real PostgreSQL from the sandbox: names, OIDs, `*` and views."""

from __future__ import annotations

import asyncio

import psycopg

from scalple.analysis import Analyzer, Catalog, Policy, ResultField, subject_hash
from scalple.sandbox import Sandbox


def test_catalog_resolves_oids_stars_and_views(sandbox: Sandbox) -> None:
    sandbox.psql(
        "DROP VIEW IF EXISTS cat_v; DROP TABLE IF EXISTS cat_users;"
        "CREATE TABLE cat_users (id int PRIMARY KEY, email text, name text);"
        "CREATE VIEW cat_v AS SELECT id, email FROM cat_users;"
        "GRANT SELECT ON cat_users, cat_v TO app_user;",
        dbname="app",
    )
    catalog = asyncio.run(Catalog.load(sandbox.dsn("app_user")))
    a = Analyzer(Policy.build((), {"cat_users.id": "customer"}), b"k" * 32, catalog)
    assert a.analyze("SELECT * FROM cat_users").columns == (
        "public.cat_users.id",
        "public.cat_users.email",
        "public.cat_users.name",
    )
    view = a.analyze("SELECT id FROM cat_v")
    assert "public.cat_users" in view.tables and "public.cat_users.email" in view.columns
    with psycopg.connect(sandbox.dsn("app_user")) as conn:
        cur = conn.execute("SELECT id, name FROM cat_users")
        desc = cur.pgresult
        assert desc is not None
        fields = [ResultField("", desc.ftable(i), desc.ftablecol(i), desc.ftype(i)) for i in (0, 1)]
    plan = a.result_plan(fields)
    assert plan is not None and plan.columns == ("public.cat_users.id", "public.cat_users.name")
    row = (
        (2).to_bytes(2, "big")
        + (1).to_bytes(4, "big")
        + b"7"
        + (-1).to_bytes(4, "big", signed=True)
    )
    assert plan.subjects_in_row(row) == (subject_hash(b"k" * 32, "customer", "7"),)
    sandbox.psql("ALTER TABLE cat_users ADD COLUMN phone text", dbname="app")
    asyncio.run(catalog.refresh())
    assert "public.cat_users.phone" in a.analyze("SELECT * FROM cat_users").columns


def test_catalog_knows_the_databases_own_functions(sandbox: Sandbox) -> None:
    """Arguments to a function of the database's own go where its body says, which analysis
    does not read: masked. A built-in's are not."""
    sandbox.psql(
        "CREATE OR REPLACE FUNCTION cat_note(t text) RETURNS text LANGUAGE sql AS 'SELECT t'",
        dbname="app",
    )
    catalog = asyncio.run(Catalog.load(sandbox.dsn("app_user")))
    assert "cat_note" in catalog.user_functions and "lower" not in catalog.user_functions
    a = Analyzer(Policy.build(), b"k" * 32, catalog)
    assert "Ann Smith" not in a.analyze("SELECT cat_note('Ann Smith')").statement
    assert "Ann Smith" in a.analyze("SELECT lower('Ann Smith')").statement
