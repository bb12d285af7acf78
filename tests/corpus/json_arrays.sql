-- class: READ SELECT
-- tables: users
-- columns: users.data
SELECT data->>'city' AS city, count(*) FROM users GROUP BY data->>'city'

-- class: READ SELECT
-- tables: users
-- columns: users.id users.data
SELECT id FROM users WHERE data @> '{"plan": "pro"}'::jsonb

-- class: READ SELECT
-- tables: products
-- columns: products.id products.attrs
SELECT p.id, p.attrs->'dims'->>'w' FROM products p WHERE p.attrs ? 'dims'

-- class: WRITE UPDATE
-- tables: users
-- columns: users.data users.id
UPDATE users SET data = jsonb_set(data, '{address,city}', '"Berlin"') WHERE id = 9

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.total orders.customer_id
SELECT jsonb_agg(jsonb_build_object('id', o.id, 'total', o.total)) FROM orders o WHERE o.customer_id = 4

-- class: READ SELECT
-- tables: orders
-- columns: orders.items
SELECT items #>> '{0,sku}' FROM orders WHERE items @> '[{"sku": "A-1"}]'

-- class: READ SELECT
-- tables: users
-- columns: users.id users.data
SELECT u.id, e.value FROM users u, jsonb_each_text(u.data) AS e WHERE e.key = 'plan'

-- class: READ SELECT
-- tables: products
-- columns: products.id products.attrs
SELECT id FROM products WHERE attrs->>'color' = ANY(ARRAY['red', 'blue'])

-- class: WRITE UPDATE
-- tables: users
-- columns: users.data
UPDATE users SET data = data - 'legacy' || '{"migrated": true}'::jsonb WHERE data ? 'legacy'

-- class: READ SELECT
-- tables: orders
-- columns: orders.items orders.id
SELECT jsonb_path_query(items, '$[*].sku') FROM orders WHERE id = 1

-- class: READ SELECT
-- tables: blog_post
-- columns: blog_post.id blog_post.metadata
SELECT id, metadata #> '{author,name}' FROM blog_post WHERE metadata ?| array['author', 'editor']

-- class: READ SELECT
-- tables: blog_post
-- columns: blog_post.id blog_post.metadata
SELECT id FROM blog_post WHERE jsonb_typeof(metadata->'tags') = 'array' AND (metadata->>'views')::int > 100

-- class: READ SELECT
-- tables: products
-- columns: products.sku products.attrs
SELECT sku, jsonb_array_length(attrs->'images') FROM products WHERE attrs @? '$.images[*] ? (@.primary == true)'

-- class: READ SELECT
-- tables: users
-- columns: users.data users.id
SELECT to_jsonb(u.data) - 'password' FROM users u WHERE u.id = $1

-- class: READ SELECT
-- tables: users
-- columns: users.id users.tags
SELECT id FROM users WHERE 'vip' = ANY(tags)

-- class: READ SELECT
-- tables: users
-- columns: users.id users.tags
SELECT id, tags FROM users WHERE tags && ARRAY['a', 'b']::text[]

-- class: WRITE UPDATE
-- tables: users
-- columns: users.tags users.id
UPDATE users SET tags = array_append(tags, 'beta') WHERE id = 3

-- class: READ SELECT
-- tables: users
-- columns: users.tags
SELECT unnest(tags) AS tag, count(*) FROM users GROUP BY 1

-- class: READ SELECT
-- tables: blog_post
-- columns: blog_post.id blog_post.tags
SELECT id FROM blog_post WHERE tags @> ARRAY['pg']

-- class: READ SELECT
-- tables: users
-- columns: users.id users.tags
SELECT u.id, t.tag FROM users u CROSS JOIN LATERAL unnest(u.tags) AS t(tag)

-- class: READ SELECT
-- tables: orders
-- columns: orders.id orders.customer_id
SELECT array_agg(id ORDER BY id) FROM orders WHERE customer_id = 5

-- class: READ SELECT
-- tables: orders
-- columns: orders.*
SELECT * FROM orders WHERE id = ANY('{1,2,3}'::int[])

-- class: READ SELECT
-- tables: users
-- columns: users.tags users.id
SELECT tags[1], array_length(tags, 1), cardinality(tags) FROM users WHERE id = 2

-- class: WRITE UPDATE
-- tables: blog_post
-- columns: blog_post.tags blog_post.id
UPDATE blog_post SET tags = array_remove(tags, 'draft') WHERE id = ANY(ARRAY[1, 2, 3])

-- class: READ SELECT
-- tables: users
-- columns: users.id users.tags
SELECT id FROM users WHERE tags <@ '{a,b,c}'
