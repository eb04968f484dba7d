-- An account's own LLM and speech provider (docs/providers.md#bring-your-own-llm-and-tts); the API
-- keys are sealed under the master key and never returned.
create table account_llm (
    account_id text primary key references accounts (account_id) on delete cascade,
    endpoint text not null,
    model text not null,
    api_key_sealed text not null,
    verified_at text not null,
    created_at text not null,
    updated_at text not null
);
create table account_tts (
    account_id text primary key references accounts (account_id) on delete cascade,
    provider text not null,
    voice_id text not null,
    api_key_sealed text not null,
    verified_at text not null,
    created_at text not null,
    updated_at text not null
);
