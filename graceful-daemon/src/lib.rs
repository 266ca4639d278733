//! graceful: watches, with eBPF, how containers are stopped, and says why they were SIGKILLed.
//!
//! Data flows one way: [`probes`] (kernel) -> [`events`] -> [`pipeline`] -> [`tracker`] ->
//! [`record`] -> [`enrich`] -> [`export`].
pub mod audit;
pub mod cgroup;
pub mod check;
pub mod clock;
pub mod daemon;
pub mod demo;
pub mod enrich;
pub mod events;
pub mod export;
pub mod identity;
pub mod pipeline;
pub mod privileges;
pub mod probes;
pub mod procfs;
pub mod record;
pub mod shutdown;
pub mod signals;
pub mod throwaway;
pub mod tracker;
