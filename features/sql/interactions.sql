-- One row per (user, item): the confidence weight the model trains on.
-- Per event: base = weight, else rating, else 1, times an event-type multiplier
-- (purchase 3, like / add_to_cart 2, others 1); weight = sum over events of base x decay, where
-- decay = 0.5 ^ (age in days at the snapshot's as-of time / half_life_days), floored at 1e-6 so an
-- old pair keeps a positive weight. half_life_days <= 0 turns the decay off (decay = 1).
-- raw_interactions holds each event once: (user_id, item_id, timestamp, event_type), the
-- latest ingested batch winning (features/snapshot.py, "Event identity").
WITH events AS (
    SELECT
        e.user_id,
        e.item_id,
        e."timestamp",
        e.rating,
        COALESCE(e.weight, e.rating, 1.0) * CASE e.event_type
            WHEN 'purchase' THEN 3.0
            WHEN 'add_to_cart' THEN 2.0
            WHEN 'like' THEN 2.0
            ELSE 1.0 END AS base_weight,
        CASE WHEN p.half_life_days > 0
            THEN GREATEST(POW(0.5, GREATEST(EPOCH(p.as_of) - EPOCH(e."timestamp"), 0)
                                   / 86400.0 / p.half_life_days), 1e-6)
            ELSE 1.0 END AS decay
    FROM raw_interactions AS e
    CROSS JOIN build_params AS p
)
SELECT
    user_id,
    item_id,
    CAST(FSUM(base_weight * decay) AS FLOAT) AS weight,
    CAST(FSUM(base_weight) AS FLOAT) AS raw_weight,
    CAST(COUNT(*) AS INTEGER) AS n_events,
    CAST(AVG(rating) AS FLOAT) AS mean_rating,
    MIN("timestamp") AS first_ts,
    MAX("timestamp") AS last_ts
FROM events
GROUP BY user_id, item_id
HAVING FSUM(base_weight) > 0
ORDER BY user_id, item_id
