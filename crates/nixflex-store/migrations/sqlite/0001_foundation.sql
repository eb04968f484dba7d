-- accounts own every resource; keys only authenticate (docs/decisions.md#keys-and-accounts).
-- timestamps are rfc 3339 utc text (sqlx's encoding of DateTime<Utc>), which sorts correctly.
create table accounts (
    account_id text primary key,
    name text,
    email text,
    created_at text not null,
    -- per-account overrides of the server defaults; null = use the server default.
    max_concurrent_calls integer,
    rate_limit_reads integer,
    rate_limit_writes integer
);

-- secret_hash verifies requests (sha-256 of a 256-bit secret); secret_sealed is the aead-encrypted
-- secret, needed to sign webhooks with the raw key_secret (docs/protocols.md#nixflex-signatures).
create table api_keys (
    key_id text primary key,
    account_id text not null references accounts (account_id) on delete cascade,
    name text,
    secret_hash text not null,
    secret_sealed text not null,
    created_at text not null,
    rotated_at text,
    revoked_at text
);
create index api_keys_account on api_keys (account_id, created_at);

-- the agent's settings are one json document: the engine snapshots it at call start and never
-- queries inside it. version guards read-modify-write updates (optimistic concurrency).
create table agents (
    agent_id text primary key,
    account_id text not null references accounts (account_id) on delete cascade,
    api_key_id text not null,
    name text not null,
    is_active integer not null,
    settings text not null,
    version integer not null default 1,
    created_at text not null,
    updated_at text not null
);
create index agents_account_created on agents (account_id, created_at desc, agent_id desc);

-- fixed-window request counters shared by all nodes; one row per bucket, reset when the window moves.
create table rate_limits (
    bucket text primary key,
    window_start integer not null,
    count integer not null,
    expires_at integer not null
);
create index rate_limits_expiry on rate_limits (expires_at);

-- idempotency records (docs/decisions.md#idempotency): one per (scope, method, path, key). state is in_flight while
-- the first request runs (locked_until = its lease), then done with the stored response.
create table idempotency_keys (
    scope text not null,
    method text not null,
    path text not null,
    idem_key text not null,
    fingerprint text not null,
    state text not null,
    status_code integer,
    content_type text,
    response_body blob,
    created_at integer not null,
    locked_until integer not null,
    primary key (scope, method, path, idem_key)
);
create index idempotency_keys_created on idempotency_keys (created_at);

-- server-wide facts, e.g. a value sealed under the master key to detect a wrong key at start.
create table server_meta (
    key text primary key,
    value text not null
);
