-- class: READ SELECT
-- tables: orders users
-- columns: orders.customer_id orders.total users.email users.id
WITH recent AS (SELECT customer_id, sum(total) AS s FROM orders GROUP BY customer_id) SELECT u.email, r.s FROM users u JOIN recent r ON r.customer_id = u.id

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.customer_id orders.total
SELECT id, row_number() OVER (PARTITION BY customer_id ORDER BY total DESC) FROM orders

-- class: READ SELECT
-- tables: users
-- columns: users.data
SELECT data->>'city' FROM users WHERE data @> '{"vip": true}'

-- class: READ SELECT
-- tables: users
-- columns: users.*
SELECT * FROM users

-- class: READ SELECT
-- tables: users auth_user
-- columns: users.email auth_user.email
SELECT email FROM users UNION SELECT email FROM auth_user

-- class: READ SELECT
-- tables: users orders
-- columns: users.id orders.id
SELECT id, 'user' AS kind FROM users UNION ALL SELECT id, 'order' FROM orders ORDER BY id LIMIT 50

-- class: READ SELECT
-- tables: orders users
-- columns: orders.customer_id users.id
SELECT customer_id FROM orders INTERSECT SELECT id FROM users

-- class: READ SELECT
-- tables: users accounts
-- columns: users.id accounts.user_id
SELECT id FROM users EXCEPT SELECT user_id FROM accounts

-- class: READ SELECT
-- tables: orders users
-- columns: orders.id orders.customer_id orders.total users.email users.id
WITH big AS (SELECT id, customer_id FROM orders WHERE total > 1000) SELECT u.email FROM users u WHERE u.id IN (SELECT customer_id FROM big)

-- class: READ SELECT
-- tables: employees
-- columns: employees.id employees.manager_id employees.name
WITH RECURSIVE chain AS (SELECT id, manager_id, name FROM employees WHERE id = 1 UNION ALL SELECT e.id, e.manager_id, e.name FROM employees e JOIN chain c ON e.manager_id = c.id) SELECT name FROM chain

-- class: READ SELECT
WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 100) SELECT sum(n) FROM t

-- class: WRITE INSERT
-- tables: orders billing.invoices
-- columns: orders.* billing.invoices.id billing.invoices.customer_id billing.invoices.amount
WITH moved AS (DELETE FROM orders WHERE status = 'archived' RETURNING *) INSERT INTO billing.invoices (id, customer_id, amount) SELECT id, customer_id, total FROM moved

-- class: WRITE SELECT
-- tables: accounts
-- columns: accounts.balance accounts.id
WITH upd AS (UPDATE accounts SET balance = balance - 100 WHERE id = 1 RETURNING id, balance) SELECT * FROM upd

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.total
WITH t AS MATERIALIZED (SELECT id, total FROM orders) SELECT count(*) FROM t WHERE total > 10

-- class: READ SELECT
-- tables: orders users
-- columns: orders.customer_id orders.total users.name users.id
WITH a AS (SELECT customer_id, total FROM orders), b AS (SELECT customer_id, sum(total) AS s FROM a GROUP BY customer_id) SELECT users.name, b.s FROM b JOIN users ON users.id = b.customer_id

-- class: WRITE UPDATE
-- tables: orders users
-- columns: orders.status orders.customer_id users.id users.created_at
WITH stale AS (SELECT id FROM users WHERE created_at < '2020-01-01') UPDATE orders SET status = 'stale' WHERE customer_id IN (SELECT id FROM stale)

-- class: WRITE DELETE
-- tables: blog_comment blog_post
-- columns: blog_comment.post_id blog_post.id blog_post.status
WITH dead AS (SELECT id FROM blog_post WHERE status = 'spam') DELETE FROM blog_comment WHERE post_id IN (SELECT id FROM dead)

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.total orders.created_at
SELECT id, total, sum(total) OVER (ORDER BY created_at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running FROM orders

-- class: READ SELECT
-- tables: employees
-- columns: employees.name employees.dept employees.salary
SELECT name, dept, salary, rank() OVER (PARTITION BY dept ORDER BY salary DESC) FROM employees

-- class: READ SELECT
-- tables: orders
-- columns: orders.customer_id orders.total orders.created_at
SELECT customer_id, total, lag(total) OVER w, lead(total) OVER w FROM orders WINDOW w AS (PARTITION BY customer_id ORDER BY created_at)

-- class: READ SELECT
-- tables: orders
-- columns: orders.*
SELECT * FROM (SELECT o.*, row_number() OVER (PARTITION BY customer_id ORDER BY total DESC) AS rn FROM orders o) ranked WHERE rn <= 3

-- class: READ SELECT
-- tables: employees
-- columns: employees.dept employees.salary
SELECT dept, percentile_cont(0.5) WITHIN GROUP (ORDER BY salary) FROM employees GROUP BY dept

-- class: READ SELECT
-- tables: accounts
-- columns: accounts.id accounts.balance accounts.user_id
SELECT id, ntile(4) OVER (ORDER BY balance) AS quartile, first_value(id) OVER (PARTITION BY user_id ORDER BY balance DESC) FROM accounts

-- class: READ SELECT
-- tables: employees
-- columns: employees.dept employees.salary employees.id
SELECT dept, avg(salary) OVER (PARTITION BY dept), count(*) OVER () FROM employees WHERE id > 10

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.total orders.created_at
SELECT o.id, o.total FROM orders o WHERE o.created_at BETWEEN '2024-01-01' AND '2024-02-01' ORDER BY o.total DESC NULLS LAST LIMIT 100 OFFSET 0

-- class: READ SELECT
-- tables: orders
-- columns: orders.customer_id orders.status orders.total
SELECT customer_id, count(*) FILTER (WHERE status = 'paid') AS paid, avg(total) FROM orders GROUP BY customer_id HAVING count(*) > 1

-- class: READ SELECT
-- tables: orders
-- columns: orders.customer_id orders.id orders.created_at
SELECT DISTINCT ON (customer_id) customer_id, id, created_at FROM orders ORDER BY customer_id, created_at DESC

-- class: READ SELECT
-- tables: users orders
-- columns: users.id orders.id orders.total
SELECT u.id, coalesce(sum(o.total), 0) FROM users u LEFT JOIN orders o USING (id) GROUP BY u.id

-- class: READ SELECT
-- tables: orders
-- columns: orders.total
SELECT CASE WHEN total > 100 THEN 'big' ELSE 'small' END AS size, count(*) FROM orders GROUP BY size

-- class: READ SELECT
-- tables: users
-- columns: users.id users.email users.phone
SELECT id FROM users WHERE email ILIKE '%@example.com' AND phone IS NULL

-- class: READ SELECT
-- tables: users
-- columns: users.id users.email
SELECT id, email FROM users ORDER BY id FETCH FIRST 10 ROWS ONLY

-- class: READ SELECT
-- tables: orders
-- columns: orders.*
TABLE orders

-- class: READ SELECT
VALUES (1, 'a'), (2, 'b')

-- class: READ SELECT
-- tables: users orders
-- columns: users.* orders.*
SELECT * FROM users u JOIN orders o ON o.customer_id = u.id WHERE u.id = 1

-- class: READ SELECT
-- tables: users orders
-- columns: users.* orders.total orders.customer_id
SELECT u.*, o.total FROM users u JOIN orders o ON o.customer_id = u.id

-- class: READ SELECT
-- tables: orders
-- columns: orders.customer_id orders.created_at
SELECT count(DISTINCT customer_id) FROM orders WHERE created_at::date = current_date

-- class: READ SELECT
-- tables: order_items products orders
-- columns: products.name products.id order_items.quantity order_items.price order_items.product_id order_items.order_id orders.id orders.customer_id
SELECT p.name, oi.quantity * oi.price AS line_total FROM order_items oi JOIN products p ON p.id = oi.product_id JOIN orders o ON o.id = oi.order_id WHERE o.customer_id = 12

-- class: READ SELECT
-- tables: employees
-- columns: employees.name employees.id employees.manager_id
SELECT e.name, m.name AS manager FROM employees e LEFT JOIN employees m ON m.id = e.manager_id

-- class: READ SELECT
-- tables: users orders
-- columns: users.id orders.customer_id orders.total
SELECT id FROM users WHERE id IN (SELECT customer_id FROM orders GROUP BY customer_id HAVING sum(total) > 1000) FOR SHARE

-- class: READ SELECT
-- tables: users
-- columns: users.created_at
SELECT date_part('year', created_at) AS y, count(*) FROM users GROUP BY y ORDER BY y

-- class: READ SELECT
-- tables: billing.invoices
-- columns: billing.invoices.*
SELECT * FROM billing.invoices WHERE amount > 100

-- class: READ SELECT
-- tables: users
-- columns: users.name users.id
SELECT string_agg(name, ', ' ORDER BY name) FROM users WHERE id = ANY($1::int[])

-- class: READ SELECT
-- tables: users orders
-- columns: users.email users.id orders.customer_id orders.total
SELECT u.email FROM users u WHERE u.id = (SELECT customer_id FROM orders ORDER BY total DESC LIMIT 1)

-- class: READ SELECT
SELECT 1

-- class: READ SELECT
SELECT now(), version()

-- class: READ SELECT
-- tables: users orders
-- columns: users.id orders.id
SELECT id FROM users; SELECT id FROM orders

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.status orders.total
SELECT o.id FROM orders o WHERE o.status IN ('new', 'paid') AND NOT (o.total < 10)

-- class: READ SELECT
-- tables: users
-- columns: users.id
SELECT x.id FROM (VALUES (1), (2)) AS x(id) JOIN users ON users.id = x.id

-- class: READ SELECT
-- tables: users
-- columns: users.email users.id
WITH ids(id) AS (VALUES (1), (2)) SELECT u.email FROM users u JOIN ids USING (id)

-- class: READ SELECT
-- tables: pgbench_accounts pgbench_branches
-- columns: pgbench_accounts.abalance pgbench_accounts.bid pgbench_branches.bid pgbench_branches.bbalance
SELECT sum(abalance) FROM pgbench_accounts a JOIN pgbench_branches b ON a.bid = b.bid WHERE b.bbalance > 0

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.created_at
SELECT id FROM orders WHERE created_at > $1 ORDER BY created_at LIMIT $2

-- class: READ SELECT
-- tables: users
-- columns: users.email
SELECT email FROM users WHERE email ~* '^admin@'

-- class: READ SELECT
-- tables: active_users users
-- columns: active_users.id active_users.email users.id users.email users.data
SELECT id, email FROM active_users WHERE id = 3

-- class: READ SELECT
-- tables: active_users users
-- columns: users.id users.email users.data
SELECT count(*) FROM active_users

-- class: READ SELECT
-- tables: pg_catalog.pg_stat_activity
-- columns: pg_catalog.pg_stat_activity.pid pg_catalog.pg_stat_activity.usename
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'bob'

-- class: READ SELECT
-- tables: pg_catalog.pg_stat_user_tables
-- columns: pg_catalog.pg_stat_user_tables.relname pg_catalog.pg_stat_user_tables.n_live_tup
SELECT relname, n_live_tup FROM pg_stat_user_tables ORDER BY n_live_tup DESC LIMIT 10

-- class: READ SELECT
SELECT * FROM generate_series(1, 10) AS g(n)

-- class: READ SELECT
SELECT nextval('order_seq')

-- class: READ SELECT
SELECT set_config('app.user_id', '42', true)

-- class: READ SELECT
SELECT current_setting('TimeZone')

-- class: READ SELECT
SELECT refresh_stats(7)

-- class: READ SELECT
-- tables: users
-- columns: users.id users.name users.manager_id
SELECT u.id, u.name FROM users u WHERE u.manager_id IS NOT DISTINCT FROM $1

-- class: READ SELECT
-- tables: orders
-- columns: orders.customer_id orders.total
SELECT customer_id, sum(total) FROM orders GROUP BY ROLLUP (customer_id)

-- class: READ SELECT
-- tables: employees
-- columns: employees.dept employees.salary
SELECT dept, salary FROM employees GROUP BY GROUPING SETS ((dept), (salary), ())

-- class: READ SELECT
-- tables: products
-- columns: products.name products.price
SELECT name FROM products WHERE price > ALL (SELECT 10) OR price IS NULL
