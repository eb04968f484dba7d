-- Carrier recordings (docs/recordings.md#carrier-recordings): the SID of the recording the carrier
-- is making of a call, from the moment it started until it is stored here or reported failed.
-- While it is set and the call has no stored recording, the call's follow-up waits for it.
alter table calls add column carrier_recording_sid text;
