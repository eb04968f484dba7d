-- Provider outages (docs/engine.md#provider-outages): each retry, switch to a fallback provider,
-- reconnect of speech recognition, stage that gave up and the carrier's last word, as a JSON
-- array.
alter table calls add column provider_events text not null default '[]';
