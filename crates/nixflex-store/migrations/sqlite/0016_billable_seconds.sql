-- Usage (docs/api.md#usage): the seconds a call is billed for when they differ from its
-- duration. A call that ended at a voicemail is billed only for the message left (0 when it hung
-- up at detection: detection seconds are not charged); null means "the duration".
alter table calls add column billable_seconds integer;
