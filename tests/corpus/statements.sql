-- Real-world-style statements; expectations in expected.json are keyed by line order.
SELECT "auth_user"."id", "auth_user"."email" FROM "auth_user" WHERE "auth_user"."email" = 'a@b.com' LIMIT 21
SELECT "orders"."id", "orders"."total" FROM "orders" INNER JOIN "auth_user" ON ("orders"."customer_id" = "auth_user"."id") WHERE "auth_user"."id" = 5
SELECT users_1.id, users_1.email FROM users AS users_1 WHERE users_1.id = $1
WITH recent AS (SELECT customer_id, sum(total) AS s FROM orders GROUP BY customer_id) SELECT u.email, r.s FROM users u JOIN recent r ON r.customer_id = u.id
SELECT id, row_number() OVER (PARTITION BY customer_id ORDER BY total DESC) FROM orders
INSERT INTO users (id, email) VALUES (1, 'x@y.com') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email RETURNING id
UPDATE users SET phone = $1 WHERE id = $2
DELETE FROM orders WHERE customer_id = 3 RETURNING *
SELECT data->>'city' FROM users WHERE data @> '{"vip": true}'
COPY users (id, email) FROM STDIN
CREATE TABLE audit_tmp (id int)
GRANT SELECT ON users TO reporting
SELECT * FROM users
BEGIN
