-- Per-item popularity and rating aggregates, joined to the item's attributes.
WITH activity AS (
    SELECT
        item_id,
        CAST(COUNT(*) AS INTEGER) AS n_interactions,
        CAST(COUNT(DISTINCT user_id) AS INTEGER) AS n_users,
        CAST(AVG(rating) AS FLOAT) AS mean_rating,
        MIN("timestamp") AS first_ts,
        MAX("timestamp") AS last_ts
    FROM raw_interactions
    GROUP BY item_id
)
SELECT
    i.*,
    COALESCE(a.n_interactions, 0) AS n_interactions,
    COALESCE(a.n_users, 0) AS n_users,
    a.mean_rating,
    a.first_ts,
    a.last_ts,
    CAST(RANK() OVER (ORDER BY COALESCE(a.n_users, 0) DESC) AS INTEGER) AS popularity_rank
FROM raw_items AS i
LEFT JOIN activity AS a USING (item_id)
ORDER BY i.item_id
