//! [`PowerLossFs`]: an in-memory [`WalFs`] that simulates a machine losing power, for crash tests.
//!
//! A killed process keeps its writes in the page cache, so a crash test that kills a process
//! cannot catch a missing fsync. This file system keeps, per file, the contents as of its last
//! sync next to its current contents, and per directory, the entries as of its last directory sync
//! next to its current entries. [`PowerLossFs::crash`] throws away everything not synced —
//! written bytes, `set_len`s, and file creations, removals and renames that no `sync_dir` covered
//! (POSIX: `fsync` of a file does not make its directory entry durable) — and returns the file
//! system as the next boot sees it. [`PowerLossFs::crash_with`] can instead keep a prefix of each
//! file's unsynced writes (a torn write) and chosen unsynced directory changes (the OS may write
//! any of them back on its own).
//!
//! Every handle belongs to the boot it was opened in: after a crash, the old boot's file handles,
//! locks and `PowerLossFs` values fail every call with an I/O error, so a writer thread of the
//! "dead" process cannot change the disk the next boot sees. Locks do not survive a crash.
//!
//! Paths are absolute; the root directory always exists. Nothing touches the real disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, IoSlice};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::vfs::{DirLock, OpenMode, WalFile, WalFs};

type Ino = u64;
const ROOT: Ino = 0;

/// What survives a crash beyond what was synced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Crash {
    /// Of each file's writes since its last sync, this many bytes (in write order) reach the
    /// disk; a write only partly covered is torn. An unsynced `set_len` reaches the disk only if
    /// it came before the budget ran out (with 0, nothing unsynced does).
    pub keep_unsynced_bytes: usize,
    /// Unsynced changes to these directory entries (a creation, a removal, either side of a
    /// rename) reach the disk anyway.
    pub keep_unsynced_entries: Vec<PathBuf>,
}

impl Crash {
    /// A crash that tears each file's unsynced writes after `bytes` bytes.
    pub fn tearing(bytes: usize) -> Crash {
        Crash {
            keep_unsynced_bytes: bytes,
            ..Crash::default()
        }
    }
}

#[derive(Debug)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileNode {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// Changes since the last sync, in order (replayed partly by a tearing crash).
    unsynced: Vec<Change>,
}

impl FileNode {
    fn write_at(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
        let offset = offset as usize;
        if data.len() < offset + bytes.len() {
            data.resize(offset + bytes.len(), 0);
        }
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// The contents after a crash keeping `budget` unsynced bytes.
    fn after_crash(&self, mut budget: usize) -> Vec<u8> {
        let mut data = self.synced.clone();
        for change in &self.unsynced {
            if budget == 0 {
                break;
            }
            match change {
                Change::SetLen(len) => data.resize(*len as usize, 0),
                Change::Write { offset, bytes } => {
                    let kept = bytes.len().min(budget);
                    Self::write_at(&mut data, *offset, &bytes[..kept]);
                    budget -= kept;
                    if kept < bytes.len() {
                        break;
                    }
                }
            }
        }
        data
    }
}

#[derive(Debug, Default)]
struct DirNode {
    entries: BTreeMap<OsString, Ino>,
    synced: BTreeMap<OsString, Ino>,
}

#[derive(Debug)]
enum Node {
    Dir(DirNode),
    File(FileNode),
}

#[derive(Debug, Default)]
struct Counters {
    file_syncs: u64,
    dir_syncs: u64,
}

#[derive(Debug)]
struct Disk {
    boot: u64,
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    /// Lock path → lock id.
    locks: HashMap<PathBuf, u64>,
    next_lock: u64,
    counters: Counters,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn powered_off() -> io::Error {
    io::Error::other("simulated power loss: this handle belongs to a boot before the crash")
}

/// The normal components of an absolute path (`.` and `..` are not supported).
fn components(path: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => names.push(name.to_owned()),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: only plain absolute paths", path.display()),
                ))
            }
        }
    }
    if !path.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: only plain absolute paths", path.display()),
        ));
    }
    Ok(names)
}

impl Disk {
    fn dir(&self, ino: Ino) -> Option<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Option<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Option<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(file)) => Some(file),
            _ => None,
        }
    }

    fn resolve(&self, path: &Path) -> io::Result<Ino> {
        let mut ino = ROOT;
        for name in components(path)? {
            ino = *self
                .dir(ino)
                .and_then(|dir| dir.entries.get(&name))
                .ok_or_else(|| not_found(path))?;
        }
        Ok(ino)
    }

    /// The directory holding `path` and the entry's name.
    fn parent_of(&self, path: &Path) -> io::Result<(Ino, OsString)> {
        let name = path.file_name().ok_or_else(|| not_found(path))?.to_owned();
        let parent = path.parent().ok_or_else(|| not_found(path))?;
        let ino = self.resolve(parent)?;
        self.dir(ino).ok_or_else(|| not_found(parent))?;
        Ok((ino, name))
    }

    fn add(&mut self, node: Node) -> Ino {
        self.next_ino += 1;
        self.nodes.insert(self.next_ino, node);
        self.next_ino
    }

    fn crash(&mut self, crash: &Crash) {
        for path in &crash.keep_unsynced_entries {
            if let Ok((parent, name)) = self.parent_of(path) {
                if let Some(dir) = self.dir_mut(parent) {
                    match dir.entries.get(&name) {
                        Some(ino) => dir.synced.insert(name, *ino),
                        None => dir.synced.remove(&name),
                    };
                }
            }
        }
        for node in self.nodes.values_mut() {
            match node {
                Node::Dir(dir) => dir.entries = dir.synced.clone(),
                Node::File(file) => {
                    file.data = file.after_crash(crash.keep_unsynced_bytes);
                    file.synced = file.data.clone();
                    file.unsynced.clear();
                }
            }
        }
        // Files and directories no durable entry leads to are gone.
        let mut reachable = HashSet::from([ROOT]);
        let mut walk = vec![ROOT];
        while let Some(ino) = walk.pop() {
            if let Some(dir) = self.dir(ino) {
                for child in dir.entries.values() {
                    if reachable.insert(*child) {
                        walk.push(*child);
                    }
                }
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
        self.locks.clear();
        self.boot += 1;
    }
}

/// A simulated disk that loses what was not synced when [`PowerLossFs::crash`] is called. Clones
/// share the disk (and the boot).
#[derive(Clone)]
pub struct PowerLossFs {
    disk: Arc<Mutex<Disk>>,
    boot: u64,
}

impl fmt::Debug for PowerLossFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerLossFs")
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

impl Default for PowerLossFs {
    fn default() -> Self {
        Self::new()
    }
}

fn lock_disk(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    // Every update is complete before the lock is released; a panicking test thread cannot leave
    // half of one behind.
    disk.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PowerLossFs {
    /// An empty disk: only the root directory.
    pub fn new() -> PowerLossFs {
        let nodes = HashMap::from([(ROOT, Node::Dir(DirNode::default()))]);
        PowerLossFs {
            disk: Arc::new(Mutex::new(Disk {
                boot: 0,
                nodes,
                next_ino: ROOT,
                locks: HashMap::new(),
                next_lock: 0,
                counters: Counters::default(),
            })),
            boot: 0,
        }
    }

    /// The disk, if this value belongs to the current boot.
    fn disk(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let disk = lock_disk(&self.disk);
        if disk.boot != self.boot {
            return Err(powered_off());
        }
        Ok(disk)
    }

    /// Loses power: everything not synced is gone. Returns the file system of the next boot;
    /// this value and every handle opened through it fail from now on.
    pub fn crash(&self) -> PowerLossFs {
        self.crash_with(Crash::default())
    }

    /// Like [`PowerLossFs::crash`], keeping what `crash` says on top of what was synced.
    pub fn crash_with(&self, crash: Crash) -> PowerLossFs {
        let mut disk = lock_disk(&self.disk);
        disk.crash(&crash);
        PowerLossFs {
            disk: self.disk.clone(),
            boot: disk.boot,
        }
    }

    /// Creates `dir` (and its parents) durably, as if it had existed long before: test setup.
    pub fn create_durable_dir(&self, dir: &Path) -> io::Result<()> {
        self.create_dir_all(dir)?;
        let mut disk = self.disk()?;
        for dir in disk.nodes.values_mut() {
            if let Node::Dir(dir) = dir {
                dir.synced = dir.entries.clone();
            }
        }
        Ok(())
    }

    /// The current contents of a file (what a read sees), for assertions.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let disk = self.disk()?;
        match disk.nodes.get(&disk.resolve(path)?) {
            Some(Node::File(file)) => Ok(file.data.clone()),
            _ => Err(not_found(path)),
        }
    }

    /// File syncs (`sync_data` + `sync_all`) and directory syncs since the disk was created.
    pub fn syncs(&self) -> (u64, u64) {
        let disk = lock_disk(&self.disk);
        (disk.counters.file_syncs, disk.counters.dir_syncs)
    }
}

struct PowerLossFile {
    disk: Arc<Mutex<Disk>>,
    boot: u64,
    ino: Ino,
    writable: bool,
}

impl fmt::Debug for PowerLossFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerLossFile")
            .field("ino", &self.ino)
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

impl PowerLossFile {
    fn with<T>(
        &self,
        op: impl FnOnce(&mut FileNode, &mut Counters) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut guard = lock_disk(&self.disk);
        let disk = &mut *guard;
        if disk.boot != self.boot {
            return Err(powered_off());
        }
        let file = match disk.nodes.get_mut(&self.ino) {
            Some(Node::File(file)) => file,
            _ => return Err(io::Error::other("simulated file vanished")),
        };
        op(file, &mut disk.counters)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ))
        }
    }
}

impl WalFile for PowerLossFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|file, _| {
            let start = (offset as usize).min(file.data.len());
            let n = buf.len().min(file.data.len() - start);
            buf[..n].copy_from_slice(&file.data[start..start + n]);
            Ok(n)
        })
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.check_writable()?;
        self.with(|file, _| {
            let bytes: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let offset = file.data.len() as u64;
            file.data.extend_from_slice(&bytes);
            let written = bytes.len();
            file.unsynced.push(Change::Write { offset, bytes });
            Ok(written)
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|file, _| Ok(file.data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with(|file, _| {
            file.data.resize(len as usize, 0);
            file.unsynced.push(Change::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|file, counters| {
            file.synced = file.data.clone();
            file.unsynced.clear();
            counters.file_syncs += 1;
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

struct PowerLossLock {
    disk: Arc<Mutex<Disk>>,
    boot: u64,
    path: PathBuf,
    id: u64,
}

impl fmt::Debug for PowerLossLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerLossLock")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DirLock for PowerLossLock {}

impl Drop for PowerLossLock {
    fn drop(&mut self) {
        let mut disk = lock_disk(&self.disk);
        if disk.boot == self.boot && disk.locks.get(&self.path) == Some(&self.id) {
            disk.locks.remove(&self.path);
        }
    }
}

impl WalFs for PowerLossFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<std::sync::Arc<dyn WalFile>> {
        let mut disk = self.disk()?;
        let ino = match mode {
            OpenMode::Read | OpenMode::Append => {
                let ino = disk.resolve(path)?;
                if disk.file_mut(ino).is_none() {
                    return Err(io::Error::other(format!(
                        "{}: is a directory",
                        path.display()
                    )));
                }
                ino
            }
            OpenMode::CreateNew => {
                let (parent, name) = disk.parent_of(path)?;
                if disk
                    .dir(parent)
                    .is_some_and(|dir| dir.entries.contains_key(&name))
                {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{}: exists", path.display()),
                    ));
                }
                let ino = disk.add(Node::File(FileNode::default()));
                if let Some(dir) = disk.dir_mut(parent) {
                    dir.entries.insert(name, ino);
                }
                ino
            }
        };
        Ok(Arc::new(PowerLossFile {
            disk: self.disk.clone(),
            boot: self.boot,
            ino,
            writable: mode != OpenMode::Read,
        }))
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk()?;
        let entries = disk
            .dir(disk.resolve(dir)?)
            .ok_or_else(|| not_found(dir))?
            .entries
            .iter()
            .filter(|(_, ino)| matches!(disk.nodes.get(ino), Some(Node::File(_))))
            .filter_map(|(name, _)| name.to_str().map(str::to_owned))
            .collect();
        Ok(entries)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk()?;
        let (parent, name) = disk.parent_of(path)?;
        let ino = disk.resolve(path)?;
        if disk.file_mut(ino).is_none() {
            return Err(io::Error::other(format!(
                "{}: is a directory",
                path.display()
            )));
        }
        if let Some(dir) = disk.dir_mut(parent) {
            dir.entries.remove(&name);
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk()?;
        let ino = disk.resolve(from)?;
        let (from_parent, from_name) = disk.parent_of(from)?;
        let (to_parent, to_name) = disk.parent_of(to)?;
        if let Some(dir) = disk.dir_mut(from_parent) {
            dir.entries.remove(&from_name);
        }
        if let Some(dir) = disk.dir_mut(to_parent) {
            dir.entries.insert(to_name, ino);
        }
        Ok(())
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        self.disk()
            .is_ok_and(|disk| disk.resolve(dir).is_ok_and(|ino| disk.dir(ino).is_some()))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk()?;
        let mut ino = ROOT;
        for name in components(dir)? {
            let existing = disk
                .dir(ino)
                .ok_or_else(|| not_found(dir))?
                .entries
                .get(&name)
                .copied();
            ino = match existing {
                Some(child) => child,
                None => {
                    let child = disk.add(Node::Dir(DirNode::default()));
                    if let Some(parent) = disk.dir_mut(ino) {
                        parent.entries.insert(name, child);
                    }
                    child
                }
            };
        }
        disk.dir(ino).map(|_| ()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: not a directory", dir.display()),
            )
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk()?;
        let ino = disk.resolve(dir)?;
        let node = disk.dir_mut(ino).ok_or_else(|| not_found(dir))?;
        node.synced = node.entries.clone();
        disk.counters.dir_syncs += 1;
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut disk = self.disk()?;
        if disk.locks.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another holder", path.display()),
            ));
        }
        disk.next_lock += 1;
        let id = disk.next_lock;
        disk.locks.insert(path.to_path_buf(), id);
        Ok(Box::new(PowerLossLock {
            disk: self.disk.clone(),
            boot: self.boot,
            path: path.to_path_buf(),
            id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(file: &Arc<dyn WalFile>, bytes: &[u8]) {
        assert_eq!(file.append(&[IoSlice::new(bytes)]).unwrap(), bytes.len());
    }

    fn setup() -> (PowerLossFs, PathBuf) {
        let fs = PowerLossFs::new();
        let dir = PathBuf::from("/data");
        fs.create_durable_dir(&dir).unwrap();
        (fs, dir)
    }

    #[test]
    fn only_synced_bytes_and_synced_entries_survive() {
        let (fs, dir) = setup();
        let a = dir.join("a");
        let file = fs.open(&a, OpenMode::CreateNew).unwrap();
        append(&file, b"hello");
        // Data synced, entry not: the file is gone.
        file.sync_data().unwrap();
        let fs = fs.crash();
        assert_eq!(fs.list_files(&dir).unwrap(), Vec::<String>::new());

        let file = fs.open(&a, OpenMode::CreateNew).unwrap();
        fs.sync_dir(&dir).unwrap();
        append(&file, b"hello");
        file.sync_data().unwrap();
        append(&file, b" world");
        let fs = fs.crash();
        assert_eq!(fs.read_file(&a).unwrap(), b"hello");
        // The old boot's handles and values are dead.
        assert!(file.append(&[IoSlice::new(b"x")]).is_err());
        assert!(file.len().is_err());
    }

    #[test]
    fn a_tearing_crash_keeps_a_prefix_of_the_unsynced_writes() {
        let (fs, dir) = setup();
        let a = dir.join("a");
        let file = fs.open(&a, OpenMode::CreateNew).unwrap();
        fs.sync_dir(&dir).unwrap();
        append(&file, b"synced.");
        file.sync_all().unwrap();
        append(&file, b"first ");
        append(&file, b"second");
        let fs = fs.crash_with(Crash::tearing(9));
        assert_eq!(fs.read_file(&a).unwrap(), b"synced.first sec");
    }

    #[test]
    fn an_unsynced_set_len_is_lost() {
        let (fs, dir) = setup();
        let a = dir.join("a");
        let file = fs.open(&a, OpenMode::CreateNew).unwrap();
        fs.sync_dir(&dir).unwrap();
        append(&file, b"0123456789");
        file.sync_data().unwrap();
        file.set_len(4).unwrap();
        let fs = fs.crash();
        assert_eq!(fs.read_file(&a).unwrap(), b"0123456789");
    }

    #[test]
    fn unsynced_removes_and_renames_are_undone() {
        let (fs, dir) = setup();
        for name in ["a", "b"] {
            let file = fs.open(&dir.join(name), OpenMode::CreateNew).unwrap();
            append(&file, name.as_bytes());
            file.sync_data().unwrap();
        }
        fs.sync_dir(&dir).unwrap();
        fs.remove_file(&dir.join("a")).unwrap();
        fs.rename(&dir.join("b"), &dir.join("c")).unwrap();
        let mut names = fs.list_files(&dir).unwrap();
        names.sort();
        assert_eq!(names, ["c"]);
        let fs = fs.crash();
        let mut names = fs.list_files(&dir).unwrap();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(fs.read_file(&dir.join("b")).unwrap(), b"b");

        // Kept on purpose: one unsynced change reaches the disk, the other does not.
        fs.remove_file(&dir.join("a")).unwrap();
        fs.remove_file(&dir.join("b")).unwrap();
        let fs = fs.crash_with(Crash {
            keep_unsynced_entries: vec![dir.join("b")],
            ..Crash::default()
        });
        assert_eq!(fs.list_files(&dir).unwrap(), ["a"]);
    }

    #[test]
    fn new_directories_need_their_parent_synced() {
        let fs = PowerLossFs::new();
        fs.create_dir_all(Path::new("/x/y")).unwrap();
        fs.sync_dir(Path::new("/x")).unwrap();
        let fs = fs.crash();
        // `/x`'s own entry in `/` was never synced.
        assert!(!fs.dir_exists(Path::new("/x")));
        crate::vfs::create_dir_durably(&fs, Path::new("/x/y"), true).unwrap();
        let fs = fs.crash();
        assert!(fs.dir_exists(Path::new("/x/y")));
    }

    #[test]
    fn locks_exclude_and_do_not_survive_a_crash() {
        let (fs, dir) = setup();
        let path = dir.join("LOCK");
        let lock = fs.lock(&path).unwrap();
        assert_eq!(
            fs.lock(&path).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let next = fs.crash();
        let relock = next.lock(&path).unwrap();
        // Dropping the dead boot's lock leaves the new holder's alone.
        drop(lock);
        assert_eq!(
            next.lock(&path).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(relock);
        next.lock(&path).unwrap();
    }
}
