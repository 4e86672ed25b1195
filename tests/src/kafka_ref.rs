//! Apache Kafka 4.4.0, the reference broker of the differential tests: one JVM on loopback in
//! KRaft combined mode (`process.roles=broker,controller`, node id 1, a single-voter quorum),
//! a generated `server.properties` and a temporary log dir formatted with Kafka's storage tool.
//!
//! The jars come from Maven Central through `tests/java/setup.sh` (run by `scripts/test.sh`),
//! which writes `tests/java/target/classpath.txt`. A missing `java` or classpath file is an
//! error, never a skip.
//!
//! The process is stopped by PID: [`KafkaProcess::stop`] (SIGTERM, then SIGKILL after a bound)
//! and on drop. Should the test process itself die without unwinding (a SIGKILL from a test
//! runner's timeout), a small watchdog shell started next to the JVM notices that the test
//! process is gone and stops the JVM by its PID.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use kafka_protocol::messages::MetadataRequest;

use crate::wire::RawConnection;

/// Main class of the broker (`bin/kafka-server-start.sh`).
const KAFKA_MAIN: &str = "kafka.Kafka";
/// Main class of `bin/kafka-storage.sh` (formats the log dir).
const STORAGE_TOOL_MAIN: &str = "kafka.tools.StorageTool";

/// Bound on the JVM start until Kafka answers Metadata with itself as a broker.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on the storage tool.
const FORMAT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM gets before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// JVM options: a small heap and a quick start (C1 only, serial GC) matter more here than peak
/// throughput; the tests send a few hundred small requests.
const JVM_OPTIONS: &[&str] = &[
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];

/// Broker settings on top of the generated listeners and log dir.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions` (partitions of auto-created topics).
    pub default_partitions: i32,
    /// Extra `key=value` lines for `server.properties` (they win over the defaults).
    pub extra: Vec<(String, String)>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            auto_create_topics: true,
            default_partitions: 1,
            extra: Vec::new(),
        }
    }
}

/// A running Apache Kafka broker+controller in its own temporary directory.
///
/// Layout: `server.properties`, `logs/` (the log dir), `kafka.log` (stdout + stderr of the
/// storage tool and the broker).
pub struct KafkaProcess {
    dir: tempfile::TempDir,
    child: Option<Child>,
    watchdog: Option<Child>,
    bootstrap: String,
    cluster_id: String,
}

impl KafkaProcess {
    /// Formats a fresh log dir, starts Kafka and waits until it answers Metadata listing itself.
    /// Retries with new ports if the chosen ones were taken in the meantime.
    pub fn start(options: &KafkaOptions) -> Result<Self> {
        let classpath = java_classpath()?;
        let java = java_binary()?;
        let mut last_error = None;
        for _attempt in 0..3 {
            match Self::start_once(options, &java, &classpath) {
                Ok(kafka) => return Ok(kafka),
                Err(err) => {
                    eprintln!("kafka_ref: start failed, retrying with new ports: {err:#}");
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("Kafka did not start")))
    }

    fn start_once(options: &KafkaOptions, java: &Path, classpath: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kafka-ref-")
            .tempdir()
            .context("creating Kafka's temporary directory")?;
        let broker_port = free_port()?;
        let controller_port = free_port()?;
        if broker_port == controller_port {
            bail!("got the same free port twice");
        }
        let log_dir = dir.path().join("logs");
        let properties = server_properties(options, broker_port, controller_port, &log_dir);
        let config = dir.path().join("server.properties");
        fs::write(&config, properties).context("writing server.properties")?;
        let cluster_id = random_cluster_id();
        let log_path = dir.path().join("kafka.log");

        // Format the log dir: single-voter dynamic quorum (`--standalone`), matching
        // `controller.quorum.bootstrap.servers`.
        let mut format = Command::new(java);
        format
            .args(JVM_OPTIONS)
            .arg("-cp")
            .arg(classpath)
            .arg(STORAGE_TOOL_MAIN)
            .args(["format", "--standalone", "--ignore-formatted", "-t"])
            .arg(&cluster_id)
            .arg("-c")
            .arg(&config);
        let status = run_logged(&mut format, &log_path, FORMAT_TIMEOUT)?;
        if !status {
            bail!(
                "Kafka's storage tool failed\n{}",
                tail(&log_path, 40).unwrap_or_default()
            );
        }

        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .context("opening kafka.log")?;
        let mut command = Command::new(java);
        command
            .args(JVM_OPTIONS)
            .arg("-cp")
            .arg(classpath)
            .arg(KAFKA_MAIN)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("cloning log handle")?))
            .stderr(Stdio::from(log));
        let child = command.spawn().context("spawning the Kafka JVM")?;
        let watchdog = spawn_watchdog(child.id()).ok();
        let mut kafka = Self {
            dir,
            child: Some(child),
            watchdog,
            bootstrap: format!("127.0.0.1:{broker_port}"),
            cluster_id,
        };
        kafka.wait_ready()?;
        Ok(kafka)
    }

    /// `127.0.0.1:PORT` of the PLAINTEXT listener.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The cluster id the log dir was formatted with.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// PID of the JVM, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's combined stdout/stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    /// Last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines).unwrap_or_default()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("polling the Kafka JVM")? {
                    self.child = None;
                    bail!(
                        "Kafka exited with {status} before becoming ready\n{}",
                        self.log_tail(60)
                    );
                }
            }
            match self.probe() {
                Ok(true) => return Ok(()),
                Ok(false) => last_error = "Metadata lists no broker yet".to_string(),
                Err(err) => last_error = format!("{err:#}"),
            }
            if Instant::now() >= deadline {
                let _ = self.stop();
                bail!(
                    "Kafka not ready within {START_TIMEOUT:?}: {last_error}\n{}",
                    self.log_tail(60)
                );
            }
            std::thread::sleep(POLL_INTERVAL * 4);
        }
    }

    /// ApiVersions answers and Metadata lists this broker.
    fn probe(&self) -> Result<bool> {
        let mut connection = RawConnection::connect(&self.bootstrap)?;
        let versions = connection.api_versions()?;
        if versions.is_empty() {
            return Ok(false);
        }
        let metadata =
            connection.request(&MetadataRequest::default().with_topics(Some(vec![])), 12)?;
        Ok(!metadata.brokers.is_empty())
    }

    /// Stops the JVM: SIGTERM by PID, SIGKILL if it has not exited after a bound. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        let result = match self.child.take() {
            None => Ok(()),
            Some(mut child) => {
                let _ = signal(child.id(), "TERM");
                let deadline = Instant::now() + STOP_TIMEOUT;
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break Ok(()),
                        Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                        Ok(None) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break Err(anyhow::anyhow!(
                                "Kafka did not exit within {STOP_TIMEOUT:?} after SIGTERM; killed"
                            ));
                        }
                        Err(err) => break Err(err).context("waiting for the Kafka JVM"),
                    }
                }
            }
        };
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        result
    }
}

impl Drop for KafkaProcess {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("kafka_ref: {err:#}");
        }
    }
}

/// The generated `server.properties`.
fn server_properties(
    options: &KafkaOptions,
    broker_port: u16,
    controller_port: u16,
    log_dir: &Path,
) -> String {
    let mut settings: Vec<(String, String)> = [
        ("process.roles", "broker,controller".to_string()),
        ("node.id", "1".to_string()),
        (
            "controller.quorum.bootstrap.servers",
            format!("127.0.0.1:{controller_port}"),
        ),
        (
            "listeners",
            format!("PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"),
        ),
        (
            "advertised.listeners",
            format!("PLAINTEXT://127.0.0.1:{broker_port}"),
        ),
        ("controller.listener.names", "CONTROLLER".to_string()),
        ("inter.broker.listener.name", "PLAINTEXT".to_string()),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string(),
        ),
        ("log.dirs", log_dir.display().to_string()),
        ("num.partitions", options.default_partitions.to_string()),
        (
            "auto.create.topics.enable",
            options.auto_create_topics.to_string(),
        ),
        // A single broker: every internal topic with one replica, no waiting for a first
        // rebalance.
        ("offsets.topic.replication.factor", "1".to_string()),
        ("offsets.topic.num.partitions", "1".to_string()),
        ("transaction.state.log.replication.factor", "1".to_string()),
        ("transaction.state.log.min.isr", "1".to_string()),
        ("transaction.state.log.num.partitions", "1".to_string()),
        (
            "share.coordinator.state.topic.replication.factor",
            "1".to_string(),
        ),
        ("share.coordinator.state.topic.min.isr", "1".to_string()),
        ("group.initial.rebalance.delay.ms", "0".to_string()),
        ("num.network.threads", "2".to_string()),
        ("num.io.threads", "2".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    for (key, value) in &options.extra {
        settings.retain(|(existing, _)| existing != key);
        settings.push((key.clone(), value.clone()));
    }
    let mut text = String::from("# generated by sluice-tests kafka_ref.rs\n");
    for (key, value) in settings {
        text.push_str(&format!("{key}={value}\n"));
    }
    text
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).
fn random_cluster_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(listener.local_addr().context("probe port address")?.port())
}

/// `tests/java`.
fn java_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("java")
}

/// The JVM classpath: compiled test classes plus the resolved Maven dependencies. Fails when
/// `tests/java/setup.sh` has not run.
pub fn java_classpath() -> Result<String> {
    let dir = java_dir();
    let file = dir.join("target").join("classpath.txt");
    let dependencies = fs::read_to_string(&file).with_context(|| {
        format!(
            "{} missing: run tests/java/setup.sh (scripts/test.sh does) to resolve Apache Kafka \
             4.4.0 from Maven Central",
            file.display()
        )
    })?;
    let dependencies = dependencies.trim();
    if !dependencies.contains("kafka_2.13-4.4.0.jar") {
        bail!(
            "{} does not list kafka_2.13-4.4.0.jar: rerun tests/java/setup.sh",
            file.display()
        );
    }
    let classes = dir.join("target").join("classes");
    Ok(format!("{}:{dependencies}", classes.display()))
}

/// `$JAVA_HOME/bin/java`, else `java` on PATH; an error if neither runs.
pub fn java_binary() -> Result<PathBuf> {
    let candidate = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("java"))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("java"));
    let output = Command::new(&candidate)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "running `{} -version`: the tests need OpenJDK 17+ (see scripts/test.sh)",
                candidate.display()
            )
        })?;
    if !output.status.success() {
        bail!("`{} -version` failed", candidate.display());
    }
    Ok(candidate)
}

/// Runs `command` to completion within `timeout`, appending its output to `log_path`; returns
/// whether it succeeded.
fn run_logged(command: &mut Command, log_path: &Path, timeout: Duration) -> Result<bool> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .context("opening kafka.log")?;
    writeln!(log, "=== kafka_ref: {command:?} ===").context("writing kafka.log")?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().context("cloning log handle")?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("spawning java")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for java")? {
            return Ok(status.success());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A shell that stops `jvm_pid` (TERM, then KILL) once this test process has exited, so a test
/// process killed without unwinding does not leave a JVM behind. Killed by [`KafkaProcess::stop`].
fn spawn_watchdog(jvm_pid: u32) -> Result<Child> {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {jvm_pid} 2>/dev/null; do sleep 1; done; \
         kill -TERM {jvm_pid} 2>/dev/null; sleep 10; kill -KILL {jvm_pid} 2>/dev/null; exit 0",
        parent = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the Kafka watchdog")
}

fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    Ok(format!(
        "--- last {} lines of {} ---\n{}",
        all.len() - start,
        path.display(),
        all[start..].join("\n")
    ))
}
