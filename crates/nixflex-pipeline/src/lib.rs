//! Frames, processors and the provider traits of the call pipeline. No vendors, no network, no database.
