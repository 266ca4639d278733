//! Values of the command line's flags, checked: each parser says in one line what it wanted.

use std::time::Duration;

/// Events per second in (0, 10000].
pub fn events_per_second(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 10_000.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a rate from 0 (excluded) to 10000 Events per second"
        )),
    }
}

/// A Kubernetes namespace name: a DNS-1123 label.
pub fn namespace_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a namespace name (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

/// Longest --series-ttl: a month; longer keeps the series of every container ever seen.
pub const MAX_TTL_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// A Kubernetes node name: a DNS-1123 subdomain.
pub fn node_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a node name (lowercase letters, digits, '-' and '.', at most 253)"
        ))
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 10m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{s}` must be positive"));
    }
    if secs > MAX_TTL_SECS {
        return Err(format!("`{s}` is longer than 30 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `KEY=VALUE` with a non-empty key and no NUL.
pub fn env_var(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.is_empty() && !s.contains('\0') => Ok(s.to_string()),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A number of seconds in (0, max].
pub fn seconds_up_to(max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s| match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= max => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds above 0 and at most {max}"
        )),
    }
}

/// A number of seconds in [min, max].
pub fn seconds_between(min: f64, max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s| match s.parse::<f64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds from {min} to {max}"
        )),
    }
}
