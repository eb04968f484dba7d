-- The total of GET /v1/agents (all, or by is_active) without counting the account's agents on
-- every page (docs/decisions.md#call-tallies): a running count per account, kept by triggers in
-- the same transaction as every insert, delete and is_active change, so it is exact on every node.
create table agent_counts (
    account_id text primary key references accounts (account_id) on delete cascade,
    total bigint not null,
    active bigint not null
);
insert into agent_counts (account_id, total, active)
    select account_id, count(*), sum(case when is_active then 1 else 0 end) from agents group by account_id;

create trigger agents_counted_on_insert after insert on agents
begin
    insert into agent_counts (account_id, total, active)
        values (new.account_id, 1, case when new.is_active then 1 else 0 end)
        on conflict (account_id) do update set total = total + 1, active = active + excluded.active;
end;

create trigger agents_counted_on_delete after delete on agents
begin
    update agent_counts set total = total - 1, active = active - case when old.is_active then 1 else 0 end
        where account_id = old.account_id;
end;

create trigger agents_counted_on_update after update of is_active on agents
    when old.is_active is not new.is_active
begin
    update agent_counts set active = active - case when old.is_active then 1 else 0 end
        + case when new.is_active then 1 else 0 end
        where account_id = new.account_id;
end;
