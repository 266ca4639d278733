//! Kernel timestamps (CLOCK_MONOTONIC) to wall-clock time.
use chrono::{DateTime, SecondsFormat, Utc};

use crate::events::Mono;

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Monotonic nanoseconds now, on the clock the kernel programs stamp events with.
pub fn monotonic_now() -> Mono {
    now_ns(libc::CLOCK_MONOTONIC) as Mono
}

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC when it was taken. Long-running loops take
/// it again every few seconds, so an NTP step or a resumed VM shows in the next records.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock {
            offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
        }
    }
}

impl WallClock {
    pub fn at(&self, mono: Mono) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos((mono as i128 + self.offset_ns) as i64)
    }

    /// RFC 3339 with microseconds, UTC.
    pub fn rfc3339(&self, mono: Mono) -> String {
        self.at(mono).to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_sample_follows_the_wall_clock() {
        // A sample taken as if the wall clock had since been stepped back an hour.
        let stale = WallClock {
            offset_ns: WallClock::default().offset_ns - 3600 * 1_000_000_000,
        };
        let now = monotonic_now();
        let drift = |c: WallClock| (c.at(now) - Utc::now()).num_milliseconds().abs();
        assert!(drift(stale) > 3_500_000);
        assert!(drift(WallClock::default()) < 1000);
    }
}
