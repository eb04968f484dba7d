-- Exact totals for GET /v1/calls with one documented filter, without counting the matching calls
-- on every page (docs/decisions.md#call-tallies). Kept by triggers in the same transaction as
-- every insert, delete and update of a tallied column, so they are exact on every node:
--
-- * call_counts gains a column per value of the low-cardinality filters (direction, sentiment,
--   success, voicemail); the other value of a two-valued filter is the total minus the column;
-- * call_agent_counts: the calls of each agent (agent_id);
-- * call_hour_counts: the calls that started in each hour (since/until: whole hours are summed,
--   the partial hours at either end are counted from the calls).
--
-- An update is tallied as the old row taken away and the new one added. Every trigger run
-- locks the account's call_counts row first, so concurrent writers queue in one order.

alter table call_counts add column inbound bigint not null default 0;
alter table call_counts add column happy bigint not null default 0;
alter table call_counts add column neutral bigint not null default 0;
alter table call_counts add column frustrated bigint not null default 0;
alter table call_counts add column successful bigint not null default 0;
alter table call_counts add column unsuccessful bigint not null default 0;
alter table call_counts add column voicemail bigint not null default 0;

create table call_agent_counts (
    account_id text not null references accounts (account_id) on delete cascade,
    agent_id text not null,
    total bigint not null,
    primary key (account_id, agent_id)
);

create table call_hour_counts (
    account_id text not null references accounts (account_id) on delete cascade,
    -- Whole hours since 1970-01-01T00:00:00Z of the call's started_at.
    hour bigint not null,
    total bigint not null,
    primary key (account_id, hour)
);

create function call_hour(at timestamptz) returns bigint language sql immutable as $$
    select floor(extract(epoch from at) / 3600)::bigint
$$;

lock table calls in share mode;

delete from call_counts;
insert into call_counts (account_id, total, inbound, happy, neutral, frustrated, successful, unsuccessful, voicemail)
    select account_id, count(*),
        sum(case when direction = 'inbound' then 1 else 0 end),
        sum(case when caller_sentiment = 'happy' then 1 else 0 end),
        sum(case when caller_sentiment = 'neutral' then 1 else 0 end),
        sum(case when caller_sentiment = 'frustrated' then 1 else 0 end),
        sum(case when call_successful then 1 else 0 end),
        sum(case when not call_successful then 1 else 0 end),
        sum(case when voicemail_detected then 1 else 0 end)
    from calls group by account_id;
insert into call_agent_counts (account_id, agent_id, total)
    select account_id, agent_id, count(*) from calls where agent_id is not null group by account_id, agent_id;
insert into call_hour_counts (account_id, hour, total)
    select account_id, call_hour(started_at), count(*) from calls group by account_id, call_hour(started_at);

-- GET /v1/calls lists calls by start time, newest first, and its since/until filter bounds the same
-- time: the unfiltered list, a range and each filter with a range read one index in the list's
-- order and stop after the page. Each index is led by the account and the filter, and ends in
-- the list's order (started_at desc, call_id desc).
drop index calls_account_created;
drop index calls_account_active;
drop index calls_account_started;
drop index calls_account_agent;
drop index calls_account_direction;
drop index calls_account_from;
drop index calls_account_to;
drop index calls_account_campaign;
drop index calls_account_sentiment;
drop index calls_account_successful;
drop index calls_account_voicemail;
create index calls_account_started on calls (account_id, started_at desc, call_id desc);
create index calls_account_agent on calls (account_id, agent_id, started_at desc, call_id desc);
create index calls_account_direction on calls (account_id, direction, started_at desc, call_id desc);
create index calls_account_status on calls (account_id, call_status, started_at desc, call_id desc);
create index calls_account_from on calls (account_id, from_number, started_at desc, call_id desc);
create index calls_account_to on calls (account_id, to_number, started_at desc, call_id desc);
create index calls_account_campaign on calls (account_id, campaign_id, started_at desc, call_id desc);
create index calls_account_sentiment on calls (account_id, caller_sentiment, started_at desc, call_id desc);
create index calls_account_successful on calls (account_id, call_successful, started_at desc, call_id desc);
create index calls_account_voicemail on calls (account_id, voicemail_detected, started_at desc, call_id desc);

create or replace function calls_counted() returns trigger language plpgsql as $$
begin
    if tg_op in ('DELETE', 'UPDATE') then
        update call_counts set total = total - 1,
            inbound = inbound - case when old.direction = 'inbound' then 1 else 0 end,
            happy = happy - case when old.caller_sentiment = 'happy' then 1 else 0 end,
            neutral = neutral - case when old.caller_sentiment = 'neutral' then 1 else 0 end,
            frustrated = frustrated - case when old.caller_sentiment = 'frustrated' then 1 else 0 end,
            successful = successful - case when old.call_successful then 1 else 0 end,
            unsuccessful = unsuccessful - case when not old.call_successful then 1 else 0 end,
            voicemail = voicemail - case when old.voicemail_detected then 1 else 0 end
            where account_id = old.account_id;
        update call_agent_counts set total = total - 1 where account_id = old.account_id and agent_id = old.agent_id;
        update call_hour_counts set total = total - 1
            where account_id = old.account_id and hour = call_hour(old.started_at);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into call_counts (account_id, total, inbound, happy, neutral, frustrated, successful, unsuccessful, voicemail)
            values (new.account_id, 1,
                case when new.direction = 'inbound' then 1 else 0 end,
                case when new.caller_sentiment = 'happy' then 1 else 0 end,
                case when new.caller_sentiment = 'neutral' then 1 else 0 end,
                case when new.caller_sentiment = 'frustrated' then 1 else 0 end,
                case when new.call_successful then 1 else 0 end,
                case when not new.call_successful then 1 else 0 end,
                case when new.voicemail_detected then 1 else 0 end)
            on conflict (account_id) do update set total = call_counts.total + 1,
                inbound = call_counts.inbound + excluded.inbound, happy = call_counts.happy + excluded.happy,
                neutral = call_counts.neutral + excluded.neutral,
                frustrated = call_counts.frustrated + excluded.frustrated,
                successful = call_counts.successful + excluded.successful,
                unsuccessful = call_counts.unsuccessful + excluded.unsuccessful,
                voicemail = call_counts.voicemail + excluded.voicemail;
        if new.agent_id is not null then
            insert into call_agent_counts (account_id, agent_id, total) values (new.account_id, new.agent_id, 1)
                on conflict (account_id, agent_id) do update set total = call_agent_counts.total + 1;
        end if;
        insert into call_hour_counts (account_id, hour, total) values (new.account_id, call_hour(new.started_at), 1)
            on conflict (account_id, hour) do update set total = call_hour_counts.total + 1;
    end if;
    return null;
end
$$;

create trigger calls_counted_on_update after update of agent_id, direction, caller_sentiment, call_successful,
    voicemail_detected, started_at on calls
    for each row
    when (old.agent_id is distinct from new.agent_id or old.direction is distinct from new.direction
        or old.caller_sentiment is distinct from new.caller_sentiment
        or old.call_successful is distinct from new.call_successful
        or old.voicemail_detected is distinct from new.voicemail_detected or old.started_at is distinct from new.started_at)
    execute function calls_counted();
