//! A process's CPU time and memory, from `/proc` (Linux).
//!
//! CPU: `utime + stime` from `/proc/<pid>/stat` (fields 14 and 15, all threads, dead
//! ones included), in clock ticks of `getconf CLK_TCK` (100 on Linux, so 10 ms
//! resolution: fine over runs of seconds). Memory: `VmRSS` now and `VmHWM` (the peak
//! since the process started) from `/proc/<pid>/status`.

use std::time::Duration;

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(getconf_clk_tck)
}

fn getconf_clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `utime + stime` in ticks, from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = value.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// One process, watched through `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: u32,
    ticks_per_sec: u64,
}

impl Proc {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            ticks_per_sec: clock_ticks(),
        }
    }

    /// CPU time used so far (user + system, all threads).
    pub fn cpu(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let ticks = parse_stat_ticks(&text)?;
        Some(Duration::from_micros(
            ticks * 1_000_000 / self.ticks_per_sec,
        ))
    }

    fn status(&self, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_status_kb(&text, key)
    }

    /// Resident set size now, in bytes.
    pub fn rss(&self) -> Option<u64> {
        self.status("VmRSS")
    }

    /// Peak resident set size since the process started, in bytes.
    pub fn hwm(&self) -> Option<u64> {
        self.status("VmHWM")
    }
}

/// `(busy, total)` ticks of the machine from the `cpu ` line of `/proc/stat` (busy =
/// total - idle - iowait).
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total - v[3] - v[4], total))
}

/// The first process whose `comm` is `name` (e.g. RabbitMQ's `beam.smp`).
pub fn find_pid(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

/// Who used the machine's CPUs during a window, in cores (1.0 = one core busy).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub machine: f64,
    pub relay: Option<f64>,
    pub broker: Option<f64>,
    pub bench: f64,
    /// Everything else: other builds and tests on a shared machine distort a run.
    pub others: f64,
}

impl Usage {
    pub fn describe(&self) -> String {
        let c = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        format!(
            "CPU (cores): machine {:.2} = relay {} + broker {} + bench {:.2} + others {:.2}",
            self.machine,
            c(self.relay),
            c(self.broker),
            self.bench,
            self.others
        )
    }
}

/// A snapshot to measure [`Usage`] from.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    at: std::time::Instant,
    machine: Option<(u64, u64)>,
    relay: Option<(Proc, Duration)>,
    broker: Option<(Proc, Duration)>,
    me: Option<(Proc, Duration)>,
    ticks_per_sec: u64,
}

impl CpuWindow {
    /// Start a window; `relay` is the relay's pid, the broker is found as `beam.smp`.
    pub fn start(relay: Option<u32>) -> Self {
        let snap = |pid: Option<u32>| pid.map(Proc::new).and_then(|p| p.cpu().map(|c| (p, c)));
        let me = snap(Some(std::process::id()));
        Self {
            at: std::time::Instant::now(),
            machine: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_machine_ticks(&s)),
            relay: snap(relay),
            broker: snap(find_pid("beam.smp")),
            ticks_per_sec: me.map_or(100, |(p, _)| p.ticks_per_sec),
            me,
        }
    }

    pub fn finish(&self) -> Usage {
        let secs = self.at.elapsed().as_secs_f64().max(1e-9);
        let cores = |w: &Option<(Proc, Duration)>| {
            w.and_then(|(p, before)| p.cpu().map(|now| (now - before).as_secs_f64() / secs))
        };
        let machine = match (
            self.machine,
            std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_machine_ticks(&s)),
        ) {
            (Some((b0, _)), Some((b1, _))) => (b1 - b0) as f64 / self.ticks_per_sec as f64 / secs,
            _ => 0.0,
        };
        let relay = cores(&self.relay);
        let broker = cores(&self.broker);
        let bench = cores(&self.me).unwrap_or(0.0);
        let others = (machine - relay.unwrap_or(0.0) - broker.unwrap_or(0.0) - bench).max(0.0);
        Usage {
            machine,
            relay,
            broker,
            bench,
            others,
        }
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{:.1}", b as f64 / (1024.0 * 1024.0)),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let stat = "4242 (hook relay) R 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    350 125 0 0 20 0 5 0 12345 123456789 2048 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(475));
        let odd = "7 (a) b) S 1 7 7 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat_ticks(odd), Some(15));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn machine_line() {
        let stat = "cpu  100 5 50 800 20 0 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_machine_ticks(stat), Some((160, 980)));
        assert_eq!(parse_machine_ticks("intr 1 2"), None);
    }

    #[test]
    fn status_lines() {
        let status = "Name:\thookrelay\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(10240 * 1024));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(20480 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = Proc::new(std::process::id());
        assert!(me.cpu().is_some());
        assert!(me.rss().unwrap() > 0);
        assert!(me.hwm().unwrap() >= me.rss().unwrap() / 2);
    }
}
