//! The shell the test proxies ([`crate::fault_proxy::FaultProxy`],
//! [`crate::kafka_proxy::KafkaProxy`]) share: a listener on a free loopback port and an accept
//! loop, on a small tokio runtime of their own — tests that block their thread (the process
//! harness polls with `std::thread::sleep`) must not stall the traffic they proxy. Dropping the
//! [`LoopbackServer`] stops the runtime, and with it the accept loop and every connection task.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, TcpStream};

/// How long the accept loop backs off after a failed accept (e.g. EMFILE) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A running loopback listener. Stops when dropped.
pub(crate) struct LoopbackServer {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LoopbackServer {
    /// Binds `127.0.0.1:0` and runs `on_accept` for every accepted connection, inside the
    /// server's runtime (so it may `tokio::spawn` the connection's task) and with `TCP_NODELAY`
    /// set. `name` names the runtime's threads and the accept errors logged.
    pub(crate) fn start(
        name: &'static str,
        worker_threads: usize,
        mut on_accept: impl FnMut(TcpStream) + Send + 'static,
    ) -> Result<LoopbackServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("building the {name} runtime"))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .with_context(|| format!("binding the {name} port"))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("setting the {name} socket non-blocking"))?;
        let addr = listener.local_addr().context("listener address")?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener)
                .with_context(|| format!("registering the {name} socket"))?
        };
        runtime.spawn(async move {
            // Runs until the runtime shuts down (the server is dropped).
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        on_accept(stream);
                    }
                    Err(err) => {
                        eprintln!("{name}: accept failed: {err}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        });
        Ok(LoopbackServer {
            addr,
            runtime: Some(runtime),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Does not block, so a server may be dropped inside an async test.
            runtime.shutdown_background();
        }
    }
}
