-- numbers imported from the customer's own twilio account (docs/api.md#phone-numbers). the number is the primary
-- key: one number, one row, across all accounts. a row is 'pending' while its import is in
-- flight (it reserves the number against concurrent imports) and 'active' once twilio points at
-- us; pending rows are invisible to the api and are taken over when stale.
create table phone_numbers (
    phone_number text primary key,
    account_id text not null references accounts (account_id) on delete cascade,
    -- deleting an agent orphans its numbers (docs/decisions.md#deletes).
    agent_id text references agents (agent_id) on delete set null,
    provider text not null,
    state text not null,
    twilio_account_sid text not null,
    twilio_auth_token_sealed text not null,
    twilio_number_sid text not null,
    inbound_enabled integer not null,
    outbound_enabled integer not null,
    sms_reply_enabled integer not null,
    settings text not null,
    webhook_url text,
    webhook2_url text,
    precall_url text,
    -- the number's twilio webhook configuration before the import, for support and restore.
    previous_twilio_config text,
    version integer not null default 1,
    created_at text not null,
    updated_at text not null
);
create index phone_numbers_account on phone_numbers (account_id, created_at desc, phone_number desc);
create index phone_numbers_agent on phone_numbers (agent_id);

-- caller context (docs/api.md#caller-context): one record per (business number, caller), erased with the number.
create table callers (
    phone_number text not null references phone_numbers (phone_number) on delete cascade,
    caller_number text not null,
    context text not null,
    created_at text not null,
    updated_at text not null,
    primary key (phone_number, caller_number)
);

-- the agent-level pre-call gate (docs/api.md#pre-call-gate); not part of the agent's settings document.
alter table agents add column precall_url text;
