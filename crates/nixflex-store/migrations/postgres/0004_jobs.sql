-- durable background jobs (docs/jobs.md). A job is claimed by taking a lease (owner + expiry);
-- a lease that expires makes the job claimable again, so a crashed node's work is taken over.
-- idempotency_key is unique: an effect is queued once however many writers ask for it.
create table jobs (
    job_id text primary key,
    kind text not null,
    payload jsonb not null,
    idempotency_key text not null unique,
    state text not null,
    run_at timestamptz not null,
    attempts bigint not null,
    max_attempts bigint not null,
    lease_owner text,
    lease_expires_at timestamptz,
    last_error text,
    created_at timestamptz not null,
    updated_at timestamptz not null
);
-- claiming: queued jobs that are due, and running jobs whose lease expired.
create index jobs_due on jobs (state, run_at);
create index jobs_lease on jobs (state, lease_expires_at);
-- the CLI's listing, newest first.
create index jobs_list on jobs (created_at desc, job_id desc);
-- purging done jobs after their retention.
create index jobs_done on jobs (state, updated_at);
-- the sweeper looks for stale sessions that never wrote their end.
create index calls_heartbeat on calls (heartbeat_at) where ended_reason is null;
