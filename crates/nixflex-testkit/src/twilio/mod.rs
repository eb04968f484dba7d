//! The Twilio emulator.
