-- The total of GET /v1/agents (all, or by is_active) without counting the account's agents on
-- every page (docs/decisions.md#call-tallies): a running count per account, kept by a trigger in
-- the same transaction as every insert, delete and is_active change, so it is exact on every node.
create table agent_counts (
    account_id text primary key references accounts (account_id) on delete cascade,
    total bigint not null,
    active bigint not null
);

lock table agents in share mode;

insert into agent_counts (account_id, total, active)
    select account_id, count(*), sum(case when is_active then 1 else 0 end) from agents group by account_id;

create function agents_counted() returns trigger language plpgsql as $$
begin
    if tg_op in ('DELETE', 'UPDATE') then
        update agent_counts set total = total - 1, active = active - case when old.is_active then 1 else 0 end
            where account_id = old.account_id;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into agent_counts (account_id, total, active)
            values (new.account_id, 1, case when new.is_active then 1 else 0 end)
            on conflict (account_id) do update set total = agent_counts.total + 1,
                active = agent_counts.active + excluded.active;
    end if;
    return null;
end
$$;

create trigger agents_counted after insert or delete on agents
    for each row execute function agents_counted();
create trigger agents_counted_on_update after update of is_active on agents
    for each row when (old.is_active is distinct from new.is_active)
    execute function agents_counted();
