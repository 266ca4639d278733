//! graceful: watches, with eBPF, how containers are stopped, and says why they were SIGKILLed.
//!
//! Data flows one way: [`probes`] (kernel) -> [`events`] -> [`pipeline`] -> [`tracker`] ->
//! [`record`] -> [`enrich`] -> [`export`].
/// Serializes an enum that names itself (`as_str`) by that name: one source for every name in
/// JSON, metric labels and text.
macro_rules! serialize_by_name {
    ($($t:ty),* $(,)?) => {
        $(impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        })*
    };
}

pub mod audit;
pub mod cgroup;
pub mod check;
pub mod check_image;
pub mod check_pod;
pub mod check_probe;
pub mod clock;
pub mod daemon;
pub mod demo;
pub mod driver;
pub mod engine;
pub mod enrich;
pub mod events;
pub mod export;
pub mod flags;
pub mod identity;
pub mod pipeline;
pub mod pod_termination;
pub mod privileges;
pub mod probes;
pub mod procfs;
pub mod record;
pub mod redact;
pub mod shutdown;
pub mod signals;
pub mod throwaway;
pub mod trace;
pub mod tracker;
