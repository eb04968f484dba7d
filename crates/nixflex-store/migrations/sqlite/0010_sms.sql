-- sms messages (docs/sms.md): every text sent or received through an imported number, inbound and
-- outbound, one row each. agent_id has no foreign key, like calls: the log outlives its agent.
-- twilio_sid is unique, so a retried inbound webhook finds the message it already logged;
-- send_key is unique, so a send that must happen once (the reply to one inbound text, the text
-- after one call) is written once however often its job runs.
create table sms_messages (
    message_id text primary key,
    account_id text not null references accounts (account_id) on delete cascade,
    agent_id text,
    direction text not null,
    business_number text not null,
    customer_number text not null,
    body text not null,
    status text not null,
    -- position of status in its lifecycle; callbacks only ever raise it (docs/sms.md#statuses).
    status_rank integer not null,
    twilio_sid text unique,
    segments integer not null,
    error_code integer,
    error_message text,
    reply_context text,
    source text not null,
    send_key text unique,
    metadata text,
    created_at text not null,
    updated_at text not null
);
create index sms_messages_account on sms_messages (account_id, created_at desc, message_id desc);
-- threads: the messages between one business number and one customer, newest first.
create index sms_messages_thread on sms_messages (account_id, business_number, customer_number, created_at desc);

-- opt-outs (docs/sms.md#opt-outs): a customer who texted STOP to any of an account's numbers gets
-- nothing from that account until they text START.
create table sms_opt_outs (
    account_id text not null references accounts (account_id) on delete cascade,
    phone_number text not null,
    created_at text not null,
    primary key (account_id, phone_number)
);
