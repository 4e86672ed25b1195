//! Reading durable records back: single records by lsn (`Wal::read`) and sequential replay
//! (`WalReader`). Both only ever look below the durable end they observed, so they never see bytes the
//! writer is still writing, and both hold their own `Arc<File>`s so `truncate_prefix` may unlink a file
//! under them.

use std::path::PathBuf;

use bytes::Bytes;

use crate::files::{file_path, FileRef, PositionalReader};
use crate::frame::{Header, HEADER_LEN};
use crate::vfs::WalFile;
use crate::{Error, Lsn, Result};

/// Reads the record at `lsn` from `file` (which starts at `file_start`); the record must end at or
/// below `limit`. Anything that does not parse as a frame there is `NotFound`: the lsn is not a record
/// boundary.
pub(crate) fn read_record(
    file: &dyn WalFile,
    file_start: Lsn,
    lsn: Lsn,
    limit: Lsn,
) -> Result<Bytes> {
    let not_found = || Error::NotFound(lsn);
    let offset = lsn.checked_sub(file_start).ok_or_else(not_found)?;
    let available = limit.checked_sub(lsn).ok_or_else(not_found)?;
    if available < HEADER_LEN as u64 {
        return Err(not_found());
    }
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, offset)
        .map_err(|e| eof_as_not_found(e, lsn))?;
    let header = Header::decode(&header).map_err(|_| not_found())?;
    header
        .check_len(available - HEADER_LEN as u64)
        .map_err(|_| not_found())?;
    let mut payload = vec![0u8; header.len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)
        .map_err(|e| eof_as_not_found(e, lsn))?;
    if let Err(e) = header.check_crc(crc32c::crc32c(&payload)) {
        tracing::debug!(lsn, reason = %e, "wal read at a position that is not a valid record");
        return Err(not_found());
    }
    Ok(Bytes::from(payload))
}

fn eof_as_not_found(error: std::io::Error, lsn: Lsn) -> Error {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::NotFound(lsn)
    } else {
        Error::Io(error)
    }
}

/// State of a replay: a snapshot of the files covering `[pos, end)` and a buffered reader of the
/// current one.
pub(crate) struct Replay {
    dir: PathBuf,
    /// Files by start lsn; `files[index]` contains `pos`.
    files: Vec<(Lsn, FileRef)>,
    index: usize,
    reader: PositionalReader,
    pos: Lsn,
    end: Lsn,
    /// No record has been returned yet: a bad first frame means `from` was not a record boundary.
    at_first: bool,
}

impl Replay {
    /// `files` must be non-empty, sorted, with `files[0].0 <= from <= end`.
    pub(crate) fn new(dir: PathBuf, files: Vec<(Lsn, FileRef)>, from: Lsn, end: Lsn) -> Replay {
        let reader = Self::reader_for(&files, 0, end);
        Replay {
            dir,
            files,
            index: 0,
            reader,
            pos: from,
            end,
            at_first: true,
        }
    }

    /// Reader over the part of `files[index]` below the next file's start (and below `end`).
    fn reader_for(files: &[(Lsn, FileRef)], index: usize, end: Lsn) -> PositionalReader {
        let (start, file) = &files[index];
        let file_end = files
            .get(index + 1)
            .map_or(end, |(next, _)| (*next).min(end));
        PositionalReader::new(file.clone(), file_end.saturating_sub(*start))
    }

    /// The next record, `Ok(None)` at the end.
    pub(crate) fn next_record(&mut self) -> Result<Option<(Lsn, Bytes)>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        while self
            .files
            .get(self.index + 1)
            .is_some_and(|(next, _)| *next <= self.pos)
        {
            self.index += 1;
            self.reader = Self::reader_for(&self.files, self.index, self.end);
        }
        let file_start = self.files[self.index].0;
        let offset = self.pos - file_start;
        match self.reader.frame_at(offset)? {
            Ok((frame_len, payload)) => {
                let lsn = self.pos;
                self.pos += frame_len;
                self.at_first = false;
                Ok(Some((lsn, payload)))
            }
            Err(_) if self.at_first => Err(Error::NotFound(self.pos)),
            Err(e) => Err(Error::Corrupted {
                file: file_path(&self.dir, file_start),
                offset,
                reason: format!("{e} (file readable up to byte {})", self.reader.limit()),
            }),
        }
    }
}
