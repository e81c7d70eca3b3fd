-- One row per (user, item): the confidence weight the model trains on.
-- weight = sum over events of (explicit weight, else rating, else 1) x an event-type multiplier.
SELECT
    user_id,
    item_id,
    CAST(SUM(COALESCE(weight, rating, 1.0) * CASE event_type
        WHEN 'purchase' THEN 3.0
        WHEN 'add_to_cart' THEN 2.0
        WHEN 'like' THEN 2.0
        ELSE 1.0 END) AS FLOAT) AS weight,
    CAST(COUNT(*) AS INTEGER) AS n_events,
    CAST(AVG(rating) AS FLOAT) AS mean_rating,
    MIN("timestamp") AS first_ts,
    MAX("timestamp") AS last_ts
FROM raw_interactions
GROUP BY user_id, item_id
HAVING SUM(COALESCE(weight, rating, 1.0)) > 0
ORDER BY user_id, item_id
