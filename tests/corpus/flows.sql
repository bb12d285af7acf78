-- class: READ SELECT
-- tables: users
-- columns: users.id users.email
-- masked: '^ann\.'
SELECT id FROM users WHERE email ~* '^ann\.'

-- class: READ SELECT
-- tables: users
-- columns: users.id users.phone users.name
-- masked: '%0100'
SELECT id FROM users WHERE phone SIMILAR TO '%0100' OR name !~ 'x'

-- class: READ SELECT
-- tables: users
-- columns: users.id users.email
-- masked: 'smith'
SELECT id FROM users WHERE regexp_match(email, 'smith') IS NOT NULL

-- class: READ SELECT
-- tables: users
-- columns: users.id users.email users.name
-- masked: 'ann@x.org'
SELECT id FROM users WHERE (email, name) = ('ann@x.org', 'Ann')

-- class: WRITE UPDATE
-- tables: users
-- columns: users.phone users.name users.id
-- masked: '+1 555 0100'
UPDATE users SET (phone, name) = ('+1 555 0100', 'Ann') WHERE id = 7

-- class: WRITE INSERT
-- tables: users
-- columns: users.email
-- masked: 'ann@x.org'
WITH v(e) AS (VALUES ('ann@x.org')) INSERT INTO users (email) SELECT e FROM v

-- class: WRITE INSERT
-- tables: users
-- columns: users.id users.phone
-- masked: '+1 555 0100'
INSERT INTO users (id, phone) SELECT i, p FROM (VALUES (1, '+1 555 0100')) AS v(i, p)

-- class: WRITE UPDATE
-- tables: users
-- columns: users.phone users.id
-- masked: '+1 555 0100'
UPDATE users SET phone = v.p FROM (VALUES (7, '+1 555 0100')) AS v(i, p) WHERE users.id = v.i

-- class: WRITE DELETE
-- tables: accounts
-- columns: accounts.iban
-- masked: 'GB82WEST12345698765432'
DELETE FROM accounts USING (VALUES ('GB82WEST12345698765432')) AS v(iban) WHERE accounts.iban = v.iban

-- class: READ SELECT
-- tables: users
-- columns: users.id users.phone
-- masked: '+1 555 0100'
SELECT u.id FROM users u JOIN (VALUES ('+1 555 0100', 'x')) v(p, tag) ON u.phone = v.p

-- class: READ SELECT
-- tables: users
-- columns: users.id users.phone
-- masked: '+1 555 0100'
SELECT id FROM users WHERE phone = (SELECT '+1 555 0100')

-- class: READ SELECT
-- tables: users
-- columns: users.id users.phone
-- masked: '+1 555 0100' '+1 555 0101'
SELECT id FROM users WHERE phone IN (SELECT '+1 555 0100' UNION ALL SELECT '+1 555 0101')

-- class: READ SELECT
-- tables: users
-- columns: users.id users.data
-- masked: 'phone' '+1 555 0100'
SELECT id FROM users WHERE data->>'phone' = '+1 555 0100'

-- class: WRITE UPDATE
-- tables: users
-- columns: users.data users.id
-- masked: 'phone' '+1 555 0100'
UPDATE users SET data = jsonb_build_object('phone', '+1 555 0100') WHERE id = 3

-- class: READ SELECT
-- tables: users
-- columns: users.*
-- masked: 'name' 'Ann'
SELECT id FROM users u WHERE to_jsonb(u)->>'name' = 'Ann'

-- class: READ SELECT
-- tables: active_users users
-- columns: active_users.id users.id users.email users.data
-- masked: 42
SELECT id FROM active_users WHERE id = 42

-- class: READ SELECT
-- tables: users
-- columns: users.id users.created_at users.name
SELECT id FROM users WHERE created_at > now() - interval '7 days' AND name = 'Ann' LIMIT 10

-- class: READ SELECT
-- tables: users
-- columns: users.phone
-- masked: '+1 555 0100' 'home' 'other'
SELECT CASE phone WHEN '+1 555 0100' THEN 'home' ELSE 'other' END FROM users

-- class: READ SELECT
-- tables: users
-- columns: users.phone
-- masked: '[0-9]' 'x' 'g'
SELECT regexp_replace(phone, '[0-9]', 'x', 'g') FROM users

-- class: WRITE INSERT
-- tables: users
-- columns: users.id users.phone
-- masked: '+1 555 0100' ' ext 12'
INSERT INTO users (id, phone) VALUES (1, '+1 555 0100') ON CONFLICT (id) DO UPDATE SET phone = users.phone || ' ext 12'

-- class: READ SELECT
-- tables: orders users
-- columns: orders.total orders.customer_id orders.status users.id users.email
-- masked: '%@x.org'
SELECT o.total FROM orders o WHERE o.customer_id IN (SELECT id FROM users WHERE email LIKE '%@x.org') AND o.status = 'paid'

-- class: WRITE MERGE
-- tables: users
-- columns: users.id users.phone
-- masked: '+1 555 0100'
MERGE INTO users u USING (VALUES (1, '+1 555 0100')) v(id, p) ON u.id = v.id WHEN MATCHED THEN UPDATE SET phone = v.p WHEN NOT MATCHED THEN INSERT (id, phone) VALUES (v.id, v.p)

-- class: READ SELECT
-- tables: users
-- columns: users.email
-- masked: 'nobody'
SELECT email FROM users UNION SELECT 'nobody'

-- class: READ SELECT
-- masked: 'ann@x.org'
SELECT 'ann@x.org' AS contact

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.status orders.total
SELECT id FROM orders WHERE status ~ '^paid' AND total BETWEEN 5 AND 10 ORDER BY 1 OFFSET 20

-- class: READ SELECT
-- tables: users
-- columns: users.name users.email
-- masked: 'ann' 0
SELECT name FROM users WHERE position('ann' IN email) > 0
