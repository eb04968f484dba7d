-- The total of an unfiltered GET /v1/calls without counting the account's calls on every page
-- (docs/decisions.md#api-line-rate): a running count per account, kept by triggers in the same
-- transaction as every insert and delete, so it is exact on every node.
create table call_counts (
    account_id text primary key references accounts (account_id) on delete cascade,
    total bigint not null
);
insert into call_counts (account_id, total)
    select account_id, count(*) from calls group by account_id;

create trigger calls_counted_on_insert after insert on calls
begin
    insert into call_counts (account_id, total) values (new.account_id, 1)
        on conflict (account_id) do update set total = total + 1;
end;

create trigger calls_counted_on_delete after delete on calls
begin
    update call_counts set total = total - 1 where account_id = old.account_id;
end;
