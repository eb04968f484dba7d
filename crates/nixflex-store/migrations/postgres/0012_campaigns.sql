-- Voice batch campaigns (docs/campaigns.md). A campaign's prompt and each recipient's variables,
-- prompt override and metadata are sealed under the master key. A recipient becomes a call by a
-- claim (status 'pending' -> 'calling' with its call_id) in the same transaction that creates the
-- call, so a recipient is never given two calls (docs/campaigns.md#exactly-once).
create table campaigns (
    campaign_id text primary key,
    account_id text not null references accounts (account_id) on delete cascade,
    agent_id text not null,
    name text,
    from_number text not null,
    prompt_sealed text not null,
    status text not null,
    schedule_type text not null,
    scheduled_date text,
    scheduled_at timestamptz,
    window_start bigint not null,
    window_end bigint not null,
    window_days text not null,
    timezone text not null,
    max_concurrent bigint,
    max_attempts bigint not null,
    retry_delay_minutes bigint not null,
    metadata jsonb,
    recipients_count bigint not null,
    invalid jsonb not null,
    failure_reason text,
    launched_at timestamptz,
    completed_at timestamptz,
    created_at timestamptz not null,
    updated_at timestamptz not null
);
create index campaigns_list on campaigns (account_id, created_at desc, campaign_id desc);
create table campaign_recipients (
    campaign_id text not null references campaigns (campaign_id) on delete cascade,
    row_index bigint not null,
    phone text not null,
    data_sealed text,
    status text not null,
    attempts bigint not null default 0,
    call_id text,
    outcome text,
    ended_reason text,
    next_attempt_at timestamptz,
    updated_at timestamptz not null,
    primary key (campaign_id, row_index)
);
create index campaign_recipients_status on campaign_recipients (campaign_id, status, row_index);
create index calls_campaign on calls (campaign_id, call_status) where campaign_id is not null;
-- The carrier's calls-per-second limit, shared by every node: the next free dial slot per
-- carrier account.
create table carrier_pacing (
    pacing_key text primary key,
    next_at timestamptz not null
);
