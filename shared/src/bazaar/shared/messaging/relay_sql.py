"""The relay's SQL on the outbox: claim a batch (stubborn rows apart), mark, measure, prune."""

#: A row that failed this many times is stubborn (a broken binding, say, not an outage)…
STUBBORN_ATTEMPTS = 5
#: …and stubborn rows are retried at most this many per batch, beside the others.
RETRIES_PER_BATCH = 10

# SKIP LOCKED: replicas take disjoint batches instead of queueing behind each other.
# Stubborn rows are claimed apart, so they can never fill every batch and stall the events
# behind them; rows that failed a few times (a broker outage) keep their place in line.
CLAIM_BATCH = """
WITH fresh AS (
    SELECT id, position, type, event, traceparent FROM outbox
    WHERE published_at IS NULL AND attempts < $3 ORDER BY position LIMIT $1
    FOR UPDATE SKIP LOCKED
), retried AS (
    SELECT id, position, type, event, traceparent FROM outbox
    WHERE published_at IS NULL AND attempts >= $3 ORDER BY position LIMIT $2
    FOR UPDATE SKIP LOCKED
)
SELECT id, position, type, event, traceparent, false AS retried FROM fresh
UNION ALL
SELECT id, position, type, event, traceparent, true AS retried FROM retried
ORDER BY position
"""
MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])"
MARK_FAILED = """
UPDATE outbox SET attempts = attempts + 1, last_error = f.error
FROM unnest($1::uuid[], $2::text[]) AS f(id, error) WHERE outbox.id = f.id
"""
OLDEST_PENDING_AGE = """
SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM (
    SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY position LIMIT 1
) AS oldest
"""
PRUNE_PUBLISHED = """
DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)
"""
