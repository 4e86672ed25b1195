//! The file layer under the log: every file and directory operation the crate does goes through a
//! [`WalFs`], so a test can put [`crate::PowerLossFs`] (a simulated disk that loses what was not
//! fsynced) where production uses [`OsFs`] (the real file system).
//!
//! The interface is exactly what the log needs and no more: append-only writes, positional reads,
//! `set_len` (recovery cuts a torn tail), file and directory syncs, creating and removing files,
//! listing a directory and an exclusive lock. Its durability contract is POSIX's, which the log
//! must be correct under: file contents (and size) are durable after `sync_data`/`sync_all` of the
//! file; a created, removed or renamed directory entry is durable only after `sync_dir` of the
//! directory holding it.

use std::fmt::Debug;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How [`WalFs::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading.
    Read,
    /// An existing file, for reading, appending and `set_len`.
    Append,
    /// A new file (the name must not exist yet), for reading and appending.
    CreateNew,
}

/// An open file of the log.
pub trait WalFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Appends (part of) `bufs` at the end of the file; returns how many bytes were written.
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    fn len(&self) -> io::Result<u64>;

    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the contents (and size) durable.
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the contents and all metadata durable.
    fn sync_all(&self) -> io::Result<()>;

    /// Fills `buf` from `offset`; `UnexpectedEof` when the file ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Held while a directory is locked; dropping it unlocks.
pub trait DirLock: Send + Debug {}

/// The file system a log lives on.
pub trait WalFs: Send + Sync + Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn WalFile>>;

    /// Names of the regular files in `dir`, in no particular order.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;

    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Replaces `to` with `from` (the log itself does not rename; other users of the layer do).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    fn dir_exists(&self, dir: &Path) -> bool;

    /// Creates `dir` and any missing parents (not durably: see [`WalFs::sync_dir`]).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Makes the creations, removals and renames of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Takes an exclusive lock named by the file `path` (created if missing); an error of kind
    /// `WouldBlock` if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

#[derive(Debug)]
struct OsFile(File);

impl WalFile for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Opened with O_APPEND: `writev` at the end of the file.
        (&self.0).write_vectored(bufs)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// The lock is the open file; closing it unlocks.
#[derive(Debug)]
struct OsLock {
    _file: File,
}

impl DirLock for OsLock {}

impl WalFs for OsFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn WalFile>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::Append => {
                options.append(true);
            }
            OpenMode::CreateNew => {
                options.append(true).create_new(true);
            }
        }
        Ok(Arc::new(OsFile(options.open(path)?)))
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(OsLock { _file: file })),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another holder", path.display()),
            )),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Creates `dir` and its missing parents, and (with `fsync`) makes each new directory's entry
/// durable in its parent, top down, so a new log directory cannot vanish in a crash.
pub(crate) fn create_dir_durably(fs: &dyn WalFs, dir: &Path, fsync: bool) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut level = Some(dir);
    while let Some(path) = level.filter(|p| !p.as_os_str().is_empty() && !fs.dir_exists(p)) {
        missing.push(path);
        level = path.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs.create_dir_all(dir)?;
    if fsync {
        for created in missing.iter().rev() {
            if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs.sync_dir(parent)?;
            }
        }
    }
    Ok(())
}
