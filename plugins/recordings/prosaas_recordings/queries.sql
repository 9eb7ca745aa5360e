-- The recordings plugin's statements, one named text each, run through prosaas_core.store.Db.
--
-- A task is due when queued and its run_after has come, or running under a lease that
-- expired (its worker died). Every write a worker makes to a claimed task carries the fence
-- it got with the claim and needs status 'running': once the task was claimed again or put
-- back, the old claim's writes match no row.
-- %(held)s is a JSON object {"business id": tasks the worker holds}.

-- create_task --
-- A queued download, due now; nothing when the recording has one already.
INSERT INTO recording_tasks (business_id, call_sid, recording_sid, recording_url, duration,
    status, attempts, fence, run_after, created_at, updated_at)
VALUES (%(business_id)s, %(call_sid)s, %(recording_sid)s, %(recording_url)s, %(duration)s,
    'queued', 0, 0, %(ts)s, %(ts)s, %(ts)s)
ON CONFLICT (recording_sid) DO NOTHING
RETURNING id

-- create_call --
-- The call a callback names, for its business; nothing when it exists.
INSERT INTO calls (business_id, call_sid, direction, created_at, updated_at)
VALUES (%(business_id)s, %(call_sid)s, 'inbound', %(ts)s, %(ts)s)
ON CONFLICT (call_sid) DO NOTHING

-- claim_tasks --
-- Up to %(limit)s due tasks become running under a lease to %(worker)s, fence and attempts
-- bumped: the oldest of every business before the second of any (round-robin), at most
-- %(per_business)s of a business less what the worker holds of it. On PostgreSQL, rows
-- another worker is claiming right now are skipped, never waited for, never taken twice.
WITH held AS (
    SELECT CAST(key AS BIGINT) AS business_id, CAST(value AS INTEGER) AS n
    FROM json_each_text(%(held)s)  --@postgresql
    FROM json_each(%(held)s)  --@sqlite
), ranked AS (
    SELECT id, row_number() OVER (PARTITION BY business_id ORDER BY run_after, id) AS rank
    FROM recording_tasks
    WHERE (status = 'queued' AND run_after <= %(ts)s)
        OR (status = 'running' AND lease_until < %(ts)s)
), picked AS (
    SELECT t.id
    FROM recording_tasks t
    JOIN ranked r ON r.id = t.id
    LEFT JOIN held h ON h.business_id = t.business_id
    WHERE r.rank <= %(per_business)s - COALESCE(h.n, 0)
        AND ((t.status = 'queued' AND t.run_after <= %(ts)s)
            OR (t.status = 'running' AND t.lease_until < %(ts)s))
    ORDER BY r.rank, t.run_after, t.id
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED  --@postgresql
)
UPDATE recording_tasks
SET status = 'running', worker = %(worker)s, lease_until = %(lease_until)s,
    fence = fence + 1, attempts = attempts + 1, updated_at = %(ts)s
WHERE id IN (SELECT id FROM picked)
RETURNING id, business_id, call_sid, recording_sid, recording_url, duration, attempts, fence,
    run_after

-- renew_leases --
-- Extend the leases of the claims in %(claims)s ({"task id": fence}); answers those held.
UPDATE recording_tasks
SET lease_until = %(lease_until)s
WHERE status = 'running' AND (id, fence) IN (
    SELECT CAST(key AS BIGINT), CAST(value AS INTEGER)
    FROM json_each_text(%(claims)s)  --@postgresql
    FROM json_each(%(claims)s)  --@sqlite
)
RETURNING id

-- complete_download --
-- The claimed task is done and its call records the file; the call only when the task was
-- still ours. Answers the task's id, or nothing when the claim was lost.
WITH done AS (
    UPDATE recording_tasks
    SET status = 'done', file_path = %(path)s, bytes = %(size)s, last_error = NULL,
        lease_until = NULL, finished_at = %(ts)s, updated_at = %(ts)s
    WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
    RETURNING id
), call AS (
    UPDATE calls
    SET recording_sid = %(recording_sid)s, recording_status = 'downloaded',
        recording_path = %(path)s, recording_bytes = %(size)s,
        recording_duration = %(duration)s, recording_error = NULL, updated_at = %(ts)s
    WHERE call_sid = %(call_sid)s AND business_id = %(business_id)s
        AND EXISTS (SELECT 1 FROM done)
)
SELECT id FROM done

-- complete_download@sqlite --
-- SQLite has no data-modifying CTE: the same two writes in one transaction, the call first
-- (while the task still shows whether the claim is ours).
UPDATE calls
SET recording_sid = %(recording_sid)s, recording_status = 'downloaded',
    recording_path = %(path)s, recording_bytes = %(size)s,
    recording_duration = %(duration)s, recording_error = NULL, updated_at = %(ts)s
WHERE call_sid = %(call_sid)s AND business_id = %(business_id)s
    AND EXISTS (SELECT 1 FROM recording_tasks
                WHERE id = %(id)s AND fence = %(fence)s AND status = 'running');
UPDATE recording_tasks
SET status = 'done', file_path = %(path)s, bytes = %(size)s, last_error = NULL,
    lease_until = NULL, finished_at = %(ts)s, updated_at = %(ts)s
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
RETURNING id

-- fail_download --
-- A permanent failure, on the task and its call; the call only when the task was still ours.
-- Answers the task's id, or nothing when the claim was lost.
WITH failed AS (
    UPDATE recording_tasks
    SET status = 'failed', last_error = %(error)s, lease_until = NULL, finished_at = %(ts)s,
        updated_at = %(ts)s
    WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
    RETURNING id
), call AS (
    UPDATE calls
    SET recording_status = 'failed', recording_error = %(error)s, updated_at = %(ts)s
    WHERE call_sid = %(call_sid)s AND business_id = %(business_id)s
        AND EXISTS (SELECT 1 FROM failed)
)
SELECT id FROM failed

-- fail_download@sqlite --
UPDATE calls
SET recording_status = 'failed', recording_error = %(error)s, updated_at = %(ts)s
WHERE call_sid = %(call_sid)s AND business_id = %(business_id)s
    AND EXISTS (SELECT 1 FROM recording_tasks
                WHERE id = %(id)s AND fence = %(fence)s AND status = 'running');
UPDATE recording_tasks
SET status = 'failed', last_error = %(error)s, lease_until = NULL, finished_at = %(ts)s,
    updated_at = %(ts)s
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
RETURNING id

-- requeue_task --
-- Back to queued, due at run_after, lease dropped: a retry (%(error)s noted) or a task given
-- back unrun (%(refund)s 1: the attempt does not count).
UPDATE recording_tasks
SET status = 'queued', run_after = %(run_after)s, lease_until = NULL, updated_at = %(ts)s,
    last_error = COALESCE(%(error)s, last_error), attempts = attempts - %(refund)s
WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'

-- store_transcript --
UPDATE calls SET transcript = %(text)s, updated_at = %(ts)s
WHERE call_sid = %(call_sid)s AND business_id = %(business_id)s

-- count_due --
-- Due tasks nobody holds: what `prosaas doctor` reports as pending.
SELECT count(*) FROM recording_tasks
WHERE (status = 'queued' AND run_after <= %(ts)s)
    OR (status = 'running' AND lease_until < %(ts)s)
