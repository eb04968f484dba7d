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
-- An update is tallied as the old row taken away and the new one added.

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
    select account_id, cast(strftime('%s', started_at) as integer) / 3600, count(*) from calls
    group by account_id, cast(strftime('%s', started_at) as integer) / 3600;

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

drop trigger calls_counted_on_insert;
drop trigger calls_counted_on_delete;

create trigger calls_counted_on_insert after insert on calls
begin
    insert into call_counts (account_id, total, inbound, happy, neutral, frustrated, successful, unsuccessful, voicemail)
        values (new.account_id, 1,
            case when new.direction = 'inbound' then 1 else 0 end,
            case when new.caller_sentiment = 'happy' then 1 else 0 end,
            case when new.caller_sentiment = 'neutral' then 1 else 0 end,
            case when new.caller_sentiment = 'frustrated' then 1 else 0 end,
            case when new.call_successful then 1 else 0 end,
            case when not new.call_successful then 1 else 0 end,
            case when new.voicemail_detected then 1 else 0 end)
        on conflict (account_id) do update set total = total + 1, inbound = inbound + excluded.inbound,
            happy = happy + excluded.happy, neutral = neutral + excluded.neutral,
            frustrated = frustrated + excluded.frustrated, successful = successful + excluded.successful,
            unsuccessful = unsuccessful + excluded.unsuccessful, voicemail = voicemail + excluded.voicemail;
    insert into call_agent_counts (account_id, agent_id, total)
        select new.account_id, new.agent_id, 1 where new.agent_id is not null
        on conflict (account_id, agent_id) do update set total = total + 1;
    insert into call_hour_counts (account_id, hour, total)
        values (new.account_id, cast(strftime('%s', new.started_at) as integer) / 3600, 1)
        on conflict (account_id, hour) do update set total = total + 1;
end;

create trigger calls_counted_on_delete after delete on calls
begin
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
        where account_id = old.account_id and hour = cast(strftime('%s', old.started_at) as integer) / 3600;
end;

create trigger calls_counted_on_update after update of agent_id, direction, caller_sentiment, call_successful,
    voicemail_detected, started_at on calls
    when old.agent_id is not new.agent_id or old.direction is not new.direction
        or old.caller_sentiment is not new.caller_sentiment or old.call_successful is not new.call_successful
        or old.voicemail_detected is not new.voicemail_detected or old.started_at is not new.started_at
begin
    update call_counts set
        inbound = inbound - case when old.direction = 'inbound' then 1 else 0 end
            + case when new.direction = 'inbound' then 1 else 0 end,
        happy = happy - case when old.caller_sentiment = 'happy' then 1 else 0 end
            + case when new.caller_sentiment = 'happy' then 1 else 0 end,
        neutral = neutral - case when old.caller_sentiment = 'neutral' then 1 else 0 end
            + case when new.caller_sentiment = 'neutral' then 1 else 0 end,
        frustrated = frustrated - case when old.caller_sentiment = 'frustrated' then 1 else 0 end
            + case when new.caller_sentiment = 'frustrated' then 1 else 0 end,
        successful = successful - case when old.call_successful then 1 else 0 end
            + case when new.call_successful then 1 else 0 end,
        unsuccessful = unsuccessful - case when not old.call_successful then 1 else 0 end
            + case when not new.call_successful then 1 else 0 end,
        voicemail = voicemail - case when old.voicemail_detected then 1 else 0 end
            + case when new.voicemail_detected then 1 else 0 end
        where account_id = new.account_id;
    update call_agent_counts set total = total - 1
        where account_id = old.account_id and agent_id = old.agent_id and old.agent_id is not new.agent_id;
    insert into call_agent_counts (account_id, agent_id, total)
        select new.account_id, new.agent_id, 1 where new.agent_id is not null and old.agent_id is not new.agent_id
        on conflict (account_id, agent_id) do update set total = total + 1;
    update call_hour_counts set total = total - 1
        where account_id = old.account_id and hour = cast(strftime('%s', old.started_at) as integer) / 3600
        and cast(strftime('%s', old.started_at) as integer) / 3600 <> cast(strftime('%s', new.started_at) as integer) / 3600;
    insert into call_hour_counts (account_id, hour, total)
        select new.account_id, cast(strftime('%s', new.started_at) as integer) / 3600, 1
        where cast(strftime('%s', old.started_at) as integer) / 3600 <> cast(strftime('%s', new.started_at) as integer) / 3600
        on conflict (account_id, hour) do update set total = total + 1;
end;
