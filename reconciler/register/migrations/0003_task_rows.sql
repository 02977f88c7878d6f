-- Tasks and assignments written by runs (docs/register.md, "What each table holds"): the
-- host that runs a task's lane keeps its rows, as it keeps its agents' rows, so both
-- tables are keyed per host. Two hosts never write the same row (each prunes and digests
-- only its own), and a lane moved to another host leaves the old host's rows to be
-- pruned by that host while the new host writes its own. An assignment is the task's
-- current holder (or the agent that reported it), one per task: history is the ledger's.

ALTER TABLE fleet.tasks DROP CONSTRAINT tasks_pkey, ADD PRIMARY KEY (tenant_id, host, task_id);
-- Why the task is in its state (waits on T1, the blocked report's note, back in the queue: ...).
ALTER TABLE fleet.tasks ADD COLUMN note text NOT NULL DEFAULT '';

-- One assignment per task and host: of rows written by hand before, the latest is kept.
DELETE FROM fleet.assignments a USING fleet.assignments b
 WHERE a.tenant_id = b.tenant_id AND a.host = b.host AND a.task_id = b.task_id
   AND (a.since, a.agent) < (b.since, b.agent);
ALTER TABLE fleet.assignments DROP CONSTRAINT assignments_pkey, ADD PRIMARY KEY (tenant_id, host, task_id);
