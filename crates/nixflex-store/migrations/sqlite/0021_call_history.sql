-- The caller's history with an agent (docs/engine.md#history-and-caller-context): the last calls between a
-- business number and a caller, whichever way they went. The index is keyed by the caller's
-- number and the business number (an inbound call's from/to, an outbound call's to/from), so the
-- lookup at every call's start reads only that pair's calls, newest first. The earlier index
-- (to_number, from_number) served inbound calls only: with the outbound half of the lookup the
-- planner read every call of the agent instead (15 ms at 5,000 calls, before the greeting).
drop index calls_history;
create index calls_history on calls (
    account_id,
    (case when direction = 'outbound' then to_number else from_number end),
    (case when direction = 'outbound' then from_number else to_number end),
    started_at desc
);
