-- class: ROLE GRANT
-- tables: users
GRANT SELECT ON users TO reporting

-- class: ROLE CREATE ROLE
CREATE ROLE reporting NOLOGIN

-- class: ROLE CREATE ROLE
CREATE USER app_reader WITH PASSWORD 'secret' VALID UNTIL '2030-01-01'

-- class: ROLE CREATE ROLE
CREATE ROLE admin WITH LOGIN SUPERUSER CREATEDB

-- class: ROLE ALTER ROLE
ALTER ROLE app_reader SET search_path = app, public

-- class: ROLE ALTER ROLE
ALTER USER bob WITH PASSWORD 'n3w-p4ss'

-- class: ROLE DROP ROLE
DROP ROLE IF EXISTS old_reporting

-- class: ROLE GRANT
-- tables: orders order_items
GRANT SELECT, INSERT ON orders, order_items TO app_writer

-- class: ROLE GRANT
GRANT USAGE ON SCHEMA billing TO reporting

-- class: ROLE GRANT
GRANT SELECT ON ALL TABLES IN SCHEMA public TO reporting

-- class: ROLE REVOKE
-- tables: users
REVOKE ALL ON users FROM PUBLIC

-- class: ROLE GRANT
GRANT reporting TO alice

-- class: ROLE REVOKE
REVOKE reporting FROM alice

-- class: ROLE GRANT
-- tables: users
GRANT SELECT (id, name) ON users TO support

-- class: ROLE GRANT
-- tables: billing.invoices
GRANT UPDATE ON TABLE billing.invoices TO billing_app WITH GRANT OPTION

-- class: ROLE ALTER DEFAULT PRIVILEGES
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO reporting

-- class: ROLE REASSIGN OWNED
REASSIGN OWNED BY old_owner TO new_owner

-- class: MISC SET
SET ROLE reporting

-- class: MISC RESET
RESET ROLE

-- class: MISC SET
SET SESSION AUTHORIZATION alice

-- class: MISC BEGIN
BEGIN

-- class: MISC BEGIN
BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY

-- class: MISC START TRANSACTION
START TRANSACTION ISOLATION LEVEL REPEATABLE READ

-- class: MISC COMMIT
COMMIT

-- class: MISC ROLLBACK
ROLLBACK

-- class: MISC COMMIT
COMMIT AND CHAIN

-- class: MISC COMMIT
END

-- class: MISC ROLLBACK
ABORT

-- class: MISC SAVEPOINT
SAVEPOINT sp1

-- class: MISC RELEASE
RELEASE sp1

-- class: MISC PREPARE TRANSACTION
PREPARE TRANSACTION 'tx-42'

-- class: MISC COMMIT PREPARED
COMMIT PREPARED 'tx-42'

-- class: MISC ROLLBACK PREPARED
ROLLBACK PREPARED 'tx-43'

-- class: MISC SET
SET TRANSACTION ISOLATION LEVEL READ COMMITTED

-- class: MISC LOCK TABLE
-- tables: accounts
LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE

-- class: MISC SET
SET search_path TO app, public

-- class: MISC SET
SET LOCAL statement_timeout = '5s'

-- class: MISC SET
SET application_name = 'billing-worker'

-- class: MISC SET
SET client_encoding TO 'UTF8'

-- class: MISC SHOW
SHOW server_version

-- class: MISC SHOW
SHOW ALL

-- class: MISC SHOW
SHOW transaction_isolation

-- class: MISC RESET
RESET ALL

-- class: MISC DISCARD ALL
DISCARD ALL

-- class: MISC DEALLOCATE ALL
DEALLOCATE ALL

-- class: MISC DEALLOCATE
DEALLOCATE pdo_stmt_1

-- class: MISC PREPARE
-- tables: users
-- columns: users.id users.email
PREPARE get_user (int) AS SELECT id, email FROM users WHERE id = $1

-- class: MISC EXECUTE
EXECUTE get_user(42)

-- class: MISC LISTEN
LISTEN order_events

-- class: MISC NOTIFY
NOTIFY order_events, 'order 42 paid'

-- class: MISC UNLISTEN
UNLISTEN *

-- class: MISC CHECKPOINT
CHECKPOINT

-- class: MISC DECLARE CURSOR
-- tables: orders
-- columns: orders.id orders.total
DECLARE c1 CURSOR WITH HOLD FOR SELECT id, total FROM orders

-- class: MISC FETCH
FETCH FORWARD 100 FROM c1

-- class: MISC CLOSE
CLOSE c1

-- class: FUNCTION DO
DO $$ BEGIN PERFORM pg_sleep(0.1); END $$

-- class: FUNCTION DO
DO LANGUAGE plpgsql $body$ DECLARE n int; BEGIN SELECT count(*) INTO n FROM users; RAISE NOTICE '%', n; END $body$

-- class: FUNCTION CALL
CALL refresh_stats(7)

-- class: MISC EXPLAIN
-- tables: orders
-- columns: orders.*
EXPLAIN SELECT * FROM orders WHERE customer_id = 5

-- class: READ EXPLAIN
-- tables: orders users
-- columns: orders.id orders.customer_id users.id users.email
EXPLAIN (ANALYZE, BUFFERS) SELECT o.id FROM orders o JOIN users u ON u.id = o.customer_id WHERE u.email = 'a@b.com'

-- class: WRITE EXPLAIN
-- tables: blog_comment
-- columns: blog_comment.post_id
EXPLAIN ANALYZE DELETE FROM blog_comment WHERE post_id = 3

-- class: MISC EXPLAIN
-- tables: products
-- columns: products.price products.id
EXPLAIN (FORMAT JSON) UPDATE products SET price = 0 WHERE id = 1

-- class: MISC VACUUM
-- tables: orders
VACUUM (VERBOSE, ANALYZE) orders

-- class: MISC VACUUM
-- tables: users
VACUUM FULL users

-- class: MISC VACUUM
VACUUM

-- class: MISC ANALYZE
-- tables: orders
ANALYZE orders

-- class: MISC ANALYZE
-- tables: users
-- columns: users.email users.phone
ANALYZE users (email, phone)

-- class: WRITE TRUNCATE TABLE
-- tables: tmp_import
TRUNCATE TABLE tmp_import

-- class: WRITE TRUNCATE TABLE
-- tables: orders order_items
TRUNCATE orders, order_items RESTART IDENTITY CASCADE

-- class: MISC REINDEX
-- tables: orders
REINDEX TABLE orders

-- class: MISC CLUSTER
-- tables: orders
CLUSTER orders USING orders_pkey
