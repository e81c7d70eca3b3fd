-- Per-item popularity, rating statistics, genres and age, joined to the item's attributes
-- (latest known row). Ages are measured from the snapshot's as-of time.
-- raw_interactions holds each event once: (user_id, item_id, timestamp, event_type), the
-- latest ingested batch winning (features/snapshot.py, "Event identity").
WITH activity AS (
    SELECT
        e.item_id,
        CAST(COUNT(*) AS INTEGER) AS n_interactions,
        CAST(COUNT(DISTINCT e.user_id) AS INTEGER) AS n_users,
        CAST(COUNT(DISTINCT e.user_id) FILTER (WHERE e."timestamp" > p.as_of - TO_DAYS(p.recent_days))
            AS INTEGER) AS n_recent_users,
        CAST(AVG(e.rating) AS FLOAT) AS mean_rating,
        CAST(STDDEV_SAMP(e.rating) AS FLOAT) AS rating_std,
        MIN(e."timestamp") AS first_ts,
        MAX(e."timestamp") AS last_ts
    FROM raw_interactions AS e
    CROSS JOIN build_params AS p
    GROUP BY e.item_id
)
SELECT
    i.*,
    COALESCE(a.n_interactions, 0) AS n_interactions,
    COALESCE(a.n_users, 0) AS n_users,
    COALESCE(a.n_recent_users, 0) AS n_recent_users,
    a.mean_rating,
    a.rating_std,
    a.first_ts,
    a.last_ts,
    CAST(RANK() OVER (ORDER BY COALESCE(a.n_users, 0) DESC) AS INTEGER) AS popularity_rank,
    CAST(RANK() OVER (ORDER BY COALESCE(a.n_recent_users, 0) DESC) AS INTEGER)
        AS trending_rank,
    CAST((EPOCH(p.as_of) - EPOCH(a.first_ts)) / 86400.0 AS FLOAT) AS age_days,
    CAST(YEAR(p.as_of) - TRY_CAST(i.release_year AS INTEGER) AS INTEGER) AS age_years
FROM raw_items AS i
CROSS JOIN build_params AS p
LEFT JOIN activity AS a USING (item_id)
ORDER BY i.item_id
