-- Every attempt to deliver a customer webhook about a call (docs/engine.md#webhooks), shown on the
-- call as webhook_deliveries. Deleting the call deletes its attempts.
create table webhook_deliveries (
    delivery_id text primary key,
    call_id text not null references calls (call_id) on delete cascade,
    event text not null,
    event_id text not null,
    url text not null,
    attempt integer not null,
    attempted_at text not null,
    status_code integer,
    latency_ms real,
    error text,
    delivered integer not null
);
create index webhook_deliveries_call on webhook_deliveries (call_id, attempted_at);
