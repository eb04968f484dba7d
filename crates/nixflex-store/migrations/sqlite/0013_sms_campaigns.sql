-- sms campaigns (docs/sms.md#campaigns): one template sent to up to 10,000 recipients from one
-- number. Counts are not stored: they are computed from the recipient rows and their messages.
create table sms_campaigns (
    campaign_id text primary key,
    account_id text not null references accounts (account_id) on delete cascade,
    agent_id text not null,
    from_number text not null,
    name text not null,
    message_template text not null,
    -- draft | scheduled | running | done | failed
    status text not null,
    source text not null,
    scheduled_at text,
    started_at text,
    completed_at text,
    cancelled_at text,
    created_at text not null,
    updated_at text not null
);
create index sms_campaigns_account on sms_campaigns (account_id, created_at desc, campaign_id desc);

-- one row per recipient. state: queued (not yet taken) → claimed (committed before the text is
-- handed to Twilio; a claimed row found by a later run is reconciled, never blindly resent) →
-- sent | opted_out | failed; queued → cancelled. send_key is the message's send key, so the
-- recipient's text is the one sms_messages row under that key.
create table sms_campaign_recipients (
    campaign_id text not null references sms_campaigns (campaign_id) on delete cascade,
    position integer not null,
    phone text not null,
    variables text not null,
    rendered_message text not null,
    state text not null,
    send_key text not null unique,
    error_message text,
    claimed_at text,
    sent_at text,
    primary key (campaign_id, position)
);
create index sms_campaign_recipients_state on sms_campaign_recipients (campaign_id, state, position);

-- pacing per sending number, shared by every node (docs/sms.md#campaigns): the earliest time
-- the next text from this number may be handed to Twilio.
create table sms_send_pacing (
    phone_number text primary key,
    next_at text not null
);
