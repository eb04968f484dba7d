-- Recordings (docs/recordings.md): a call keeps where its recording is stored, not a URL; the
-- API renders a signed URL from it on every read. The old column was never written.
alter table calls rename column recording_url to recording_location;
alter table calls add column recording_duration_s real;
-- the retention sweep: ended calls that still hold a recording, oldest first.
create index calls_recording_ended on calls (ended_at) where recording_location is not null;
-- an account's own S3-compatible bucket (docs/recordings.md#bring-your-own-bucket); the secret is
-- sealed under the master key.
create table account_storage (
    account_id text primary key references accounts (account_id) on delete cascade,
    bucket text not null,
    endpoint text,
    region text not null,
    access_key text not null,
    secret_key_sealed text not null,
    verified_at text not null,
    created_at text not null,
    updated_at text not null
);
