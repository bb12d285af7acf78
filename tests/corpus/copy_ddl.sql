-- class: WRITE COPY
-- tables: users
-- columns: users.id users.email
COPY users (id, email) FROM STDIN

-- class: READ COPY
-- tables: orders
-- columns: orders.*
COPY orders TO STDOUT WITH (FORMAT csv, HEADER true)

-- class: READ COPY
-- tables: users
-- columns: users.id users.email users.created_at
COPY (SELECT id, email FROM users WHERE created_at > '2024-01-01') TO STDOUT WITH CSV HEADER

-- class: WRITE COPY
-- tables: pgbench_accounts
-- columns: pgbench_accounts.*
COPY public.pgbench_accounts (aid, bid, abalance, filler) FROM STDIN

-- class: WRITE COPY
-- tables: users
-- columns: users.*
COPY users FROM '/tmp/users.csv' WITH (FORMAT csv)

-- class: READ COPY
-- tables: billing.invoices
-- columns: billing.invoices.*
COPY billing.invoices TO STDOUT

-- class: READ COPY
-- tables: orders users
-- columns: orders.id orders.customer_id users.email users.id
COPY (SELECT o.id, u.email FROM orders o JOIN users u ON u.id = o.customer_id) TO PROGRAM 'gzip > /tmp/x.gz'

-- class: WRITE COPY
-- tables: order_items
-- columns: order_items.order_id order_items.product_id order_items.quantity
COPY order_items (order_id, product_id, quantity) FROM STDIN WITH (FORMAT csv, DELIMITER ';', NULL '')

-- class: DDL CREATE TABLE
-- tables: audit_tmp
CREATE TABLE audit_tmp (id int)

-- class: DDL CREATE TABLE
-- tables: events users
CREATE TABLE IF NOT EXISTS events (id bigserial PRIMARY KEY, user_id bigint REFERENCES users (id), payload jsonb NOT NULL DEFAULT '{}', created_at timestamptz DEFAULT now())

-- class: DDL CREATE TABLE
-- tables: orders_2024 orders
CREATE TABLE orders_2024 PARTITION OF orders FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')

-- class: DDL CREATE TABLE
-- tables: user_emails users
-- columns: users.id users.email
CREATE TABLE user_emails AS SELECT id, email FROM users WHERE email IS NOT NULL

-- class: DDL CREATE TABLE
-- tables: tmp_import
CREATE UNLOGGED TABLE tmp_import (line text)

-- class: DDL CREATE TABLE
-- tables: tmp_ids orders
-- columns: orders.id orders.status
-- known_gap: sqlglot reads CREATE TEMP TABLE ... ON COMMIT DROP AS as an opaque Command, so the query's columns go unbound (pglast still names both relations)
CREATE TEMP TABLE tmp_ids ON COMMIT DROP AS SELECT id FROM orders WHERE status = 'new'

-- class: DDL ALTER TABLE
-- tables: users
ALTER TABLE users ADD COLUMN last_seen timestamptz

-- class: DDL ALTER TABLE
-- tables: users
ALTER TABLE users ALTER COLUMN email SET NOT NULL

-- class: DDL ALTER TABLE
-- tables: users
ALTER TABLE users RENAME COLUMN name TO full_name

-- class: DDL ALTER TABLE
-- tables: orders
ALTER TABLE IF EXISTS orders DROP COLUMN IF EXISTS items

-- class: DDL ALTER TABLE
-- tables: billing.invoices
ALTER TABLE billing.invoices OWNER TO billing_admin

-- class: DDL ALTER TABLE
-- tables: orders
ALTER TABLE orders ADD CONSTRAINT orders_total_check CHECK (total >= 0)

-- class: DDL ALTER TABLE
-- tables: orders
ALTER TABLE orders ENABLE ROW LEVEL SECURITY

-- class: DDL ALTER TABLE
-- tables: users
ALTER TABLE users ALTER COLUMN phone TYPE varchar(32) USING phone::varchar(32)

-- class: DDL ALTER TABLE
-- tables: accounts bank_accounts
ALTER TABLE accounts RENAME TO bank_accounts

-- class: DDL CREATE INDEX
-- tables: orders orders_customer_idx
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_customer_idx ON orders USING btree (customer_id, created_at DESC)

-- class: DDL CREATE INDEX
-- tables: users users_email_lower_idx
CREATE UNIQUE INDEX users_email_lower_idx ON users (lower(email))

-- class: DDL CREATE INDEX
-- tables: products products_attrs_gin
CREATE INDEX products_attrs_gin ON products USING gin (attrs jsonb_path_ops)

-- class: DDL CREATE INDEX
-- tables: orders orders_open_idx
CREATE INDEX orders_open_idx ON orders (created_at) WHERE status <> 'closed'

-- class: DDL DROP INDEX
-- tables: orders_customer_idx
DROP INDEX IF EXISTS orders_customer_idx

-- class: DDL DROP INDEX
-- tables: orders_open_idx
DROP INDEX CONCURRENTLY orders_open_idx

-- class: DDL CREATE VIEW
-- tables: active_users_v users
-- columns: users.id users.email users.data
CREATE VIEW active_users_v AS SELECT id, email FROM users WHERE data->>'active' = 'true'

-- class: DDL CREATE VIEW
-- tables: order_totals orders
-- columns: orders.customer_id orders.total
CREATE OR REPLACE VIEW order_totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id

-- class: DDL CREATE MATERIALIZED VIEW
-- tables: mv_sales orders
-- columns: orders.created_at orders.total
-- known_gap: sqlglot reads CREATE MATERIALIZED VIEW ... WITH NO DATA as an opaque Command, so the query's columns go unbound (pglast still names both relations)
CREATE MATERIALIZED VIEW mv_sales AS SELECT date_trunc('day', created_at) AS day, sum(total) FROM orders GROUP BY 1 WITH NO DATA

-- class: DDL REFRESH MATERIALIZED VIEW
-- tables: mv_sales
REFRESH MATERIALIZED VIEW CONCURRENTLY mv_sales

-- class: DDL DROP VIEW
-- tables: active_users_v order_totals
DROP VIEW IF EXISTS active_users_v, order_totals

-- class: DDL DROP MATERIALIZED VIEW
-- tables: mv_sales
DROP MATERIALIZED VIEW IF EXISTS mv_sales

-- class: DDL DROP TABLE
-- tables: tmp_import tmp_ids
DROP TABLE IF EXISTS tmp_import, tmp_ids CASCADE

-- class: DDL CREATE SCHEMA
CREATE SCHEMA IF NOT EXISTS reporting AUTHORIZATION reporting_owner

-- class: DDL DROP SCHEMA
DROP SCHEMA reporting CASCADE

-- class: DDL CREATE SEQUENCE
-- tables: order_seq
CREATE SEQUENCE order_seq START 1000

-- class: DDL CREATE EXTENSION
CREATE EXTENSION IF NOT EXISTS pgcrypto

-- class: DDL CREATE TYPE
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped')

-- class: DDL ALTER TYPE
ALTER TYPE order_status ADD VALUE 'refunded'

-- class: DDL CREATE TRIGGER
-- tables: orders
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION audit_row()

-- class: DDL COMMENT
-- tables: orders
COMMENT ON TABLE orders IS 'customer orders'

-- class: DDL CREATE FUNCTION
CREATE FUNCTION add(a integer, b integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT a + b $$

-- class: DDL CREATE FUNCTION
CREATE OR REPLACE FUNCTION touch_updated() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN NEW.created_at := now(); RETURN NEW; END $fn$

-- class: DDL DROP FUNCTION
DROP FUNCTION IF EXISTS add(integer, integer)

-- class: DDL CREATE PROCEDURE
CREATE PROCEDURE refresh_stats(days int) LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; END $$

-- class: DDL CREATE POLICY
-- tables: orders
CREATE POLICY own_orders ON orders FOR SELECT USING (customer_id = current_setting('app.user_id')::int)

-- class: DDL CREATE TABLE
-- tables: order_archive orders
CREATE TABLE order_archive (LIKE orders INCLUDING ALL)

