-- class: WRITE INSERT
-- tables: users
-- columns: users.id users.email
INSERT INTO users (id, email) VALUES (1, 'x@y.com') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email RETURNING id

-- class: WRITE UPDATE
-- tables: users
-- columns: users.phone users.id
UPDATE users SET phone = $1 WHERE id = $2

-- class: WRITE DELETE
-- tables: orders
-- columns: orders.*
DELETE FROM orders WHERE customer_id = 3 RETURNING *

-- class: WRITE INSERT
-- tables: products
-- columns: products.sku products.name products.price
INSERT INTO products (sku, name, price) VALUES ('A-1', 'Widget', 9.99) ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price

-- class: WRITE INSERT
-- tables: products
-- columns: products.sku products.name
INSERT INTO products (sku, name) VALUES ('A-2', 'Gadget') ON CONFLICT DO NOTHING

-- class: WRITE INSERT
-- tables: users
-- columns: users.id users.email
INSERT INTO users (id, email) VALUES ($1, $2) ON CONFLICT ON CONSTRAINT users_pkey DO UPDATE SET email = excluded.email WHERE users.email IS DISTINCT FROM excluded.email RETURNING users.id

-- class: WRITE INSERT
-- tables: pgbench_branches
-- columns: pgbench_branches.bid pgbench_branches.bbalance
INSERT INTO pgbench_branches AS b (bid, bbalance) VALUES (1, 10) ON CONFLICT (bid) DO UPDATE SET bbalance = b.bbalance + EXCLUDED.bbalance

-- class: WRITE UPDATE
-- tables: orders
-- columns: orders.status orders.id orders.customer_id
UPDATE orders SET status = 'shipped' WHERE id = ANY($1) RETURNING id, customer_id

-- class: WRITE DELETE
-- tables: blog_comment
-- columns: blog_comment.created_at blog_comment.id blog_comment.post_id
DELETE FROM blog_comment WHERE created_at < now() - interval '1 year' RETURNING id, post_id

-- class: WRITE INSERT
-- tables: orders users
-- columns: orders.* users.id users.created_at
INSERT INTO orders (customer_id, total) SELECT id, 0 FROM users WHERE created_at > '2024-01-01' RETURNING *

-- class: WRITE UPDATE
-- tables: orders users
-- columns: orders.status orders.customer_id users.id users.data
UPDATE orders o SET status = 'vip' FROM users u WHERE u.id = o.customer_id AND u.data->>'tier' = 'gold'

-- class: WRITE DELETE
-- tables: order_items orders
-- columns: order_items.order_id orders.id orders.status
DELETE FROM order_items oi USING orders o WHERE oi.order_id = o.id AND o.status = 'cancelled'

-- class: WRITE INSERT
-- tables: users
-- columns: users.email users.tags users.data
INSERT INTO users (email, tags, data) VALUES ('c@d.org', ARRAY['x','y'], '{"a": 1}'::jsonb)

-- class: WRITE INSERT
-- tables: users
-- columns: users.*
INSERT INTO users DEFAULT VALUES

-- class: WRITE INSERT
-- tables: orders
-- columns: orders.*
INSERT INTO orders VALUES (100, 5, 9.5, 'new', now(), '[]')

-- class: WRITE UPDATE
-- tables: users
-- columns: users.name users.phone users.id
UPDATE users SET (name, phone) = ('Ann', '+4712345678') WHERE id = 1

-- class: WRITE COMMIT
-- tables: accounts
-- columns: accounts.balance accounts.id
BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1; UPDATE accounts SET balance = balance + 10 WHERE id = 2; COMMIT

-- class: WRITE MERGE
-- tables: accounts orders
-- columns: accounts.user_id accounts.balance orders.customer_id orders.total
MERGE INTO accounts a USING (SELECT customer_id, sum(total) AS t FROM orders GROUP BY customer_id) s ON a.user_id = s.customer_id WHEN MATCHED THEN UPDATE SET balance = a.balance + s.t WHEN NOT MATCHED THEN INSERT (user_id, balance) VALUES (s.customer_id, s.t)

-- class: WRITE MERGE
-- tables: products staging_products
-- columns: products.sku products.price products.name staging_products.sku staging_products.discontinued staging_products.price staging_products.name
MERGE INTO products p USING staging_products s ON p.sku = s.sku WHEN MATCHED AND s.discontinued THEN DELETE WHEN MATCHED THEN UPDATE SET price = s.price WHEN NOT MATCHED THEN INSERT (sku, name, price) VALUES (s.sku, s.name, s.price)

-- class: WRITE MERGE
-- tables: accounts
-- columns: accounts.id accounts.balance
MERGE INTO accounts t USING (VALUES (1, 50)) AS v(id, amount) ON t.id = v.id WHEN MATCHED THEN UPDATE SET balance = t.balance + v.amount

-- class: READ SELECT
-- tables: pgbench_accounts
-- columns: pgbench_accounts.abalance pgbench_accounts.aid
SELECT abalance FROM pgbench_accounts WHERE aid = 48213

-- class: WRITE UPDATE
-- tables: pgbench_accounts
-- columns: pgbench_accounts.abalance pgbench_accounts.aid
UPDATE pgbench_accounts SET abalance = abalance + -2345 WHERE aid = 48213

-- class: WRITE UPDATE
-- tables: pgbench_tellers
-- columns: pgbench_tellers.tbalance pgbench_tellers.tid
UPDATE pgbench_tellers SET tbalance = tbalance + -2345 WHERE tid = 7

-- class: WRITE UPDATE
-- tables: pgbench_branches
-- columns: pgbench_branches.bbalance pgbench_branches.bid
UPDATE pgbench_branches SET bbalance = bbalance + -2345 WHERE bid = 1

-- class: WRITE INSERT
-- tables: pgbench_history
-- columns: pgbench_history.tid pgbench_history.bid pgbench_history.aid pgbench_history.delta pgbench_history.mtime
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 48213, -2345, CURRENT_TIMESTAMP)

-- class: WRITE UPDATE
-- tables: accounts
-- columns: accounts.balance accounts.id accounts.iban
UPDATE accounts SET balance = balance * 1.01 WHERE id = $1 AND iban LIKE 'DE%' RETURNING balance

-- class: WRITE DELETE
-- tables: django_session
-- columns: django_session.expire_date
DELETE FROM django_session WHERE expire_date < now()

-- class: WRITE INSERT
-- tables: accounts
-- columns: accounts.user_id accounts.iban accounts.balance accounts.id
INSERT INTO accounts (user_id, iban, balance) VALUES (3, 'DE89370400440532013000', 0) RETURNING id

-- class: WRITE UPDATE
-- tables: employees
-- columns: employees.salary employees.dept employees.manager_id employees.id employees.name
UPDATE employees SET salary = salary * 1.05 WHERE dept = 'eng' AND manager_id = (SELECT id FROM employees WHERE name = 'Ada')
