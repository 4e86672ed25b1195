//! The TCP server: accept loop, one task pair per connection, pipelined requests answered in order.
//!
//! Each connection has a reader (frames in) and a writer (responses out, strictly in request order,
//! as Kafka requires). Requests of one connection keep Kafka's order: the next one starts only once
//! the previous one is *placed* — for a Produce, once every batch has its offsets and its place in the
//! WAL queue; for anything else, once it is done. Two pipelined Produces for a partition therefore
//! append in send order (and two OffsetCommits cannot overtake each other), while their durability
//! waits overlap and share WAL group commits. Request bytes are charged to the broker-wide `inflight`
//! semaphore *before* the body
//! is read, so memory stays bounded whatever clients send (backpressure instead of growth).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::dispatch::{handle_frame_ordered, Outcome};
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

type Pending = oneshot::Receiver<Outcome>;

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (mut reader, mut writer) = stream.into_split();
    let (queue_tx, mut queue_rx) =
        mpsc::channel::<Pending>(broker.config.max_pipelined_requests.max(1));
    let closing = shutdown.child_token();

    let writer_closing = closing.clone();
    let writer_task = tokio::spawn(async move {
        let result = async {
            while let Some(pending) = queue_rx.recv().await {
                match pending.await {
                    Ok(Outcome::Respond(payload)) => {
                        writer
                            .write_all(&frame(&payload))
                            .await
                            .map_err(|e| format!("write: {e}"))?;
                    }
                    Ok(Outcome::NoResponse) => {}
                    Ok(Outcome::Close(reason)) => return Err(reason),
                    Err(_) => return Err("request task ended without an answer".to_string()),
                }
            }
            Ok(())
        }
        .await;
        writer_closing.cancel();
        let _ = writer.shutdown().await;
        result
    });

    let read_result = read_requests(&mut reader, peer, &broker, &queue_tx, &closing).await;
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
    peer: SocketAddr,
    broker: &Arc<Broker>,
    queue: &mpsc::Sender<Pending>,
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
        let payload: Bytes = payload.freeze();
        let (answer_tx, answer_rx) = oneshot::channel();
        // Reserve the response slot first so answers keep request order.
        if queue.send(answer_rx).await.is_err() {
            return Ok(());
        }
        let (placed_tx, placed_rx) = oneshot::channel();
        let broker = Arc::clone(broker);
        tokio::spawn(async move {
            let outcome = handle_frame_ordered(&broker, payload, Some(peer.ip()), placed_tx).await;
            drop(permit);
            let _ = answer_tx.send(outcome);
        });
        // Told when placed; dropped unanswered when the request finished without saying so.
        tokio::select! {
            () = closing.cancelled() => return Ok(()),
            _ = placed_rx => {}
        }
    }
}
