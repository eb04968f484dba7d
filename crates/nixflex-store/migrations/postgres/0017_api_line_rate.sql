-- The API's line rate (docs/decisions.md#api-line-rate).
--
-- auth_epoch: one row whose counter moves, in the same transaction, with every change that can
-- make a cached key wrong: a key created, rotated or revoked, an account's limits changed. Each
-- node polls it and empties its key cache when it moves (docs/security.md#key-cache).
create table auth_epoch (
    id integer primary key check (id = 1),
    epoch bigint not null
);
insert into auth_epoch (id, epoch) values (1, 0);

-- GET /v1/calls: one index per documented filter, each led by the account and ending in the
-- list's order (created_at desc, call_id desc), so a filtered page and its count read only the
-- matching rows, in order. The status filter uses calls_queue (account_id, call_status,
-- created_at, call_id), read backwards; the unfiltered list uses calls_account_created.
create index calls_account_agent on calls (account_id, agent_id, created_at desc, call_id desc);
create index calls_account_direction on calls (account_id, direction, created_at desc, call_id desc);
create index calls_account_from on calls (account_id, from_number, created_at desc, call_id desc);
create index calls_account_to on calls (account_id, to_number, created_at desc, call_id desc);
create index calls_account_campaign on calls (account_id, campaign_id, created_at desc, call_id desc);
create index calls_account_started on calls (account_id, started_at);
create index calls_account_sentiment on calls (account_id, caller_sentiment, created_at desc, call_id desc);
create index calls_account_successful on calls (account_id, call_successful, created_at desc, call_id desc);
create index calls_account_voicemail on calls (account_id, voicemail_detected, created_at desc, call_id desc);

-- GET /v1/agents?is_active=…: the filter, then the list's order.
create index agents_account_active on agents (account_id, is_active, created_at desc, agent_id desc);
