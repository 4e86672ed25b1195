//! End-to-end test harness: runs the real `sluice` binary as a child process on loopback and gives
//! tests real Kafka clients pointed at it.
//!
//! S3 mode: [`s3::S3Server`] runs a real S3 server (s3s-fs) behind a [`fault_proxy::FaultProxy`]
//! that makes it decide create-if-absent at completion, as S3 does, and injects S3 faults
//! ([`s3::S3Server::faults`]); [`SluiceOptions::s3`] / [`SluiceOptions::s3_via`] point a broker at
//! them.
//!
//! Kafka faults: [`kafka_proxy::KafkaProxy`] sits between Kafka clients and a broker started with
//! [`SluiceOptions::advertised_kafka`] pointing at it, and swallows or delays Produce answers so
//! clients really retry.
//!
//! Owns: spawning `sluice serve` (the binary from [`binary`], checked against its sources) on
//! port 0 with a private temporary data dir,
//! waiting for its ready file, killing/terminating/restarting it on the same data dir, and keeping
//! the process log for debugging. Client builders live in [`clients`], hand-written wire-protocol
//! access (for malformed input) in [`wire`].
//!
//! Every test starts its own broker process in its own temporary directory, so tests are
//! independent and can run in parallel (nextest runs each test in its own process).

pub mod binary;
pub mod clients;
pub mod diff;
pub mod fault_proxy;
pub mod kafka_proxy;
pub mod kafka_ref;
mod loopback_server;
pub mod s3;
pub mod wire;

pub use binary::sluice_binary;

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// How long `start`/`restart` wait for the ready file unless overridden. Startup includes
/// recovery (WAL replay), so it is generous; a healthy start on this machine takes well under 1 s.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `terminate` waits for a graceful exit after SIGTERM before escalating to SIGKILL.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Poll interval for the ready file and for process exit.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Lines of the broker log shown in error messages and when a test panics.
const LOG_TAIL_LINES: usize = 60;

/// Options for one broker process. Everything not set here is the binary's default, except the
/// listeners (port 0 on loopback, so parallel tests never collide), the data dir and the ready
/// file, which the harness always chooses.
#[derive(Clone, Debug)]
pub struct SluiceOptions {
    /// Extra `sluice serve` arguments, appended after the harness's own.
    pub extra_args: Vec<String>,
    /// Extra environment variables for the child.
    pub env: Vec<(String, String)>,
    /// Bound on waiting for the ready file.
    pub ready_timeout: Duration,
    /// Also bind the HTTP listener on port 0 (the default 127.0.0.1:8082 would collide between
    /// parallel tests). Only passed when the binary has the flag (HTTP ingest lands later).
    pub http_listener: bool,
}

impl Default for SluiceOptions {
    fn default() -> Self {
        Self {
            extra_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            http_listener: true,
        }
    }
}

impl SluiceOptions {
    /// Adds `--flag value` to the command line.
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.extra_args.push(flag.to_string());
        self.extra_args.push(value.to_string());
        self
    }

    /// Tiny segment thresholds (64 KiB / 200 ms) and a tiny tail cache, so reads really go
    /// through segment objects and their index instead of being served from memory.
    pub fn tiny_segments(self) -> Self {
        self.arg("--segment-bytes", 65536)
            .arg("--segment-ms", 200)
            .arg("--tail-cache-bytes", 65536)
    }

    /// Sets the default partition count for auto-created topics.
    pub fn default_partitions(self, partitions: i32) -> Self {
        self.arg("--default-partitions", partitions)
    }

    /// Turns topic auto-creation on or off.
    pub fn auto_create_topics(self, enabled: bool) -> Self {
        self.arg("--auto-create-topics", enabled)
    }

    /// Makes the broker advertise `addr` to Kafka clients (`--advertised-kafka`) instead of its
    /// own listener, e.g. a [`kafka_proxy::KafkaProxy`] in front of it: clients that follow
    /// Metadata then stay behind the proxy.
    pub fn advertised_kafka(self, addr: std::net::SocketAddr) -> Self {
        self.arg("--advertised-kafka", addr)
    }

    /// Adds an environment variable for the child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// Contents of the ready file the broker writes once it serves.
#[derive(Clone, Debug, Deserialize)]
pub struct ReadyInfo {
    /// Bound Kafka listener, `127.0.0.1:PORT`.
    pub kafka: String,
    /// Bound HTTP listener, when the binary has one.
    #[serde(default)]
    pub http: Option<String>,
    /// Node id the process runs as.
    #[serde(default)]
    pub node_id: Option<i64>,
    /// Cluster id (from the bucket's `cluster.json`).
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// One running (or stopped) `sluice serve` process with its own temporary directory.
///
/// Layout of the temporary directory: `data/` (the `--data-dir`, which also holds the local
/// filesystem object store), `ready.json`, `sluice.log` (stdout + stderr of every start, appended).
pub struct SluiceProcess {
    options: SluiceOptions,
    dir: tempfile::TempDir,
    child: Option<Child>,
    ready: Option<ReadyInfo>,
    starts: u32,
}

impl SluiceProcess {
    /// Starts a broker with the given options and waits until it serves.
    pub fn start(options: SluiceOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-")
            .tempdir()
            .context("creating the test's temporary directory")?;
        fs::create_dir_all(dir.path().join("data")).context("creating the data dir")?;
        let mut process = Self {
            options,
            dir,
            child: None,
            ready: None,
            starts: 0,
        };
        process.spawn_and_wait()?;
        Ok(process)
    }

    /// Starts a broker with default options.
    pub fn start_default() -> Result<Self> {
        Self::start(SluiceOptions::default())
    }

    /// `host:port` of the Kafka listener of the current run.
    ///
    /// Panics if the process is not running (a test bug, not a broker bug).
    pub fn bootstrap(&self) -> String {
        self.ready
            .as_ref()
            .map(|ready| ready.kafka.clone())
            .expect("sluice is not running: call start() or restart() first")
    }

    /// The ready file of the current run.
    pub fn ready_info(&self) -> Option<&ReadyInfo> {
        self.ready.as_ref()
    }

    /// The `--data-dir` of this broker (stable across restarts).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory holding the data dir, ready file and log; tests may put their own
    /// files here (e.g. the fsync failpoint file).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the combined stdout/stderr log of all runs.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sluice.log")
    }

    /// PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident set size of the running process in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> Result<u64> {
        let pid = self.pid().context("sluice is not running")?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .context("no VmRSS line in /proc/PID/status")
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        self.ready = None;
        let Some(mut child) = self.child.take() else {
            bail!("kill9: sluice is not running");
        };
        // `Child::kill` is kill(pid, SIGKILL) on this PID; the workspace forbids `unsafe`, so
        // this is the safe way to send it.
        if let Err(err) = child.kill() {
            // Already exited: reaping below reports how.
            eprintln!("kill9: {err}");
        }
        child.wait().context("reaping sluice after SIGKILL")?;
        Ok(())
    }

    /// Sends SIGTERM and waits (bounded) for a graceful exit; returns the exit status.
    /// Escalates to SIGKILL and fails if the process does not exit in time.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.ready = None;
        let Some(mut child) = self.child.take() else {
            bail!("terminate: sluice is not running");
        };
        send_signal(child.id(), "TERM")?;
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for sluice")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "sluice did not exit within {TERMINATE_TIMEOUT:?} after SIGTERM\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Deletes everything in the data dir of a stopped process (a new machine: the next
    /// `restart` starts from an empty data dir, e.g. to recover from the bucket alone).
    pub fn wipe_data_dir(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("wipe_data_dir: sluice is still running");
        }
        let data = self.data_dir();
        fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        Ok(())
    }

    /// Starts the process again on the same data dir (after `kill9` or `terminate`; a running
    /// process is terminated first). The Kafka port changes: clients must be rebuilt with the
    /// new `bootstrap()`.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        self.spawn_and_wait()
    }

    /// Sets `--flag value` for the next `restart` (replacing an earlier value of the flag), e.g.
    /// a different `--node-id` on the same data dir and bucket.
    pub fn set_arg(&mut self, flag: &str, value: impl ToString) {
        let args = &mut self.options.extra_args;
        match args.iter().position(|a| a == flag) {
            Some(at) if at + 1 < args.len() => args[at + 1] = value.to_string(),
            _ => {
                args.push(flag.to_string());
                args.push(value.to_string());
            }
        }
    }

    /// Last `lines` lines of the process log (all runs), for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last {} lines of {} ---\n{}",
            all.len() - start,
            self.log_path().display(),
            all[start..].join("\n")
        )
    }

    /// Every `*.seg` file under the data dir (segment objects of the local filesystem object
    /// store), sorted.
    pub fn segment_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        collect_files_with_extension(&self.data_dir(), "seg", &mut found, 0);
        found.sort();
        found
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.path().join("ready.json")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.starts += 1;
        let ready_file = self.ready_file();
        match fs::remove_file(&ready_file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).context("removing the old ready file"),
        }

        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the sluice log file")?;
        let binary = sluice_binary()?;
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--kafka-listener")
            .arg("127.0.0.1:0")
            .arg("--ready-file")
            .arg(&ready_file);
        if self.options.http_listener && binary_supports_flag(&binary, "--http-listener") {
            command.arg("--http-listener").arg("127.0.0.1:0");
        }
        command.args(&self.options.extra_args);
        if std::env::var_os("RUST_LOG").is_none() {
            // openraft logs its whole state at info on startup; its warnings are enough here.
            command.env("RUST_LOG", "info,openraft=warn");
        }
        // Plain log lines in the log file.
        command.env("NO_COLOR", "1");
        for (key, value) in &self.options.env {
            command.env(key, value);
        }
        writeln!(log, "=== harness: start #{} {:?} ===", self.starts, command)
            .context("writing the sluice log file")?;
        let stdout = log.try_clone().context("cloning the log file handle")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(log));
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        self.child = Some(child);

        let ready = self.wait_for_ready_file(&ready_file)?;
        self.ready = Some(ready);
        Ok(())
    }

    fn wait_for_ready_file(&mut self, ready_file: &Path) -> Result<ReadyInfo> {
        let deadline = Instant::now() + self.options.ready_timeout;
        let mut last_parse_error = None;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("polling sluice")? {
                    self.child = None;
                    bail!(
                        "sluice exited with {status} before becoming ready\n{}",
                        self.log_tail(LOG_TAIL_LINES)
                    );
                }
            }
            // The file may be observed half-written; retry until it parses.
            match fs::read_to_string(ready_file) {
                Ok(text) => match serde_json::from_str::<ReadyInfo>(&text) {
                    Ok(ready) => return Ok(ready),
                    Err(err) => last_parse_error = Some(format!("{err} in {text:?}")),
                },
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => last_parse_error = Some(err.to_string()),
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                bail!(
                    "sluice did not write a valid ready file within {:?} (last error: {})\n{}",
                    self.options.ready_timeout,
                    last_parse_error.unwrap_or_else(|| "file absent".to_string()),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Always printed: tests fail by returning errors as often as by panicking, and the test
        // runner shows a test's output only when it fails.
        eprintln!("{}", self.log_tail(LOG_TAIL_LINES));
        if std::env::var_os("SLUICE_TEST_KEEP").is_some() {
            // Keep the directory for post-mortem debugging.
            self.dir.disable_cleanup(true);
            eprintln!("SLUICE_TEST_KEEP: kept {}", self.dir.path().display());
        }
    }
}

/// Sends a signal to a PID with the `kill` utility (the workspace forbids `unsafe`, and
/// `std` can only send SIGKILL).
fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg("-s")
        .arg(signal)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -s {signal} {pid} failed: {status}");
    }
    Ok(())
}

fn collect_files_with_extension(dir: &Path, extension: &str, out: &mut Vec<PathBuf>, depth: u32) {
    // Object keys are a handful of levels deep; the bound only guards against a symlink loop.
    if depth > 16 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => {
                collect_files_with_extension(&path, extension, out, depth + 1)
            }
            Ok(kind) if kind.is_file() && path.extension().is_some_and(|ext| ext == extension) => {
                out.push(path)
            }
            _ => {}
        }
    }
}

/// Whether `sluice serve --help` lists `flag`; asked once per binary and test process.
fn binary_supports_flag(binary: &Path, flag: &str) -> bool {
    static HELP: OnceLock<String> = OnceLock::new();
    let help = HELP.get_or_init(|| {
        Command::new(binary)
            .args(["serve", "--help"])
            .stdin(Stdio::null())
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    });
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .any(|word| word == flag)
}

/// Polls `check` every `interval` until it returns `Some`, or fails after `timeout` with
/// `what` in the message. For conditions that have no wake-up signal visible to a test.
pub async fn wait_for<T, F>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Option<T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Creates (or truncates) a file; used for failpoint files.
pub fn touch(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}
