-- calls (docs/api.md#call-object; docs/decisions.md#call-object, #call-ids). agent_id has no foreign key: past calls stay readable
-- after their agent is deleted. twilio_call_sid is unique so a retried voice webhook finds the
-- call it already created.
create table calls (
    call_id text primary key,
    account_id text not null references accounts (account_id) on delete cascade,
    agent_id text,
    direction text not null,
    from_number text not null,
    to_number text not null,
    twilio_call_sid text unique,
    call_status text not null,
    ended_reason text,
    started_at text not null,
    answered_at text,
    ended_at text,
    duration_seconds integer,
    transcript text not null,
    turns text not null,
    avg_latency_ms real,
    recording_url text,
    call_summary text,
    caller_sentiment text,
    call_successful integer,
    extracted_data text not null,
    voicemail_detected integer not null,
    campaign_id text,
    metadata text,
    cost_usd real,
    precall_reject_reason text,
    -- sha-256 of the per-call secret the media websocket must present.
    stream_token_hash text,
    -- the media session's liveness, so a crashed node's calls stop counting against the cap.
    heartbeat_at text,
    created_at text not null,
    updated_at text not null
);
create index calls_account_created on calls (account_id, created_at desc, call_id desc);
create index calls_account_active on calls (account_id, call_status);
-- history lookups: the last calls between a business number and a caller.
create index calls_history on calls (account_id, to_number, from_number, started_at desc);
