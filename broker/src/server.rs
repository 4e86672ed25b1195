//! The TCP server: accept loop, one task pair per connection, pipelined requests answered in order.
//!
//! Each connection has a reader and a writer task. Like Kafka (which mutes a connection until its
//! response is sent), the requests of one connection are handled one at a time, in order: two
//! pipelined Produce requests for one partition must append in the order they were sent, and two
//! OffsetCommits must not overtake each other. Clients still pipeline (the next frames wait in the
//! socket buffer), and requests of different connections run concurrently, so the WAL group-commits
//! all of them together. Responses go out through the writer task so a slow client reader never
//! blocks handling. Request bytes are charged to the broker-wide `inflight` semaphore *before* the body
//! is read, so memory stays bounded whatever clients send (backpressure instead of growth).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatch::{handle_frame, Outcome};
use crate::frame::{frame, payload_len};
use crate::Broker;

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let broker = Arc::clone(&broker);
                let shutdown = shutdown.child_token();
                tokio::spawn(async move {
                    if let Err(reason) = handle_connection(stream, peer, broker, shutdown).await {
                        tracing::info!(%peer, %reason, "connection closed");
                    }
                });
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (mut reader, mut writer) = stream.into_split();
    let (queue_tx, mut queue_rx) =
        mpsc::channel::<Outcome>(broker.config.max_pipelined_requests.max(1));
    let closing = shutdown.child_token();

    let writer_closing = closing.clone();
    let writer_task = tokio::spawn(async move {
        let result = async {
            while let Some(outcome) = queue_rx.recv().await {
                match outcome {
                    Outcome::Respond(payload) => {
                        writer
                            .write_all(&frame(&payload))
                            .await
                            .map_err(|e| format!("write: {e}"))?;
                    }
                    Outcome::NoResponse => {}
                    Outcome::Close(reason) => return Err(reason),
                }
            }
            Ok(())
        }
        .await;
        writer_closing.cancel();
        let _ = writer.shutdown().await;
        result
    });

    let read_result = read_requests(&mut reader, &broker, &queue_tx, &closing).await;
    drop(queue_tx);
    let write_result = match writer_task.await {
        Ok(result) => result,
        Err(e) => Err(format!("writer task failed: {e}")),
    };
    tracing::debug!(%peer, "connection finished");
    read_result.and(write_result)
}

async fn read_requests(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    broker: &Arc<Broker>,
    queue: &mpsc::Sender<Outcome>,
    closing: &CancellationToken,
) -> Result<(), String> {
    loop {
        let mut prefix = [0u8; 4];
        tokio::select! {
            () = closing.cancelled() => return Ok(()),
            read = reader.read_exact(&mut prefix) => match read {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(format!("read: {e}")),
            },
        }
        let len =
            payload_len(prefix, broker.config.max_request_bytes).map_err(|e| e.to_string())?;
        // Charge the request's bytes before reading them; a request larger than the whole budget takes
        // all of it.
        let permits = u32::try_from(len)
            .unwrap_or(u32::MAX)
            .min(u32::try_from(broker.config.inflight_request_bytes).unwrap_or(u32::MAX))
            .max(1);
        let permit = tokio::select! {
            () = closing.cancelled() => return Ok(()),
            permit = Arc::clone(&broker.inflight).acquire_many_owned(permits) => {
                permit.map_err(|_| "broker is shutting down".to_string())?
            }
        };
        let mut payload = BytesMut::zeroed(len);
        tokio::select! {
            () = closing.cancelled() => return Ok(()),
            read = reader.read_exact(&mut payload) => {
                read.map_err(|e| format!("truncated request ({len} bytes announced): {e}"))?;
            }
        }
        let outcome = tokio::select! {
            () = closing.cancelled() => return Ok(()),
            outcome = handle_frame(broker, payload.freeze()) => outcome,
        };
        drop(permit);
        let close = matches!(outcome, Outcome::Close(_));
        if queue.send(outcome).await.is_err() || close {
            return Ok(());
        }
    }
}
