//! The on-disk layout of a log: file names, directory listing and syncing, and a buffered positional
//! reader that recovery, `read` and `replay` use to parse frames out of a file.
//!
//! Reads are positional (`pread`) so that any number of readers can share one cached file handle with
//! the writer appending to the same file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::frame::{FrameError, Header, HEADER_LEN};
use crate::vfs::{WalFile, WalFs};
use crate::Lsn;

/// A shared handle to an open log file.
pub(crate) type FileRef = Arc<dyn WalFile>;

const FILE_SUFFIX: &str = ".wal";
const LSN_DIGITS: usize = 20;

/// Name of the file whose first record has lsn `start`.
pub(crate) fn file_name(start: Lsn) -> String {
    format!("{start:0width$}{FILE_SUFFIX}", width = LSN_DIGITS)
}

pub(crate) fn file_path(dir: &Path, start: Lsn) -> PathBuf {
    dir.join(file_name(start))
}

/// The start lsn encoded in a log file name, or `None` for any other file (lock file, editor debris).
pub(crate) fn parse_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(FILE_SUFFIX)?;
    if digits.len() != LSN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Log files in `dir`, sorted by start lsn.
pub(crate) fn list_files(fs: &dyn WalFs, dir: &Path) -> io::Result<Vec<(Lsn, PathBuf)>> {
    let mut files: Vec<(Lsn, PathBuf)> = fs
        .list_files(dir)?
        .into_iter()
        .filter_map(|name| parse_file_name(&name).map(|start| (start, dir.join(name))))
        .collect();
    files.sort_by_key(|(start, _)| *start);
    Ok(files)
}

/// Bytes read from the file at a time when parsing many small frames.
const CHUNK_BYTES: usize = 1 << 20;
/// Payloads at least this large are read into their own buffer, so a small record handed out as a
/// slice of a chunk never pins much more memory than itself, and a big one is not read twice.
const DEDICATED_READ_BYTES: usize = CHUNK_BYTES / 4;

/// Buffered positional reader over `[0, limit)` of a file.
pub(crate) struct PositionalReader {
    file: FileRef,
    limit: u64,
    chunk: Bytes,
    chunk_offset: u64,
}

impl PositionalReader {
    pub(crate) fn new(file: FileRef, limit: u64) -> PositionalReader {
        PositionalReader {
            file,
            limit,
            chunk: Bytes::new(),
            chunk_offset: 0,
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes `[offset, offset + len)`; the range must lie below the limit.
    pub(crate) fn read(&mut self, offset: u64, len: usize) -> io::Result<Bytes> {
        let end = offset
            .checked_add(len as u64)
            .filter(|end| *end <= self.limit)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past wal limit"))?;
        let chunk_end = self.chunk_offset + self.chunk.len() as u64;
        if offset >= self.chunk_offset && end <= chunk_end {
            let start = (offset - self.chunk_offset) as usize;
            return Ok(self.chunk.slice(start..start + len));
        }
        if len >= DEDICATED_READ_BYTES {
            let mut buf = vec![0u8; len];
            self.file.read_exact_at(&mut buf, offset)?;
            return Ok(Bytes::from(buf));
        }
        self.window(offset, len)?;
        let start = (offset - self.chunk_offset) as usize;
        Ok(self.chunk.slice(start..start + len))
    }

    /// The buffered bytes from `offset` on: at least `min_len` of them (which must be at most a chunk
    /// and lie below the limit), usually up to a chunk. Borrowed, so scanning byte by byte is cheap.
    pub(crate) fn window(&mut self, offset: u64, min_len: usize) -> io::Result<&[u8]> {
        debug_assert!(min_len <= CHUNK_BYTES);
        let chunk_end = self.chunk_offset + self.chunk.len() as u64;
        let covered = offset >= self.chunk_offset && offset + min_len as u64 <= chunk_end;
        if !covered {
            if offset + min_len as u64 > self.limit {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past wal limit",
                ));
            }
            let size = (CHUNK_BYTES as u64).min(self.limit - offset) as usize;
            let mut buf = vec![0u8; size];
            self.file.read_exact_at(&mut buf, offset)?;
            self.chunk = Bytes::from(buf);
            self.chunk_offset = offset;
        }
        Ok(&self.chunk[(offset - self.chunk_offset) as usize..])
    }

    /// CRC-32C of `[offset, offset + len)`, computed in chunks so that checking a large record (or a
    /// garbage length during recovery) never allocates its full size.
    pub(crate) fn crc_of(&mut self, offset: u64, len: u64) -> io::Result<u32> {
        let mut crc = 0u32;
        let mut done = 0u64;
        while done < len {
            let step = (len - done).min(CHUNK_BYTES as u64 / 2) as usize;
            let bytes = self.read(offset + done, step)?;
            crc = crc32c::crc32c_append(crc, &bytes);
            done += step as u64;
        }
        Ok(crc)
    }

    /// Header of the frame at `offset`, checked for a plausible length.
    fn header_at(&mut self, offset: u64) -> io::Result<Result<Header, FrameError>> {
        let available = self.limit.saturating_sub(offset);
        if available < HEADER_LEN as u64 {
            return Ok(Err(FrameError::IncompleteHeader));
        }
        let bytes = self.read(offset, HEADER_LEN)?;
        let header = match Header::decode(&bytes) {
            Ok(header) => header,
            Err(e) => return Ok(Err(e)),
        };
        Ok(header
            .check_len(available - HEADER_LEN as u64)
            .map(|()| header))
    }

    /// Validates the frame at `offset` without materializing its payload; returns its frame length.
    pub(crate) fn check_frame_at(&mut self, offset: u64) -> io::Result<Result<u64, FrameError>> {
        let header = match self.header_at(offset)? {
            Ok(header) => header,
            Err(e) => return Ok(Err(e)),
        };
        let crc = self.crc_of(offset + HEADER_LEN as u64, u64::from(header.len))?;
        Ok(header.check_crc(crc).map(|()| header.frame_len()))
    }

    /// Reads and validates the frame at `offset`; returns its frame length and payload.
    pub(crate) fn frame_at(&mut self, offset: u64) -> io::Result<Result<(u64, Bytes), FrameError>> {
        let header = match self.header_at(offset)? {
            Ok(header) => header,
            Err(e) => return Ok(Err(e)),
        };
        let payload = self.read(offset + HEADER_LEN as u64, header.len as usize)?;
        Ok(header
            .check_crc(crc32c::crc32c(&payload))
            .map(|()| (header.frame_len(), payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(0), "00000000000000000000.wal");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.wal");
        for lsn in [0, 1, 4096, u64::MAX] {
            assert_eq!(parse_file_name(&file_name(lsn)), Some(lsn));
        }
        assert_eq!(parse_file_name("LOCK"), None);
        assert_eq!(parse_file_name("0000000000000000000.wal"), None);
        assert_eq!(parse_file_name("0000000000000000000a.wal"), None);
        assert_eq!(parse_file_name("00000000000000000000.wal.tmp"), None);
        assert_eq!(parse_file_name("99999999999999999999.wal"), None);
    }

    #[test]
    fn positional_reader_spans_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file: FileRef = Arc::new(crate::vfs::OsFs)
            .open(&path, crate::vfs::OpenMode::Read)
            .unwrap();
        let mut reader = PositionalReader::new(file, data.len() as u64);
        let mut offset = 0usize;
        let mut step = 1usize;
        while offset < data.len() {
            let len = step.min(data.len() - offset);
            let got = reader.read(offset as u64, len).unwrap();
            assert_eq!(&got[..], &data[offset..offset + len]);
            offset += len;
            step = step * 3 % (CHUNK_BYTES / 2 + 7) + 1;
        }
        assert!(reader.read(data.len() as u64 - 1, 2).is_err());
        assert!(reader.window(data.len() as u64 - 1, 2).is_err());
        let window = reader.window(CHUNK_BYTES as u64 + 3, 10).unwrap();
        assert!(window.len() >= 10);
        assert_eq!(
            window,
            &data[CHUNK_BYTES + 3..CHUNK_BYTES + 3 + window.len()]
        );
        let crc = reader.crc_of(5, data.len() as u64 - 5).unwrap();
        assert_eq!(crc, crc32c::crc32c(&data[5..]));
    }
}
