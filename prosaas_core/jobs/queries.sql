-- The core's statements on background_jobs, one named text each (prosaas_core.store).
--
-- Every write after the claim is fenced: it carries the claim's fencing token and needs the
-- row still running, so a worker declared dead can never overwrite the outcome.
-- COALESCE(%(param)s, column): a NULL parameter leaves the column as it is.
-- JSON columns come back as text (the caller decodes them), alike on both databases.

-- insert_job --
-- A new job. Columns not named take their server defaults (attempts, processed, fence,
-- cancel_requested, timestamps).
INSERT INTO background_jobs (business_id, job_type, queue, status, payload, max_attempts,
    unique_key, run_after)
VALUES (%(business_id)s, %(job_type)s, %(queue)s, 'queued', %(payload)s, %(max_attempts)s,
    %(unique_key)s, %(run_after)s)
RETURNING id

-- insert_job_for_token --
-- insert_job for the business of the live API token with this hash (the unique index on
-- token_hash), in the same one statement: nothing is inserted and no row returned when the
-- token is unknown or revoked. The API's enqueue, authentication included, is this statement.
INSERT INTO background_jobs (business_id, job_type, queue, status, payload, max_attempts,
    unique_key, run_after)
SELECT business_id, %(job_type)s, %(queue)s, 'queued', %(payload)s, %(max_attempts)s,
    %(unique_key)s, %(run_after)s
FROM api_tokens WHERE token_hash = %(digest)s AND revoked_at IS NULL
RETURNING id, business_id

-- active_unique_job --
-- The queued or running job holding a unique_per_business key.
SELECT id, status FROM background_jobs
WHERE business_id = %(business_id)s AND unique_key = %(unique_key)s
    AND status IN ('queued', 'running')

-- claim_job --
-- Queued, due and not parked becomes running under a new fence; nothing when it is not
-- claimable (claimed already, finished, cancelled, a retry whose backoff has not elapsed).
UPDATE background_jobs
SET status = 'running', attempts = attempts + 1, fence = fence + 1, worker = %(worker)s,
    started_at = %(now)s, heartbeat_at = %(now)s, updated_at = %(now)s, run_after = NULL
WHERE id = %(id)s AND status = 'queued' AND (run_after IS NULL OR run_after <= %(now)s)
    AND parked IS NULL
RETURNING id, business_id, job_type, queue, CAST(payload AS TEXT), CAST(state AS TEXT),
    attempts, max_attempts, fence, cancel_requested

-- adopted_claim --
-- A claim whose answer was lost with its connection: the row running under our name.
SELECT id, business_id, job_type, queue, CAST(payload AS TEXT), CAST(state AS TEXT),
    attempts, max_attempts, fence, cancel_requested
FROM background_jobs
WHERE id = %(id)s AND status = 'running' AND worker = %(worker)s

-- touch_job --
-- Heartbeat with pending progress; answers the row's cancel_requested.
UPDATE background_jobs
SET heartbeat_at = %(now)s, updated_at = %(now)s,
    processed = COALESCE(%(processed)s, processed), total = COALESCE(%(total)s, total)
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
RETURNING cancel_requested

-- checkpoint_job --
-- touch_job, and the attempt's checkpoint state.
UPDATE background_jobs
SET heartbeat_at = %(now)s, updated_at = %(now)s, state = %(state)s,
    processed = COALESCE(%(processed)s, processed), total = COALESCE(%(total)s, total)
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
RETURNING cancel_requested

-- job_is_ours --
-- Whether the attempt with this fencing token still holds the running job.
SELECT 1 FROM background_jobs
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'

-- settle_job --
-- A heartbeat answering whether the row still holds the attempt's last checkpoint (%(state)s):
-- a database crash loses a checkpoint committed without waiting for the disk. This commit
-- waits for the disk, and so makes durable every earlier commit of the attempt with it.
UPDATE background_jobs
SET heartbeat_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
RETURNING COALESCE(state, CAST('{}' AS jsonb)) = CAST(%(state)s AS jsonb)

-- settle_job@sqlite --
UPDATE background_jobs
SET heartbeat_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
RETURNING COALESCE(state, '{}') = %(state)s

-- finish_job --
-- The outcome: succeeded, failed or cancelled.
UPDATE background_jobs
SET status = %(status)s, result = %(result)s, error = %(error)s, finished_at = %(now)s,
    updated_at = %(now)s, heartbeat_at = %(now)s,
    processed = COALESCE(%(processed)s, processed), total = COALESCE(%(total)s, total)
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'

-- requeue_job --
-- Back to queued: a retry due at run_after, or (refund 1) an interrupted attempt that does
-- not count.
UPDATE background_jobs
SET status = 'queued', worker = NULL, updated_at = %(now)s, run_after = %(run_after)s,
    error = COALESCE(%(error)s, error), attempts = attempts - %(refund)s,
    processed = COALESCE(%(processed)s, processed), total = COALESCE(%(total)s, total)
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'

-- park_job --
-- Handed back unrun at a flow limit: queued outside Redis, the attempt not counted, the
-- reason shown to operators, looked at again at run_after.
UPDATE background_jobs
SET status = 'queued', worker = NULL, updated_at = %(now)s, run_after = %(run_after)s,
    parked = %(parked)s, attempts = attempts - 1
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'

-- job_outcome --
-- A job's status and fence: did an outcome whose answer was lost with its connection go through?
SELECT status, fence FROM background_jobs WHERE id = %(id)s
