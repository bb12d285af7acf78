-- class: READ SELECT
-- tables: users
-- columns: users.id users.email
SELECT users_1.id, users_1.email FROM users AS users_1 WHERE users_1.id = $1

-- class: READ SELECT
-- tables: users
-- columns: users.id users.email users.name
SELECT users.id AS users_id, users.email AS users_email, users.name AS users_name FROM users WHERE users.id = 5

-- class: READ SELECT
-- tables: users orders
-- columns: users.id users.name orders.id orders.total orders.customer_id
SELECT users.id AS users_id, users.name AS users_name, orders_1.id AS orders_1_id, orders_1.total AS orders_1_total FROM users LEFT OUTER JOIN orders AS orders_1 ON users.id = orders_1.customer_id WHERE users.name = 'ann' ORDER BY orders_1.id

-- class: READ SELECT
-- tables: orders
-- columns: orders.customer_id orders.id orders.total
SELECT orders.customer_id AS orders_customer_id, orders.id AS orders_id, orders.total AS orders_total FROM orders WHERE orders.customer_id IN (1, 2, 3)

-- class: READ SELECT
-- tables: users
-- columns: users.id users.email
SELECT count(*) AS count_1 FROM (SELECT users.id AS users_id, users.email AS users_email FROM users WHERE users.email LIKE '%@corp.io') AS anon_1

-- class: READ SELECT
-- tables: orders users
-- columns: orders.customer_id orders.total users.name users.id
SELECT anon_1.customer_id, anon_1.total_spent, users.name FROM (SELECT orders.customer_id AS customer_id, sum(orders.total) AS total_spent FROM orders GROUP BY orders.customer_id) AS anon_1 JOIN users ON users.id = anon_1.customer_id

-- class: WRITE INSERT
-- tables: users
-- columns: users.email users.name users.id
INSERT INTO users (email, name) VALUES ($1, $2) RETURNING users.id

-- class: WRITE UPDATE
-- tables: users
-- columns: users.name users.id
UPDATE users SET name=$1 WHERE users.id = $2

-- class: WRITE DELETE
-- tables: orders
-- columns: orders.id
DELETE FROM orders WHERE orders.id = $1

-- class: WRITE INSERT
-- tables: order_items
-- columns: order_items.order_id order_items.product_id order_items.quantity order_items.price
INSERT INTO order_items (order_id, product_id, quantity, price) VALUES (1, 10, 2, 9.99), (1, 11, 1, 19.5)

-- class: READ SELECT
-- tables: users orders
-- columns: users.id users.name orders.customer_id orders.total
SELECT users.id, users.name FROM users WHERE EXISTS (SELECT 1 FROM orders WHERE orders.customer_id = users.id AND orders.total > 100)

-- class: READ SELECT
-- tables: products order_items
-- columns: products.id products.sku order_items.product_id
SELECT p.id, p.sku FROM products p WHERE NOT EXISTS (SELECT 1 FROM order_items oi WHERE oi.product_id = p.id)

-- class: READ SELECT
-- tables: users orders
-- columns: users.id orders.total orders.customer_id orders.created_at
SELECT users.id, latest.total FROM users CROSS JOIN LATERAL (SELECT orders.total FROM orders WHERE orders.customer_id = users.id ORDER BY orders.created_at DESC LIMIT 1) AS latest

-- class: READ SELECT
-- tables: users orders
-- columns: users.name users.id orders.customer_id
SELECT u.name, o.cnt FROM users u LEFT JOIN LATERAL (SELECT count(*) AS cnt FROM orders o2 WHERE o2.customer_id = u.id) o ON true

-- class: READ SELECT
-- tables: users orders
-- columns: users.id users.name orders.id orders.customer_id
SELECT users.id, users.name, count(orders.id) AS count_1 FROM users JOIN orders ON users.id = orders.customer_id GROUP BY users.id, users.name ORDER BY count_1 DESC LIMIT 5 OFFSET 10

-- class: READ SELECT
-- tables: billing.invoices
-- columns: billing.invoices.id billing.invoices.amount billing.invoices.customer_id
SELECT billing.invoices.id, billing.invoices.amount FROM billing.invoices WHERE billing.invoices.customer_id = 5

-- class: READ SELECT
-- tables: Users
-- columns: Users.id
SELECT "Users".id FROM "Users"

-- class: WRITE INSERT
-- tables: billing.invoices orders
-- columns: billing.invoices.customer_id billing.invoices.amount orders.customer_id orders.total
INSERT INTO billing.invoices (customer_id, amount) SELECT orders.customer_id, sum(orders.total) AS sum_1 FROM orders GROUP BY orders.customer_id

-- class: READ SELECT
-- tables: billing.invoices
-- columns: billing.invoices.id billing.invoices.amount billing.invoices.customer_id billing.invoices.issued_at
SELECT i.id, i.amount FROM billing.invoices i WHERE i.customer_id = $1 AND i.issued_at >= now() - interval '30 days'

-- class: WRITE INSERT
-- tables: billing.invoices
-- columns: billing.invoices.customer_id billing.invoices.amount billing.invoices.issued_at
INSERT INTO billing.invoices (customer_id, amount, issued_at) VALUES (5, 120.50, now())

-- class: READ SELECT
-- tables: users orders
-- columns: users.name users.id orders.customer_id
SELECT u.name, (SELECT count(*) FROM orders o WHERE o.customer_id = u.id) AS n FROM users u

-- class: READ SELECT
-- tables: users
-- columns: users.id users.email
SELECT users.id, users.email FROM users WHERE users.email = ANY($1::text[]) AND users.id > $2 ORDER BY users.id LIMIT $3

-- class: READ SELECT
-- tables: users
-- columns: users.id users.created_at
SELECT users.id FROM users WHERE users.created_at BETWEEN '2024-01-01 00:00:00' AND '2024-12-31 23:59:59'

-- class: WRITE UPDATE
-- tables: orders
-- columns: orders.status orders.id
UPDATE orders SET status=$1 WHERE orders.id IN ($2, $3, $4)
