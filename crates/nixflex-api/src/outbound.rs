//! Requests to the customer's own endpoints. The client lives in the providers crate
//! ([`nixflex_providers::customer`]) so the call engine can use it too (the pre-call gate is
//! part of call admission); it is re-exported here for the API's handlers.

pub use nixflex_providers::customer::{CustomerHttp, CustomerHttpError, signature_header};
