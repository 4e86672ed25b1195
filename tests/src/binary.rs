//! Locating the `sluice` binary the end-to-end tests run, and making sure it is the one the
//! current sources build.
//!
//! A test must never pass on a stale binary: `target/debug/sluice` left over from an older
//! checkout would otherwise be run as if it were the code under test. Cargo writes, next to the
//! binary, a dep-info file (`target/debug/sluice.d`) listing every source file the binary was
//! built from. Before the first broker of a test process starts, [`sluice_binary`] compares their
//! modification times with the binary's. If any source is newer, the binary or its dep-info is
//! missing, or the binary was built from another checkout into the same target dir (its dep-info
//! does not list this checkout's `src/main.rs`), it runs `cargo build -p sluice --bin sluice`
//! itself and checks again, failing with the list of newer files if the build did not bring the
//! binary up to date.
//!
//! `$SLUICE_BIN` names a binary explicitly (e.g. a release build for a benchmark); it is run as
//! given, unchecked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context as _, Result};

/// Path of the `sluice` binary: `$SLUICE_BIN`, else `target/debug/sluice` in the workspace
/// (honouring `$CARGO_TARGET_DIR`), built or rebuilt first when older than its sources. Checked
/// once per test process.
pub fn sluice_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("SLUICE_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    static CHECKED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| up_to_date_binary().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("tests/ has no parent directory")
}

fn target_dir(workspace_root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace_root.join(dir)
            }
        })
        .unwrap_or_else(|| workspace_root.join("target"))
}

fn up_to_date_binary() -> Result<PathBuf> {
    let root = workspace_root()?;
    let binary = target_dir(&root).join("debug").join("sluice");
    let dep_info = binary.with_extension("d");
    let main = root.join("src").join("main.rs");
    if freshness(&binary, &dep_info, Some(&main))? == Freshness::Fresh {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "-p", "sluice", "--bin", "sluice"])
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {} build -p sluice", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("`cargo build -p sluice` failed ({status}): the end-to-end tests need the binary");
    }
    match freshness(&binary, &dep_info, Some(&main))? {
        Freshness::Fresh => Ok(binary),
        Freshness::Missing => bail!(
            "{} or {} still missing after `cargo build -p sluice`",
            binary.display(),
            dep_info.display()
        ),
        Freshness::Stale(newer) => bail!(
            "{} is older than these sources even after `cargo build -p sluice`: {}",
            binary.display(),
            newer
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether a binary is at least as new as every source its dep-info file lists.
#[derive(Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// The binary or its dep-info file does not exist.
    Missing,
    /// These sources were modified after the binary was written (or no longer exist).
    Stale(Vec<PathBuf>),
}

/// Compares `binary`'s modification time with the sources listed in `dep_info` (Cargo's
/// Makefile-style `target: source source ...` file, spaces in paths escaped as `\ `). With
/// `expected_main`, a dep-info file that does not list it (a binary built from another checkout
/// into the same target dir) is stale too.
pub fn freshness(
    binary: &Path,
    dep_info: &Path,
    expected_main: Option<&Path>,
) -> Result<Freshness> {
    let (Ok(built), Ok(text)) = (
        binary.metadata().and_then(|m| m.modified()),
        std::fs::read_to_string(dep_info),
    ) else {
        return Ok(Freshness::Missing);
    };
    let sources = dep_info_sources(&text);
    if sources.is_empty() {
        bail!("{} lists no sources", dep_info.display());
    }
    // Built from another checkout sharing this target dir (its sources are not ours).
    if let Some(main) = expected_main {
        if !sources.iter().any(|source| source == main) {
            return Ok(Freshness::Stale(vec![main.to_path_buf()]));
        }
    }
    let newer: Vec<PathBuf> = sources
        .into_iter()
        .filter(|source| {
            source
                .metadata()
                .and_then(|m| m.modified())
                .map_or(true, |modified| modified > built)
        })
        .collect();
    Ok(if newer.is_empty() {
        Freshness::Fresh
    } else {
        Freshness::Stale(newer)
    })
}

/// The prerequisites of the first rule of a dep-info file.
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let Some(line) = text.lines().next() else {
        return Vec::new();
    };
    // The target ends at the first unescaped ": ".
    let mut rest = None;
    let bytes = line.as_bytes();
    for i in 0..bytes.len().saturating_sub(1) {
        if bytes[i] == b':' && bytes[i + 1] == b' ' && (i == 0 || bytes[i - 1] != b'\\') {
            rest = Some(&line[i + 2..]);
            break;
        }
    }
    let Some(rest) = rest else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                current.push(' ');
                chars.next();
            }
            ' ' => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    sources
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    use super::*;

    fn touch(path: &Path, at: SystemTime) {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap();
        file.set_modified(at).unwrap();
    }

    #[test]
    fn dep_info_lists_sources_with_escaped_spaces() {
        let text =
            "/t/debug/sluice: /w/src/main.rs /w/my\\ dir/lib.rs  /w/b.rs\n\n/w/src/main.rs:\n";
        assert_eq!(
            dep_info_sources(text),
            vec![
                PathBuf::from("/w/src/main.rs"),
                PathBuf::from("/w/my dir/lib.rs"),
                PathBuf::from("/w/b.rs"),
            ]
        );
    }

    #[test]
    fn a_binary_older_than_one_of_its_sources_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (binary, dep_info) = (dir.path().join("sluice"), dir.path().join("sluice.d"));
        let (a, b) = (dir.path().join("a.rs"), dir.path().join("b.rs"));
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        let check = || freshness(&binary, &dep_info, None).unwrap();
        assert_eq!(check(), Freshness::Missing);
        touch(&a, t0);
        touch(&b, t0);
        touch(&binary, t0 + Duration::from_secs(60));
        std::fs::write(
            &dep_info,
            format!("{}: {} {}\n", binary.display(), a.display(), b.display()),
        )
        .unwrap();
        assert_eq!(check(), Freshness::Fresh);
        // Built from these sources, but not from this checkout's main.rs.
        let ours = dir.path().join("main.rs");
        touch(&ours, t0);
        assert_eq!(
            freshness(&binary, &dep_info, Some(&ours)).unwrap(),
            Freshness::Stale(vec![ours.clone()])
        );
        assert_eq!(
            freshness(&binary, &dep_info, Some(&a)).unwrap(),
            Freshness::Fresh
        );
        // One source edited after the build.
        touch(&b, t0 + Duration::from_secs(120));
        assert_eq!(check(), Freshness::Stale(vec![b.clone()]));
        // A source that was removed also makes the binary stale.
        touch(&binary, t0 + Duration::from_secs(180));
        std::fs::remove_file(&a).unwrap();
        assert_eq!(check(), Freshness::Stale(vec![a]));
    }

    #[test]
    fn the_workspace_binary_is_not_older_than_its_sources() {
        // The harness's own guarantee, on the real tree: after sluice_binary() returns,
        // every source the binary was built from is at most as new as it.
        let binary = sluice_binary().unwrap();
        if std::env::var_os("SLUICE_BIN").is_none() {
            let main = workspace_root().unwrap().join("src").join("main.rs");
            assert_eq!(
                freshness(&binary, &binary.with_extension("d"), Some(&main)).unwrap(),
                Freshness::Fresh
            );
        }
    }
}
