//! A minimal hand-driven Kafka connection for tests that must send what no real client sends:
//! malformed, truncated or oversized frames, unknown API keys and versions, corrupted batches.
//!
//! Blocking `std::net::TcpStream` with read/write timeouts, so every call is bounded. Frames
//! read back are capped at [`MAX_RESPONSE_BYTES`]: a broken broker must not make the test
//! allocate whatever size it claims.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Decodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Largest response frame this test client accepts.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Default bound on waiting for a response.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What reading the next frame found.
#[derive(Debug)]
pub enum FrameRead {
    /// A complete frame (without its 4-byte size prefix).
    Frame(Bytes),
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing (complete) arrived within the timeout.
    TimedOut,
}

/// One raw connection to the broker.
pub struct RawConnection {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl RawConnection {
    /// Connects to `addr` (`host:port`).
    pub fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream
            .set_write_timeout(Some(RESPONSE_TIMEOUT))
            .context("write timeout")?;
        Ok(Self {
            stream,
            next_correlation_id: 1,
        })
    }

    /// Connects to `addr` from the local address `local` (another loopback address, e.g.
    /// 127.0.0.2, so the broker sees a different client IP).
    pub async fn connect_from(addr: &str, local: std::net::IpAddr) -> Result<Self> {
        let remote: std::net::SocketAddr =
            addr.parse().with_context(|| format!("address {addr}"))?;
        let socket = tokio::net::TcpSocket::new_v4().context("socket")?;
        socket
            .bind(std::net::SocketAddr::new(local, 0))
            .with_context(|| format!("binding to {local}"))?;
        let stream = tokio::time::timeout(RESPONSE_TIMEOUT, socket.connect(remote))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {addr} from {local}"))?
            .into_std()
            .context("into std")?;
        stream.set_nonblocking(false).context("blocking mode")?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream
            .set_write_timeout(Some(RESPONSE_TIMEOUT))
            .context("write timeout")?;
        Ok(Self {
            stream,
            next_correlation_id: 1,
        })
    }

    /// Writes raw bytes as they are (no size prefix added).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("writing to broker")?;
        self.stream.flush().context("flushing to broker")
    }

    /// Writes `body` with a correct 4-byte size prefix.
    pub fn send_frame(&mut self, body: &[u8]) -> Result<()> {
        let length = i32::try_from(body.len()).context("frame too large")?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(body);
        self.send_raw(&frame)
    }

    /// Half-closes the write side (the broker sees EOF after what was sent).
    pub fn shutdown_write(&mut self) -> Result<()> {
        self.stream
            .shutdown(Shutdown::Write)
            .context("shutting down write side")
    }

    /// Takes the next correlation id.
    pub fn correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id += 1;
        id
    }

    /// Encodes a request header + body for `version` (header version chosen per the API key).
    pub fn encode_request<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(i32, BytesMut)> {
        let correlation_id = self.correlation_id();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-e2e-raw")));
        let mut body = BytesMut::new();
        encode_request_header_into_buffer(&mut body, &header).context("encoding header")?;
        request
            .encode(&mut body, version)
            .context("encoding request body")?;
        Ok((correlation_id, body))
    }

    /// Sends a request and decodes its response; fails on a closed connection, a timeout or a
    /// mismatched correlation id.
    pub fn request<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        self.request_with_bytes(request, version)
            .map(|(response, _)| response)
    }

    /// Like [`RawConnection::request`], also returning the response body as received (after the
    /// response header), for byte-level checks. Fails if the body has bytes the decoder did not
    /// consume.
    pub fn request_with_bytes<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(R::Response, Bytes)> {
        let (correlation_id, body) = self.encode_request(request, version)?;
        self.send_frame(&body)?;
        let mut frame = match self.read_frame(RESPONSE_TIMEOUT)? {
            FrameRead::Frame(frame) => frame,
            FrameRead::Closed => bail!("broker closed the connection instead of answering"),
            FrameRead::TimedOut => bail!("no response within {RESPONSE_TIMEOUT:?}"),
        };
        let api_key =
            ApiKey::try_from(R::KEY).map_err(|()| anyhow::anyhow!("unknown api key {}", R::KEY))?;
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
            .context("decoding response header")?;
        if header.correlation_id != correlation_id {
            bail!(
                "correlation id mismatch: sent {correlation_id}, got {}",
                header.correlation_id
            );
        }
        let raw_body = frame.clone();
        let response = R::Response::decode(&mut frame, version).context("decoding response")?;
        if !frame.is_empty() {
            bail!(
                "{} undecoded bytes after the response body (api key {} v{version})",
                frame.len(),
                R::KEY
            );
        }
        Ok((response, raw_body))
    }

    /// Asks the broker for its supported version ranges (ApiVersions v3): api key → (min, max).
    pub fn api_versions(&mut self) -> Result<HashMap<i16, (i16, i16)>> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-e2e"))
            .with_client_software_version(StrBytes::from_static_str("0.1.0"));
        let response = self.request(&request, 3)?;
        if response.error_code != 0 {
            bail!("ApiVersions v3 failed with error {}", response.error_code);
        }
        Ok(response
            .api_keys
            .iter()
            .map(|api| (api.api_key, (api.min_version, api.max_version)))
            .collect())
    }

    /// The highest version of `R` that both this client (capped at `preferred`) and the broker
    /// support.
    pub fn negotiate<R: Request>(&mut self, preferred: i16) -> Result<i16> {
        let versions = self.api_versions()?;
        let (broker_min, broker_max) = *versions
            .get(&R::KEY)
            .with_context(|| format!("broker does not support api key {}", R::KEY))?;
        let version = preferred.min(broker_max).min(R::VERSIONS.max);
        if version < broker_min.max(R::VERSIONS.min) {
            bail!(
                "no common version for api key {}: broker {broker_min}..={broker_max}",
                R::KEY
            );
        }
        Ok(version)
    }

    /// Reads one size-prefixed frame within `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<FrameRead> {
        let deadline = Instant::now() + timeout;
        let mut size = [0u8; 4];
        match self.read_exact_until(&mut size, deadline)? {
            ReadOutcome::Done => {}
            ReadOutcome::Closed => return Ok(FrameRead::Closed),
            ReadOutcome::TimedOut => return Ok(FrameRead::TimedOut),
        }
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size)
            .ok()
            .filter(|size| *size <= MAX_RESPONSE_BYTES)
            .with_context(|| format!("broker sent an invalid frame size {size}"))?;
        let mut frame = vec![0u8; size];
        match self.read_exact_until(&mut frame, deadline)? {
            ReadOutcome::Done => Ok(FrameRead::Frame(Bytes::from(frame))),
            ReadOutcome::Closed => Ok(FrameRead::Closed),
            ReadOutcome::TimedOut => Ok(FrameRead::TimedOut),
        }
    }

    /// Succeeds if the broker closes the connection within `timeout` without sending a frame.
    pub fn expect_closed(&mut self, timeout: Duration) -> Result<()> {
        match self.read_frame(timeout)? {
            FrameRead::Closed => Ok(()),
            FrameRead::TimedOut => bail!("connection still open after {timeout:?}"),
            FrameRead::Frame(frame) => bail!(
                "expected the connection to be closed, got a {}-byte frame",
                frame.len()
            ),
        }
    }

    fn read_exact_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<ReadOutcome> {
        let mut filled = 0;
        while filled < buf.len() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(ReadOutcome::TimedOut);
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .context("read timeout")?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(read) => filled += read,
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(ReadOutcome::TimedOut)
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::BrokenPipe
                    ) =>
                {
                    return Ok(ReadOutcome::Closed)
                }
                Err(err) => return Err(err).context("reading from broker"),
            }
        }
        Ok(ReadOutcome::Done)
    }
}

enum ReadOutcome {
    Done,
    Closed,
    TimedOut,
}

/// Encodes one magic-2 record batch (uncompressed unless told) holding `records` values with
/// keys `k{i}`, creation timestamps `timestamp_ms + i`, no producer id.
pub fn encode_batch(
    values: &[&[u8]],
    timestamp_ms: i64,
    compression: Compression,
) -> Result<Bytes> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let delta = i64::try_from(index).unwrap_or(i64::MAX);
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: delta,
                // Consecutive sequences keep all records in one batch (with -1 on every record
                // the encoder starts a new batch per record); without a producer id the broker
                // does not check them.
                sequence: i32::try_from(index).unwrap_or(i32::MAX),
                timestamp: timestamp_ms + delta,
                key: Some(Bytes::from(format!("k{index}"))),
                value: Some(Bytes::copy_from_slice(value)),
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .context("encoding record batch")?;
    Ok(buf.freeze())
}

/// Offset of the CRC field in a magic-2 batch header.
pub const BATCH_CRC_OFFSET: usize = 17;

/// Returns the batch with its stored CRC flipped (the payload is untouched), so the broker's
/// CRC-32C check must fail.
pub fn corrupt_crc(batch: &Bytes) -> Result<Bytes> {
    let mut bytes = BytesMut::from(&batch[..]);
    let crc = bytes
        .get_mut(BATCH_CRC_OFFSET..BATCH_CRC_OFFSET + 4)
        .context("batch shorter than its header")?;
    for byte in crc {
        *byte ^= 0xA5;
    }
    Ok(bytes.freeze())
}

/// Builds a request frame body by hand: header v1 (api key, version, correlation id, client id)
/// followed by `body`. Works for API keys and versions the protocol crate does not know.
pub fn raw_request_v1(api_key: i16, api_version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let client_id = b"sluice-e2e-raw";
    let mut frame = BytesMut::new();
    frame.put_i16(api_key);
    frame.put_i16(api_version);
    frame.put_i32(correlation_id);
    frame.put_i16(client_id.len() as i16);
    frame.put_slice(client_id);
    frame.put_slice(body);
    frame.to_vec()
}

/// Builds a request frame body with header v2 (v1 plus an empty tagged-field section), as
/// flexible versions (e.g. ApiVersions v3+) use.
pub fn raw_request_v2(api_key: i16, api_version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = raw_request_v1(api_key, api_version, correlation_id, &[]);
    frame.push(0); // no tagged fields
    frame.extend_from_slice(body);
    frame
}
