//! The daemon's own `process_*` metrics, as every Prometheus client library names them: what
//! the dashboard's "graceful itself" row graphs (CPU against the limit, memory, fds).

/// One look at /proc/self.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

/// None when /proc/self cannot be read (said once by the caller; the metrics stay as they were).
pub fn sample() -> Option<ProcessSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    parse(
        &stat,
        &boot,
        &limits,
        open_fds,
        ticks_per_second(),
        page_size(),
    )
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

fn parse(
    stat: &str,
    boot: &str,
    limits: &str,
    open_fds: u64,
    ticks: f64,
    page: u64,
) -> Option<ProcessSample> {
    // After the command's closing parenthesis (a command may hold spaces and parentheses),
    // fields count from 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    Some(ProcessSample {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page),
        start_time_seconds: btime as f64 + field(22)? as f64 / ticks,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_with_spaces_and_parentheses_is_read() {
        let stat = "4242 (graceful (x) d) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 5 0 1200 104857600 2560 18446744073709551615";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        let s = parse(stat, "cpu 1 2\nbtime 1700000000\n", limits, 12, 100.0, 4096)
            .expect("a well-formed stat");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2560 * 4096);
        assert_eq!(s.start_time_seconds, 1_700_000_012.0);
        assert_eq!(s.max_fds, Some(1_048_576));
        assert_eq!(s.open_fds, 12);
        assert!(parse("garbage", "", "", 0, 100.0, 4096).is_none());
    }

    #[test]
    fn this_process_is_sampled() {
        let s = sample().expect("/proc/self");
        assert!(s.resident_bytes > 0 && s.open_fds > 0, "{s:?}");
    }
}
