-- class: READ SELECT
-- tables: auth_user
-- columns: auth_user.id auth_user.email
SELECT "auth_user"."id", "auth_user"."email" FROM "auth_user" WHERE "auth_user"."email" = 'a@b.com' LIMIT 21

-- class: READ SELECT
-- tables: orders auth_user
-- columns: orders.id orders.total orders.customer_id auth_user.id
SELECT "orders"."id", "orders"."total" FROM "orders" INNER JOIN "auth_user" ON ("orders"."customer_id" = "auth_user"."id") WHERE "auth_user"."id" = 5

-- class: READ SELECT
-- tables: auth_user
-- columns: auth_user.*
SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."is_superuser", "auth_user"."username", "auth_user"."first_name", "auth_user"."last_name", "auth_user"."email", "auth_user"."is_staff", "auth_user"."is_active", "auth_user"."date_joined" FROM "auth_user" WHERE "auth_user"."username" = 'admin' LIMIT 21

-- class: READ SELECT
-- tables: django_session
-- columns: django_session.*
SELECT "django_session"."session_key", "django_session"."session_data", "django_session"."expire_date" FROM "django_session" WHERE ("django_session"."expire_date" > '2024-05-01T10:00:00+00:00'::timestamptz AND "django_session"."session_key" = 'abc123xyz') LIMIT 21

-- class: READ SELECT
-- tables: auth_user
-- columns: auth_user.email
SELECT 1 AS "a" FROM "auth_user" WHERE "auth_user"."email" = 'x@y.com' LIMIT 1

-- class: READ SELECT
-- tables: blog_post
-- columns: blog_post.status
SELECT COUNT(*) AS "__count" FROM "blog_post" WHERE "blog_post"."status" = 'published'

-- class: READ SELECT
-- tables: blog_post auth_user
-- columns: blog_post.id blog_post.title blog_post.author_id blog_post.published_at auth_user.id auth_user.username
SELECT "blog_post"."id", "blog_post"."title", "blog_post"."author_id", "auth_user"."id", "auth_user"."username" FROM "blog_post" INNER JOIN "auth_user" ON ("blog_post"."author_id" = "auth_user"."id") WHERE "blog_post"."published_at" IS NOT NULL ORDER BY "blog_post"."published_at" DESC LIMIT 10 OFFSET 20

-- class: READ SELECT
-- tables: auth_group auth_user_groups
-- columns: auth_group.id auth_group.name auth_user_groups.group_id auth_user_groups.user_id
SELECT "auth_group"."id", "auth_group"."name" FROM "auth_group" INNER JOIN "auth_user_groups" ON ("auth_group"."id" = "auth_user_groups"."group_id") WHERE "auth_user_groups"."user_id" = 5

-- class: READ SELECT
-- tables: blog_comment
-- columns: blog_comment.id blog_comment.post_id blog_comment.body
SELECT "blog_comment"."id", "blog_comment"."post_id", "blog_comment"."body" FROM "blog_comment" WHERE "blog_comment"."post_id" IN (1, 2, 3, 4)

-- class: WRITE INSERT
-- tables: auth_user
-- columns: auth_user.*
INSERT INTO "auth_user" ("password", "last_login", "is_superuser", "username", "first_name", "last_name", "email", "is_staff", "is_active", "date_joined") VALUES ('pbkdf2_sha256$600000$abc$def=', NULL, false, 'bob', 'Bob', 'Smith', 'bob@example.com', false, true, '2024-05-01T10:00:00+00:00'::timestamptz) RETURNING "auth_user"."id"

-- class: WRITE UPDATE
-- tables: auth_user
-- columns: auth_user.last_login auth_user.id
UPDATE "auth_user" SET "last_login" = '2024-05-01T10:00:00+00:00'::timestamptz WHERE "auth_user"."id" = 5

-- class: WRITE DELETE
-- tables: django_session
-- columns: django_session.session_key
DELETE FROM "django_session" WHERE "django_session"."session_key" IN ('a1', 'b2')

-- class: READ SELECT
-- tables: auth_user blog_post
-- columns: auth_user.id auth_user.username blog_post.author_id
SELECT "auth_user"."id", "auth_user"."username", EXISTS(SELECT 1 AS "a" FROM "blog_post" U0 WHERE U0."author_id" = ("auth_user"."id") LIMIT 1) AS "has_posts" FROM "auth_user"

-- class: READ SELECT
-- tables: auth_user blog_post
-- columns: auth_user.id auth_user.username blog_post.id blog_post.author_id
SELECT "auth_user"."id", "auth_user"."username", COUNT("blog_post"."id") AS "post_count" FROM "auth_user" LEFT OUTER JOIN "blog_post" ON ("auth_user"."id" = "blog_post"."author_id") GROUP BY "auth_user"."id" HAVING COUNT("blog_post"."id") > 3 ORDER BY "post_count" DESC

-- class: READ SELECT
-- tables: blog_post auth_user
-- columns: blog_post.id blog_post.title blog_post.author_id auth_user.id auth_user.is_staff
SELECT "blog_post"."id", "blog_post"."title" FROM "blog_post" WHERE "blog_post"."author_id" IN (SELECT U0."id" FROM "auth_user" U0 WHERE U0."is_staff")

-- class: READ SELECT
-- tables: auth_user
-- columns: auth_user.id auth_user.email auth_user.first_name
SELECT "auth_user"."id" FROM "auth_user" WHERE (UPPER("auth_user"."email"::text) LIKE UPPER('%example%') OR "auth_user"."first_name" = 'Ann')

-- class: WRITE UPDATE
-- tables: products
-- columns: products.price products.sku
UPDATE "products" SET "price" = ("products"."price" * 1.1) WHERE "products"."sku" = 'A-1'

-- class: WRITE INSERT
-- tables: blog_comment
-- columns: blog_comment.post_id blog_comment.author_id blog_comment.body blog_comment.created_at blog_comment.id
INSERT INTO "blog_comment" ("post_id", "author_id", "body", "created_at") VALUES (1, 2, 'hi', '2024-01-01'), (1, 3, 'yo', '2024-01-02') RETURNING "blog_comment"."id"

-- class: READ SELECT
-- tables: accounts
-- columns: accounts.id accounts.balance
SELECT "accounts"."id", "accounts"."balance" FROM "accounts" WHERE "accounts"."id" = 7 FOR UPDATE

-- class: READ SELECT
-- tables: blog_post
-- columns: blog_post.status
SELECT DISTINCT "blog_post"."status" FROM "blog_post" ORDER BY "blog_post"."status" ASC

-- class: READ SELECT
-- tables: orders
-- columns: orders.created_at orders.total
SELECT DATE_TRUNC('month', "orders"."created_at" AT TIME ZONE 'UTC') AS "month", SUM("orders"."total") AS "revenue" FROM "orders" GROUP BY 1 ORDER BY 1

-- class: MISC SAVEPOINT
SAVEPOINT "s140213_x1"

-- class: MISC RELEASE
RELEASE SAVEPOINT "s140213_x1"

-- class: MISC ROLLBACK
ROLLBACK TO SAVEPOINT "s140213_x1"

-- class: MISC SET
SET TIME ZONE 'UTC'

-- class: DDL CREATE TABLE
-- tables: blog_tag
CREATE TABLE "blog_tag" ("id" bigint NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY, "name" varchar(50) NOT NULL UNIQUE)

-- class: DDL ALTER TABLE
-- tables: blog_post
ALTER TABLE "blog_post" ADD COLUMN "summary" text NULL

-- class: DDL CREATE INDEX
-- tables: blog_post blog_post_author_id_idx
CREATE INDEX "blog_post_author_id_idx" ON "blog_post" ("author_id")

-- class: DDL ALTER TABLE
-- tables: blog_post auth_user
ALTER TABLE "blog_post" ADD CONSTRAINT "blog_post_author_id_fk" FOREIGN KEY ("author_id") REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED

-- class: DDL DROP TABLE
-- tables: blog_tag
DROP TABLE "blog_tag" CASCADE

-- class: READ SELECT
-- tables: users
-- columns: users.id users.data
SELECT "users"."id" FROM "users" WHERE ("users"."data" -> 'address') @> '{"city": "Oslo"}'

-- class: READ SELECT
-- tables: blog_post
-- columns: blog_post.id blog_post.title
SELECT "blog_post"."id", "blog_post"."title" FROM "blog_post" WHERE "blog_post"."id" IN ($1, $2, $3)

-- class: READ SELECT
-- tables: products
-- columns: products.id products.name
SELECT "products"."id", "products"."name" FROM "products" ORDER BY RANDOM() ASC LIMIT 5

-- class: READ SELECT
-- tables: products
-- columns: products.*
SELECT "products"."id", "products"."sku", "products"."name", "products"."price", "products"."attrs" FROM "products" WHERE "products"."sku" = 'A-9' LIMIT 21 FOR UPDATE

-- class: READ SELECT
-- tables: orders
-- columns: orders.status orders.total
SELECT "orders"."status", COALESCE(SUM("orders"."total"), 0) AS "total_sum" FROM "orders" GROUP BY "orders"."status"

-- class: WRITE DELETE
-- tables: blog_comment
-- columns: blog_comment.post_id
DELETE FROM "blog_comment" WHERE "blog_comment"."post_id" IN (7, 8)

-- class: WRITE DELETE
-- tables: blog_post
-- columns: blog_post.id
DELETE FROM "blog_post" WHERE "blog_post"."id" IN (7, 8)

-- class: READ SELECT
-- tables: blog_post blog_comment
-- columns: blog_post.id blog_comment.body blog_comment.created_at blog_comment.post_id
SELECT "blog_post"."id", ARRAY_AGG("blog_comment"."body" ORDER BY "blog_comment"."created_at") AS "bodies" FROM "blog_post" LEFT OUTER JOIN "blog_comment" ON ("blog_post"."id" = "blog_comment"."post_id") GROUP BY "blog_post"."id"

-- class: WRITE UPDATE
-- tables: blog_post auth_user
-- columns: blog_post.status blog_post.published_at blog_post.author_id auth_user.id auth_user.is_active
UPDATE "blog_post" SET "status" = 'archived', "published_at" = NULL WHERE "blog_post"."author_id" IN (SELECT U0."id" FROM "auth_user" U0 WHERE U0."is_active" = false)
