//! Where records and events leave the daemon: the live trace view (text and JSON lines).
pub mod record;
pub mod trace;
