"""The oracle's database: a small schema with PII and subject columns, and `oracle_mark`.

`oracle_mark(marker)` makes the server write down its own state as it runs a statement: it
executes a dynamic SELECT that pgAudit logs inside the statement's group, carrying
current_setting('shadow.actor') (the actor by PostgreSQL's transaction rules, see gen.py) and
current_setting('scalple.user') (which must never reach the upstream). Generated statements call
it as `(SELECT oracle_mark('k7'))` in a WHERE clause: an uncorrelated sub-select there is a
one-time filter, evaluated once when the statement starts, even when no row matches.
"""

from __future__ import annotations

from typing import Final

from scalple.sandbox import Sandbox

DATABASE: Final = "oracle"
CUSTOMERS: Final = 20

ORACLE_MARK: Final = """
CREATE FUNCTION oracle_mark(marker text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  EXECUTE format('SELECT %L AS kind, %L AS marker, %L AS shadow, %L AS leaked',
                 'oracle-mark', marker, current_setting('shadow.actor', true),
                 current_setting('scalple.user', true));
  RETURN true;
END $f$;
"""

TABLES: Final = f"""
CREATE TABLE customers (id int PRIMARY KEY, email text, phone text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, amount numeric, note text);
INSERT INTO customers SELECT g, 'c' || g || '@example.com', '+44 20 7946 ' || lpad(g::text, 4, '0')
  FROM generate_series(1, {CUSTOMERS}) g;
INSERT INTO orders SELECT g, 1 + g % {CUSTOMERS}, g * 10, 'order ' || g
  FROM generate_series(1, 40) g;
GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
"""

SEED_PII: Final = tuple(f"c{i}@example.com" for i in range(1, CUSTOMERS + 1)) + tuple(
    f"+44 20 7946 {i:04d}" for i in range(1, CUSTOMERS + 1)
)


def create(sandbox: Sandbox) -> None:
    """(Re)create the oracle database, owned by app_user, with relation logging on."""
    sandbox.psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    sandbox.psql(f"CREATE DATABASE {DATABASE} OWNER app_user")
    # Per database, so the rest of the sandbox (demo, other tests) logs as before.
    sandbox.psql(f"ALTER DATABASE {DATABASE} SET pgaudit.log_relation = on")
    sandbox.psql("CREATE EXTENSION IF NOT EXISTS pgaudit", dbname=DATABASE)
    sandbox.psql(ORACLE_MARK + TABLES, dbname=DATABASE)


def proxy_config(sandbox: Sandbox) -> str:
    """scalple.toml for the proxies under test: the setup issue 10 was found on."""
    return (
        "[identity]\n"
        "require_identity = true\n"
        'trusted_roles = ["app_user"]\n'
        "[analysis]\n"
        'pii_columns = ["customers.email", "customers.phone"]\n'
        'subject_columns = { "customers.id" = "customer", "orders.customer_id" = "customer", '
        '"customers.email" = "email" }\n'
        f'catalog_dsn = "postgresql://postgres@127.0.0.1:{sandbox.pg_port}/{DATABASE}"\n'
    )
