-- Per-user activity, recency, rating statistics, genre affinity and recent items, joined to the
-- user's attributes (latest known row). Recency is measured from the snapshot's as-of time.
-- raw_interactions holds each event once: (user_id, item_id, timestamp, event_type), the
-- latest ingested batch winning (features/snapshot.py, "Event identity").
WITH activity AS (
    SELECT
        e.user_id,
        CAST(COUNT(*) AS INTEGER) AS n_interactions,
        CAST(COUNT(DISTINCT e.item_id) AS INTEGER) AS n_items,
        CAST(COUNT(*) FILTER (WHERE e.event_type = 'purchase') AS INTEGER) AS n_purchases,
        CAST(COUNT(*) FILTER (WHERE e.event_type IN ('like', 'add_to_cart')) AS INTEGER)
            AS n_likes,
        CAST(COUNT(*) FILTER (WHERE e."timestamp" > p.as_of - TO_DAYS(p.recent_days))
            AS INTEGER) AS n_recent,
        CAST(COUNT(DISTINCT CAST(e."timestamp" AS DATE)) AS INTEGER) AS active_days,
        CAST(AVG(e.rating) AS FLOAT) AS mean_rating,
        CAST(STDDEV_SAMP(e.rating) AS FLOAT) AS rating_std,
        MIN(e."timestamp") AS first_ts,
        MAX(e."timestamp") AS last_ts
    FROM raw_interactions AS e
    CROSS JOIN build_params AS p
    GROUP BY e.user_id
),
genre_counts AS (
    SELECT e.user_id, g.genre, COUNT(*) AS n
    FROM raw_interactions AS e
    JOIN item_genres AS g USING (item_id)
    GROUP BY e.user_id, g.genre
),
affinity AS (
    SELECT
        user_id,
        LIST_SLICE(LIST({'genre': genre, 'fraction': CAST(n / total AS FLOAT)}
                        ORDER BY n DESC, genre), 1, p.top_genres) AS genre_affinity
    FROM (SELECT *, SUM(n) OVER (PARTITION BY user_id) AS total FROM genre_counts)
    CROSS JOIN build_params AS p
    GROUP BY user_id, p.top_genres
),
-- the user's 20 latest distinct items by their last event (ties: item id), newest first; the
-- window keeps only 20 rows per user before the lists are built
recent AS (
    SELECT
        user_id,
        LIST({'item_id': item_id, 'last_ts': last_ts} ORDER BY last_ts DESC, item_id)
            AS recent_items
    FROM (
        SELECT user_id, item_id, MAX("timestamp") AS last_ts
        FROM raw_interactions
        GROUP BY user_id, item_id
        QUALIFY ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY last_ts DESC, item_id) <= 20
    )
    GROUP BY user_id
)
SELECT
    u.*,
    COALESCE(a.n_interactions, 0) AS n_interactions,
    COALESCE(a.n_items, 0) AS n_items,
    COALESCE(a.n_purchases, 0) AS n_purchases,
    COALESCE(a.n_likes, 0) AS n_likes,
    COALESCE(a.n_recent, 0) AS n_recent,
    COALESCE(a.active_days, 0) AS active_days,
    a.mean_rating,
    a.rating_std,
    a.first_ts,
    a.last_ts,
    CAST((EPOCH(p.as_of) - EPOCH(a.last_ts)) / 86400.0 AS FLOAT) AS days_since_last,
    COALESCE(f.genre_affinity, []) AS genre_affinity,
    COALESCE(r.recent_items, []) AS recent_items
FROM raw_users AS u
CROSS JOIN build_params AS p
LEFT JOIN activity AS a USING (user_id)
LEFT JOIN affinity AS f USING (user_id)
LEFT JOIN recent AS r USING (user_id)
ORDER BY u.user_id
