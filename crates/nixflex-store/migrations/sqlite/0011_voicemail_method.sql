-- Voicemail (docs/engine.md#voicemail): which detector decided a call reached voicemail, `amd`
-- (the carrier's answering-machine detection) or `transcript` (the engine's phrase matcher).
alter table calls add column voicemail_detection_method text;
