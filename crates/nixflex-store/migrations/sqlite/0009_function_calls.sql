-- Custom functions (docs/engine.md#custom-functions): every invocation during a call (name,
-- arguments, status, HTTP status, latency, offset from the answer), as a JSON array.
alter table calls add column function_calls text not null default '[]';
