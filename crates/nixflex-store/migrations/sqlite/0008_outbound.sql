-- Outbound calls (docs/engine.md#outbound-calls, docs/decisions.md#outbound-purpose).
-- A queued outbound call is a `calls` row with call_status 'queued'; what dialling and the
-- conversation need beyond the record lives here. The call purpose (`prompt` + `dynamic_vars`)
-- is sealed under the master key and erased once the call's follow-up has run.
create table outbound_calls (
    call_id text primary key references calls (call_id) on delete cascade,
    account_id text not null,
    purpose_sealed text,
    voicemail_action text,
    voicemail_message text,
    dial_attempts integer not null default 0,
    created_at text not null
);
-- the capacity queue: an account's queued calls, oldest first.
create index calls_queue on calls (account_id, call_status, created_at, call_id);
-- the carrier's answering-machine verdict, and what the carrier said about an unanswered call.
alter table calls add column amd_result text;
alter table calls add column carrier_details text;
