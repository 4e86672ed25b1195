//! Recovery at open: validates every frame of every file, drops a torn tail of the last file and
//! refuses to open a log with damage anywhere else.
//!
//! A crash can only tear the unsynced end of the log, which is always in the last file: the writer syncs
//! a group before it rolls to a new file. So an invalid frame in the last file with nothing valid after
//! it (a cut-off frame, zeros from preallocated or unwritten blocks, garbage) is a torn write and is cut
//! off, while an invalid frame in an older file, or one followed by a valid frame, means acknowledged
//! data was damaged: that is [`Error::Corrupted`], never silently repaired.

use std::path::{Path, PathBuf};

use crate::files::{file_path, list_files, FileRef, PositionalReader};
use crate::frame::{FrameError, HEADER_LEN};
use crate::vfs::{OpenMode, WalFs};
use crate::{Error, Lsn, Result};

/// What `open` finds on disk after recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// All log files, sorted, contiguous; the last one is the active file.
    pub(crate) files: Vec<(Lsn, PathBuf)>,
    /// Lsn after the last valid record.
    pub(crate) end: Lsn,
}

/// Result of scanning one file.
struct Scan {
    /// Bytes of valid frames from the start of the file.
    valid_len: u64,
    /// The first invalid frame, if the file does not end exactly after a valid one.
    bad: Option<FrameError>,
}

fn scan(file: &FileRef, len: u64) -> std::io::Result<Scan> {
    let mut reader = PositionalReader::new(file.clone(), len);
    let mut offset = 0u64;
    while offset < len {
        match reader.check_frame_at(offset)? {
            Ok(frame_len) => offset += frame_len,
            Err(e) => {
                return Ok(Scan {
                    valid_len: offset,
                    bad: Some(e),
                })
            }
        }
    }
    Ok(Scan {
        valid_len: offset,
        bad: None,
    })
}

/// First position after `bad_offset` at which a valid frame starts, if any.
///
/// Every byte position is a candidate because the bad frame's length field cannot be trusted. Only
/// candidates with a plausible length (non-zero, within the file) get their checksum computed; zeros
/// and random bytes almost never have one, so even a large torn tail is scanned at memory speed.
fn valid_frame_after(file: &FileRef, len: u64, bad_offset: u64) -> std::io::Result<Option<u64>> {
    let mut reader = PositionalReader::new(file.clone(), len);
    let mut position = bad_offset + 1;
    while position + HEADER_LEN as u64 <= len {
        let window = reader.window(position, HEADER_LEN)?;
        // Positions whose whole header lies inside the window.
        let checkable = window.len() - (HEADER_LEN - 1);
        let plausible = (0..checkable).find(|&i| {
            let mut len_bytes = [0u8; 4];
            len_bytes.copy_from_slice(&window[i..i + 4]);
            let frame_len = u32::from_le_bytes(len_bytes);
            let after_header = len - (position + i as u64) - HEADER_LEN as u64;
            frame_len != 0 && u64::from(frame_len) <= after_header
        });
        match plausible {
            Some(i) => {
                let candidate = position + i as u64;
                if reader.check_frame_at(candidate)?.is_ok() {
                    return Ok(Some(candidate));
                }
                position = candidate + 1;
            }
            None => position += checkable as u64,
        }
    }
    Ok(None)
}

fn corrupted(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupted {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Scans and repairs the log in `dir` (which must exist); creates the first file of an empty log.
pub(crate) fn recover(fs: &dyn WalFs, dir: &Path, fsync: bool) -> Result<Recovered> {
    let files = list_files(fs, dir)?;
    let Some(last_index) = files.len().checked_sub(1) else {
        let path = file_path(dir, 0);
        fs.open(&path, OpenMode::CreateNew)?;
        if fsync {
            fs.sync_dir(dir)?;
        }
        tracing::info!(dir = %dir.display(), "created new wal");
        return Ok(Recovered {
            files: vec![(0, path)],
            end: 0,
        });
    };

    let mut end = 0;
    for (index, (start, path)) in files.iter().enumerate() {
        let is_last = index == last_index;
        let mode = if is_last {
            OpenMode::Append
        } else {
            OpenMode::Read
        };
        let file = fs.open(path, mode)?;
        let len = file.len()?;
        let scan = scan(&file, len)?;
        if let Some(bad) = scan.bad {
            if !is_last {
                return Err(corrupted(path, scan.valid_len, bad.to_string()));
            }
            if let Some(valid) = valid_frame_after(&file, len, scan.valid_len)? {
                return Err(corrupted(
                    path,
                    scan.valid_len,
                    format!("{bad}, followed by a valid frame at byte {valid}"),
                ));
            }
            tracing::warn!(
                file = %path.display(),
                offset = scan.valid_len,
                dropped_bytes = len - scan.valid_len,
                reason = %bad,
                "dropping torn tail of the wal"
            );
            file.set_len(scan.valid_len)?;
            if fsync {
                file.sync_all()?;
            }
        }
        if let Some((next_start, _)) = files.get(index + 1) {
            if start + scan.valid_len != *next_start {
                return Err(corrupted(
                    path,
                    scan.valid_len,
                    format!(
                        "file ends at lsn {} but the next file starts at lsn {next_start}",
                        start + scan.valid_len
                    ),
                ));
            }
        }
        end = start + scan.valid_len;
    }
    tracing::info!(
        dir = %dir.display(),
        files = files.len(),
        start_lsn = files[0].0,
        end_lsn = end,
        "recovered wal"
    );
    Ok(Recovered { files, end })
}
