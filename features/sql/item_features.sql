-- Per-item popularity, rating statistics, genres and age, joined to the item's attributes
-- (latest known row). Ages are measured from the snapshot's as-of time.
-- item_activity holds partial aggregates of item_activity.sql, one row per item and user part
-- (one part in a local build); they merge here exactly (sums of counts and DECIMAL sums).
WITH activity AS (
    SELECT
        item_id,
        CAST(SUM(n_interactions) AS INTEGER) AS n_interactions,
        CAST(SUM(n_users) AS INTEGER) AS n_users,
        CAST(SUM(n_recent_users) AS INTEGER) AS n_recent_users,
        SUM(n_ratings) AS n_ratings,
        CAST(SUM(rating_sum) AS DOUBLE) AS rating_sum,
        CAST(SUM(rating_sum_sq) AS DOUBLE) AS rating_sum_sq,
        MIN(first_ts) AS first_ts,
        MAX(last_ts) AS last_ts
    FROM item_activity
    GROUP BY item_id
)
SELECT
    i.*,
    COALESCE(a.n_interactions, 0) AS n_interactions,
    COALESCE(a.n_users, 0) AS n_users,
    COALESCE(a.n_recent_users, 0) AS n_recent_users,
    CAST(a.rating_sum / NULLIF(a.n_ratings, 0) AS FLOAT) AS mean_rating,
    -- sample standard deviation; null below two ratings, as STDDEV_SAMP
    CAST(CASE WHEN a.n_ratings > 1 THEN SQRT(GREATEST(
        (a.rating_sum_sq - a.rating_sum * a.rating_sum / a.n_ratings) / (a.n_ratings - 1), 0))
        END AS FLOAT) AS rating_std,
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
