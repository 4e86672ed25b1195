//! Reading another process's resource use from `/proc`: peak and current resident memory (`VmHWM`,
//! `VmRSS`) and CPU time, so every Kafka scenario can report what the broker spent on it.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use crate::units::MIB;

/// Memory figures of a process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcMemory {
    pub(crate) peak_rss_bytes: u64,
    pub(crate) rss_bytes: u64,
}

impl ProcMemory {
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_bytes as f64 / MIB
    }

    pub(crate) fn rss_mib(&self) -> f64 {
        self.rss_bytes as f64 / MIB
    }
}

/// Reads `VmHWM` and `VmRSS` of process `pid`.
pub(crate) fn read_memory(pid: u32) -> Result<ProcMemory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status(&text).with_context(|| format!("parsing {path}"))
}

fn parse_status(text: &str) -> Result<ProcMemory> {
    let field_kib = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find(|line| line.starts_with(name))
            .ok_or_else(|| anyhow!("no {name} line"))?;
        let mut words = line[name.len()..].split_whitespace();
        let value: u64 = words
            .next()
            .ok_or_else(|| anyhow!("{name} has no value"))?
            .parse()
            .with_context(|| format!("{name} value"))?;
        match words.next() {
            Some("kB") => Ok(value * 1024),
            other => Err(anyhow!("{name} has unit {other:?}, expected kB")),
        }
    };
    Ok(ProcMemory {
        peak_rss_bytes: field_kib("VmHWM:")?,
        rss_bytes: field_kib("VmRSS:")?,
    })
}

/// User + system CPU time of process `pid` (all its threads) in clock ticks.
pub(crate) fn read_cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&text).with_context(|| format!("parsing {path}"))
}

fn parse_stat_ticks(text: &str) -> Result<u64> {
    // The command name (field 2) is in parentheses and may contain spaces or ')': split after the last.
    let after_name = text
        .rfind(')')
        .map(|index| &text[index + 1..])
        .ok_or_else(|| anyhow!("no ')' in stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let field = |number: usize| -> Result<u64> {
        fields
            .get(number - 3)
            .ok_or_else(|| anyhow!("stat has no field {number}"))?
            .parse::<u64>()
            .with_context(|| format!("stat field {number}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on if that fails).
pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|&ticks| ticks > 0.0)
        .unwrap_or(100.0)
}

/// Whether process `pid` still exists (and is not a zombie).
pub(crate) fn is_alive(pid: u32) -> bool {
    let stat = format!("/proc/{pid}/stat");
    if !Path::new(&stat).exists() {
        return false;
    }
    match std::fs::read_to_string(&stat) {
        Ok(text) => text
            .rfind(')')
            .and_then(|index| text[index + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sum over the threads of process `pid` of (time on CPU, time runnable but waiting for a CPU), in
/// nanoseconds, from `/proc/PID/task/*/schedstat`. Threads that end between two readings are lost.
pub(crate) fn read_sched_times(pid: u32) -> Result<(u64, u64)> {
    let dir = format!("/proc/{pid}/task");
    let mut on_cpu = 0u64;
    let mut waiting = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry
            .with_context(|| format!("listing {dir}"))?
            .path()
            .join("schedstat");
        // A thread may end between listing and reading.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let (cpu, wait) =
            parse_schedstat(&text).with_context(|| format!("parsing {}", path.display()))?;
        on_cpu += cpu;
        waiting += wait;
    }
    Ok((on_cpu, waiting))
}

fn parse_schedstat(text: &str) -> Result<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(cpu)), Some(Ok(wait))) => Ok((cpu, wait)),
        _ => Err(anyhow!("expected two numbers in {text:?}")),
    }
}

/// The `total` of the `some` line of a pressure file (`/proc/pressure/cpu`, `/proc/pressure/io`):
/// microseconds during which at least one task was stalled on that resource.
pub(crate) fn read_pressure_some_us(resource: &str) -> Result<u64> {
    let path = format!("/proc/pressure/{resource}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_pressure_some(&text).with_context(|| format!("parsing {path}"))
}

fn parse_pressure_some(text: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|line| line.starts_with("some "))
        .ok_or_else(|| anyhow!("no 'some' line"))?;
    let total = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("total="))
        .ok_or_else(|| anyhow!("no total= in {line:?}"))?;
    total.parse().with_context(|| format!("total {total:?}"))
}

/// Measures the CPU a process uses over an interval, as a percentage of one core.
pub(crate) struct CpuMeter {
    pid: u32,
    start_ticks: u64,
    started: Instant,
    ticks_per_second: f64,
}

impl CpuMeter {
    pub(crate) fn start(pid: u32) -> Result<CpuMeter> {
        Ok(CpuMeter {
            pid,
            start_ticks: read_cpu_ticks(pid)?,
            started: Instant::now(),
            ticks_per_second: clock_ticks_per_second(),
        })
    }

    /// CPU seconds used since `start` and the share of one core that is (100 = one core busy).
    pub(crate) fn finish(&self) -> Result<(f64, f64)> {
        let ticks = read_cpu_ticks(self.pid)?.saturating_sub(self.start_ticks);
        let cpu_seconds = ticks as f64 / self.ticks_per_second;
        let wall = self.started.elapsed().as_secs_f64();
        let percent = if wall > 0.0 {
            100.0 * cpu_seconds / wall
        } else {
            0.0
        };
        Ok((cpu_seconds, percent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_memory_lines() {
        let status =
            "Name:\tsluice\nVmPeak:\t 900000 kB\nVmHWM:\t  131072 kB\nVmRSS:\t   65536 kB\n";
        let memory = parse_status(status).expect("parses");
        assert_eq!(memory.peak_rss_bytes, 128 << 20);
        assert_eq!(memory.rss_bytes, 64 << 20);
        assert_eq!(memory.peak_rss_mib(), 128.0);
        assert!(parse_status("VmRSS:\t1 kB\n").is_err());
        assert!(parse_status("VmHWM:\tlots kB\nVmRSS:\t1 kB\n").is_err());
    }

    #[test]
    fn parses_stat_with_awkward_command_name() {
        let fields_after_name: Vec<String> = (3..=20).map(|number| number.to_string()).collect();
        let stat = format!("1234 (a) b) c) {}", fields_after_name.join(" "));
        assert_eq!(parse_stat_ticks(&stat).expect("parses"), 14 + 15);
        assert!(parse_stat_ticks("1234 (x) S 1 2").is_err());
    }

    #[test]
    fn parses_schedstat_and_pressure() {
        assert_eq!(parse_schedstat("123 456 7\n").expect("parses"), (123, 456));
        assert!(parse_schedstat("x 1 2").is_err());
        let pressure = "some avg10=93.03 avg60=91.95 avg300=91.39 total=3075596430\n\
                        full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(
            parse_pressure_some(pressure).expect("parses"),
            3_075_596_430
        );
        assert!(parse_pressure_some("full total=1").is_err());
        let (on_cpu, _) = read_sched_times(std::process::id()).expect("own schedstat");
        assert!(on_cpu > 0);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(is_alive(pid));
        let memory = read_memory(pid).expect("own status");
        assert!(memory.peak_rss_bytes >= memory.rss_bytes);
        assert!(memory.rss_bytes > 0);
        let meter = CpuMeter::start(pid).expect("own stat");
        let (cpu_seconds, percent) = meter.finish().expect("own stat");
        assert!(cpu_seconds >= 0.0 && percent >= 0.0);
        assert!(!is_alive(u32::MAX));
    }
}
