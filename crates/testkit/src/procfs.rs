//! What the benchmarks read from `/proc` (Linux): CPU time of a process and
//! of a PostgreSQL server with its backends, the machine's busy time, memory
//! fields, the clock tick, the CPU model; and their duration arguments.
//! Everything returns `None` (or a neutral value) when `/proc` cannot tell.

use std::time::Duration;

/// Fields of `/proc/<pid>/stat` after the command name: index 0 is field 3
/// (state) of proc(5).
pub fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of `pid` (every thread), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)? + f.get(12)?)
}

/// CPU of a PostgreSQL server, in clock ticks: the postmaster, its live
/// children, and the children it has reaped (cutime + cstime).
pub fn tree_ticks(postmaster: u32) -> Option<u64> {
    let f = stat_fields(postmaster)?;
    let mut total = f.get(11)? + f.get(12)? + f.get(13)? + f.get(14)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(cf) = stat_fields(pid) {
            if cf.get(1).copied() == Some(u64::from(postmaster)) {
                total += cf.get(11).copied().unwrap_or(0) + cf.get(12).copied().unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// (busy, total) jiffies of the whole machine (all CPUs), from the first
/// line of `/proc/stat`.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// A field of `/proc/<pid>/status`, its value trimmed (`VmRSS` gives
/// `"1234 kB"`).
pub fn status_field(pid: u32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim_start_matches(':').trim().to_string())
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    status_field(pid, key)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when unknown.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The CPU's model name, `?` when unknown.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// A benchmark's duration argument, as `humantime` writes it (`15s`,
/// `500ms`, `2m`, `1h 30m`, `7d`) or a bare number of seconds; above zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..1e9).contains(&secs) => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("bad duration {s:?} (e.g. 15s, 500ms, 2m)")),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("bad duration {s:?} (e.g. 15s, 500ms, 2m): {e}"))?,
    };
    if d.is_zero() {
        return Err(format!("duration {s:?} must be above zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(status_kib(me, "VmRSS").is_some_and(|kib| kib > 0));
        let (busy, total) = machine_ticks().unwrap();
        assert!(total >= busy && total > 0);
    }
}
