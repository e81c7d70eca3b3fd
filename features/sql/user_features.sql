-- Per-user activity aggregates, joined to the user's attributes.
WITH activity AS (
    SELECT
        user_id,
        CAST(COUNT(*) AS INTEGER) AS n_interactions,
        CAST(COUNT(DISTINCT item_id) AS INTEGER) AS n_items,
        CAST(AVG(rating) AS FLOAT) AS mean_rating,
        MIN("timestamp") AS first_ts,
        MAX("timestamp") AS last_ts
    FROM raw_interactions
    GROUP BY user_id
)
SELECT
    u.*,
    COALESCE(a.n_interactions, 0) AS n_interactions,
    COALESCE(a.n_items, 0) AS n_items,
    a.mean_rating,
    a.first_ts,
    a.last_ts
FROM raw_users AS u
LEFT JOIN activity AS a USING (user_id)
ORDER BY u.user_id
