-- Per-item partial aggregates over one part of the users (features/parts.py): every part's
-- rows are summed by item_features.sql. Users are split by partition, so distinct-user counts
-- of different parts add up. Ratings are summed as DECIMAL(18,6) (exact integer arithmetic), so
-- the merged mean and deviation do not depend on how the users were split or on thread order.
-- raw_interactions holds each event once: (user_id, item_id, timestamp, event_type), the
-- latest ingested batch winning (features/snapshot.py, "Event identity").
SELECT
    e.item_id,
    COUNT(*) AS n_interactions,
    COUNT(DISTINCT e.user_id) AS n_users,
    COUNT(DISTINCT e.user_id) FILTER (WHERE e."timestamp" > p.as_of - TO_DAYS(p.recent_days))
        AS n_recent_users,
    COUNT(e.rating) AS n_ratings,
    SUM(CAST(e.rating AS DECIMAL(18, 6))) AS rating_sum,
    SUM(CAST(e.rating AS DECIMAL(18, 6)) * CAST(e.rating AS DECIMAL(18, 6))) AS rating_sum_sq,
    MIN(e."timestamp") AS first_ts,
    MAX(e."timestamp") AS last_ts
FROM raw_interactions AS e
CROSS JOIN build_params AS p
GROUP BY e.item_id
