-- A user's volume per category moves into the user's row (a map category -> volume), which every batch rewrites
-- anyway: a trade no longer upserts a `user_categories` row of its own (about 0.85 rows per event under load, the
-- fifth-largest statement of a batch), and a user's snapshot reads one row.
ALTER TABLE users ADD COLUMN categories jsonb NOT NULL DEFAULT '{}';
UPDATE users u SET categories = c.categories
FROM (SELECT user_id, jsonb_object_agg(category, volume) AS categories FROM user_categories GROUP BY user_id) AS c
WHERE u.user_id = c.user_id;
DROP TABLE user_categories;
