//! CPU time and RSS of a process, from `/proc/PID`.

use std::sync::OnceLock;
use std::time::Instant;

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`, usually 100).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A process to sample: a PID or ourselves.
#[derive(Clone, Copy, Debug)]
pub enum Proc {
    /// `/proc/PID`.
    Pid(u32),
    /// `/proc/self`.
    Myself,
}

impl Proc {
    fn dir(self) -> String {
        match self {
            Proc::Pid(pid) => format!("/proc/{pid}"),
            Proc::Myself => "/proc/self".to_owned(),
        }
    }

    /// User + system CPU seconds so far (all threads).
    pub fn cpu_secs(self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir())).ok()?;
        // The command name may contain spaces: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')' field 3 is index 0: utime is field 14, stime 15.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / clk_tck())
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("{}/status", self.dir())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// A CPU sample now.
    pub fn sample(self) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            cpu: self.cpu_secs(),
        }
    }
}

/// CPU seconds of a process at an instant.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    at: Instant,
    cpu: Option<f64>,
}

impl CpuSample {
    /// CPU seconds used between `self` and `later`, and that as % of one core.
    pub fn until(&self, later: &CpuSample) -> Option<(f64, f64)> {
        let used = later.cpu? - self.cpu?;
        let wall = later.at.duration_since(self.at).as_secs_f64();
        Some((used, 100.0 * used / wall.max(1e-9)))
    }
}

/// The load average line of `/proc/loadavg` (first three numbers).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
