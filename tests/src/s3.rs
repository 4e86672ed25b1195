//! A real S3 server for tests: runs `s3s-fs` as a child process on a free loopback port, with a
//! temporary root directory holding one bucket, random credentials, and a process log.
//!
//! Owns: locating the binary (never skipping when it is missing — `scripts/test.sh` installs it),
//! picking a port (retrying when another process wins the race for it), waiting until the server
//! answers HTTP, and stopping the process by PID on drop. Gives tests the endpoint, bucket and
//! credentials in the forms they need: `S3Options` for in-process object stores, and `sluice serve`
//! flags + environment for the broker ([`SluiceOptions::s3`]).
//!
//! Nothing here relies on s3s-fs beyond "an S3 server that takes an access/secret key and a root
//! directory whose subdirectories are buckets": the broker is configured exactly as it would be for
//! MinIO or AWS (endpoint, region, `AWS_*` credentials, path-style).
//!
//! **Create-if-absent as on S3.** s3s-fs decides `If-None-Match: *` when a PUT arrives, not when it
//! completes, so two overlapping creates of one key both succeed. Every server started here is
//! therefore fronted by a [`FaultProxy`] (in pass-through), which reads a conditional PUT whole and
//! serialises conditional writes per key (see `fault_proxy`): [`S3Server::endpoint`] and
//! [`S3Server::addr`] are the proxy's, and [`S3Server::faults`] is that proxy, for tests that want
//! to inject faults without a second one. [`S3Server::bare_addr`] is s3s-fs itself.

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use object_store::ObjectStore;
use rand::distr::{Alphanumeric, SampleString as _};
use storage::objects::S3Options;

use crate::fault_proxy::FaultProxy;
use crate::SluiceOptions;

/// Version `scripts/test.sh` installs; newer ones need a newer rustc than the pinned toolchain.
pub const S3S_FS_VERSION: &str = "0.14.1";

/// Bucket created by [`S3Server::start`].
pub const DEFAULT_BUCKET: &str = "sluice-test";

/// Region handed to clients; s3s-fs ignores it, but SigV4 signs it.
pub const REGION: &str = "us-east-1";

/// How long to wait for the server to answer after spawning it.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts at binding a free port (another process may grab the one we picked).
const PORT_ATTEMPTS: u32 = 5;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One running `s3s-fs` process with its own root directory, behind a [`FaultProxy`].
pub struct S3Server {
    /// Declared before `child`: dropped (stops accepting) before the server is killed.
    front: Option<FaultProxy>,
    child: Option<Child>,
    addr: SocketAddr,
    bucket: String,
    access_key: String,
    secret_key: String,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs with the bucket [`DEFAULT_BUCKET`].
    pub fn start() -> Result<Self> {
        Self::start_with_bucket(DEFAULT_BUCKET)
    }

    /// Starts s3s-fs with one (empty) bucket named `bucket`.
    pub fn start_with_bucket(bucket: &str) -> Result<Self> {
        let binary = s3s_fs_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-s3-")
            .tempdir()
            .context("creating the S3 server's temporary directory")?;
        let root = dir.path().join("root");
        fs::create_dir_all(root.join(bucket)).context("creating the bucket directory")?;
        let mut rng = rand::rng();
        let access_key = format!("AK{}", Alphanumeric.sample_string(&mut rng, 18));
        let secret_key = Alphanumeric.sample_string(&mut rng, 40);

        let log_path = dir.path().join("s3s-fs.log");
        let mut last_error = None;
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut child = spawn(&binary, &log_path, &root, port, &access_key, &secret_key)?;
            match wait_until_answering(&mut child, addr, &log_path) {
                Ok(()) => {
                    let front = match FaultProxy::start(addr) {
                        Ok(front) => front,
                        Err(err) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return Err(err.context("starting the proxy in front of s3s-fs"));
                        }
                    };
                    return Ok(S3Server {
                        front: Some(front),
                        child: Some(child),
                        addr,
                        bucket: bucket.to_string(),
                        access_key,
                        secret_key,
                        dir,
                    });
                }
                Err(err) => {
                    // Most likely the port was taken between our probe and s3s-fs's bind.
                    eprintln!("s3s-fs start attempt {attempt} on port {port} failed: {err:#}");
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context(format!("s3s-fs did not start in {PORT_ATTEMPTS} attempts"))
    }

    /// `http://127.0.0.1:PORT` of the front proxy: what clients use.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The front proxy's address (create-if-absent decided at completion).
    pub fn addr(&self) -> SocketAddr {
        self.front.as_ref().map_or(self.addr, FaultProxy::addr)
    }

    /// The front proxy, to inject faults (holds, errors) on this server's traffic.
    pub fn faults(&self) -> &FaultProxy {
        self.front
            .as_ref()
            .expect("the front proxy lives until the server is stopped")
    }

    /// s3s-fs itself, without the front proxy: overlapping creates of one key both succeed. Only
    /// for tests that show why the front proxy exists.
    pub fn bare_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// `s3://BUCKET/PREFIX` (or the bucket root for an empty prefix).
    pub fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        }
    }

    /// Environment for a client process: the standard `AWS_*` credentials and region.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }

    /// Client settings for this server (in-process object stores), with short timeouts and few
    /// retries so a test against a dead server fails in seconds, not minutes.
    pub fn s3_options(&self) -> S3Options {
        self.s3_options_via(&self.endpoint())
    }

    /// Like [`S3Server::s3_options`], through another endpoint (e.g. a [`crate::fault_proxy::FaultProxy`]).
    pub fn s3_options_via(&self, endpoint: &str) -> S3Options {
        S3Options {
            endpoint: Some(endpoint.to_string()),
            region: Some(REGION.into()),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            ..S3Options::default()
        }
    }

    /// An object store on `s3://BUCKET/PREFIX`, built by the same code as the broker's.
    pub fn object_store(&self, prefix: &str) -> Result<Arc<dyn ObjectStore>> {
        self.object_store_with(prefix, &self.s3_options())
    }

    /// An object store on `s3://BUCKET/PREFIX` with explicit client settings.
    pub fn object_store_with(
        &self,
        prefix: &str,
        options: &S3Options,
    ) -> Result<Arc<dyn ObjectStore>> {
        // The data dir only matters for file:// URLs.
        storage::objects::object_store_from_url(&self.url(prefix), self.dir.path(), options)
            .context("building the S3 object store")
    }

    /// The bucket's directory on disk (objects are files below it), for assertions.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("root").join(&self.bucket)
    }

    /// Combined stdout/stderr of s3s-fs.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the front proxy (its port refuses connections from now on), kills the server
    /// (SIGKILL, by PID) and reaps it. Idempotent.
    pub fn stop(&mut self) {
        self.front = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the child answers HTTP on `addr`; fails if it exits or does not answer in time.
fn wait_until_answering(child: &mut Child, addr: SocketAddr, log_path: &Path) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("polling s3s-fs")? {
            bail!("s3s-fs exited with {status}\n{}", log_tail(log_path));
        }
        if http_answers(addr) {
            // A bind failure makes s3s-fs exit at once: check that it was ours that answered.
            if let Some(status) = child.try_wait().context("polling s3s-fs")? {
                bail!("s3s-fs exited with {status}\n{}", log_tail(log_path));
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "s3s-fs did not answer on {addr} within {READY_TIMEOUT:?}\n{}",
                log_tail(log_path)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn log_tail(log_path: &Path) -> String {
    let text = fs::read_to_string(log_path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(30);
    format!(
        "--- s3s-fs log ({}) ---\n{}",
        log_path.display(),
        lines[start..].join("\n")
    )
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("SLUICE_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("SLUICE_TEST_KEEP: kept {}", self.dir.path().display());
        }
    }
}

impl SluiceOptions {
    /// Points the broker's object store at `s3://BUCKET/PREFIX` on `server`, directly.
    pub fn s3(self, server: &S3Server, prefix: &str) -> Self {
        self.s3_via(server, &server.endpoint(), prefix)
    }

    /// Like [`SluiceOptions::s3`], but the broker talks to `endpoint` (e.g. a fault proxy in front
    /// of `server`). Credentials go through the standard `AWS_*` variables, as in production.
    pub fn s3_via(mut self, server: &S3Server, endpoint: &str, prefix: &str) -> Self {
        self = self
            .arg("--object-store", server.url(prefix))
            .arg("--s3-endpoint", endpoint)
            .arg("--s3-region", REGION);
        for (key, value) in server.env() {
            self = self.env(&key, &value);
        }
        self
    }

    /// `--wal object`: the S3 WAL.
    pub fn object_wal(self) -> Self {
        self.arg("--wal", "object")
    }

    /// Appends arguments verbatim (flags without values, or several at once).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// Path of `s3s-fs`: `$S3S_FS_BIN`, else the first on `PATH`, else `~/.cargo/bin/s3s-fs`. A missing
/// binary is an error, never a skip: an S3 test that silently does not run proves nothing.
pub fn s3s_fs_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("S3S_FS_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("S3S_FS_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("s3s-fs"));
    let in_cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin").join("s3s-fs"));
    on_path
        .chain(in_cargo_home)
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "s3s-fs not found on PATH or in ~/.cargo/bin. The S3 tests need it: run \
                 scripts/test.sh (it installs it), or `cargo install s3s-fs --version \
                 {S3S_FS_VERSION} --features binary --locked`"
            )
        })
}

fn spawn(
    binary: &Path,
    log_path: &Path,
    root: &Path,
    port: u16,
    access_key: &str,
    secret_key: &str,
) -> Result<Child> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .context("opening the s3s-fs log")?;
    writeln!(log, "=== harness: s3s-fs on 127.0.0.1:{port} ===")
        .context("writing the s3s-fs log")?;
    let stdout = log.try_clone().context("cloning the log handle")?;
    Command::new(binary)
        .arg("--host")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--access-key")
        .arg(access_key)
        .arg("--secret-key")
        .arg(secret_key)
        .arg(root)
        .env(
            "RUST_LOG",
            std::env::var("S3S_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))
}

/// A port that was free a moment ago (the OS picks it; we release it for the child to bind).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(listener.local_addr().context("probe port address")?.port())
}

/// Whether something at `addr` answers an HTTP request with a status line (any status: an
/// unsigned request gets 403 from a real S3 server).
fn http_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut read = 0;
    // Bounded: at most 12 bytes, each read bounded by the socket timeout.
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    head.starts_with(b"HTTP/1.")
}
