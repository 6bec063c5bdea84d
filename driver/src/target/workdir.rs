//! The work directory: the one place under a `file://` target where mlpdrive
//! writes.
//!
//! mlpdrive never overwrites or deletes a file it did not create. So it does
//! not write into the target directory DIR itself: it creates `DIR/mlpdrive/`,
//! puts a marker file in it, and keeps every object below it. A later run
//! reuses the directory only if the marker is there; a `DIR/mlpdrive` that
//! exists without it belongs to someone else and is refused. This is what
//! makes pointing mlpdrive at an existing mount such as `/mnt/nvme` safe.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::target::TargetError;

/// Name of the work directory created under the target directory.
pub const WORKDIR_NAME: &str = "mlpdrive";
/// Name of the marker file inside the work directory.
pub const MARKER_NAME: &str = ".mlpdrive-workdir";

/// First line of the marker; identifies the directory to people and to mlpdrive.
const MARKER_HEADER: &str = "mlpdrive work directory; safe to delete";
/// Layout version of the work directory, recorded in the marker.
const MARKER_VERSION: u32 = 1;
/// A marker larger than this is not one of ours.
const MARKER_MAX_BYTES: u64 = 4096;
/// Linux's limit for one path component (NAME_MAX).
const NAME_MAX_BYTES: usize = 255;

fn marker_content() -> String {
    format!("{MARKER_HEADER}\nversion={MARKER_VERSION}\n")
}

/// A work directory that mlpdrive created (now or in an earlier run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Creates DIR (one level, only if its parent exists) and `DIR/mlpdrive/`
    /// with the marker; or reuses `DIR/mlpdrive/` if it exists and carries
    /// the marker. A `DIR/mlpdrive` without the marker is refused
    /// ([`Error::Usage`]), and nothing is written into it.
    pub fn open_or_create(dir: &Path) -> Result<WorkDir, Error> {
        ensure_target_dir(dir)?;
        let root = dir.join(WORKDIR_NAME);
        if inspect_settled(&root)? {
            return Ok(WorkDir { root });
        }
        match fs::create_dir(&root) {
            Ok(()) => write_marker(&root)?,
            // Another process created it between the look and the mkdir: it
            // must be ours (marked) to be used.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if !inspect_settled(&root)? {
                    return Err(Error::usage(format!("{} disappeared while it was being opened", root.display())));
                }
            }
            Err(e) => return Err(Error::usage(format!("cannot create work directory {}: {e}", root.display()))),
        }
        Ok(WorkDir { root })
    }

    /// `DIR/mlpdrive`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of an object inside the work directory. Names are relative
    /// and '/'-separated; absolute names, empty, `.` and `..` components,
    /// components longer than 255 bytes, NUL bytes and the marker's name are
    /// rejected, so an object can never land outside the work directory or
    /// replace the marker. Creating parent directories is the caller's job.
    pub fn object_path(&self, name: &str) -> Result<PathBuf, TargetError> {
        let bad = |why: &str| Err(TargetError::namespace(format!("object name {name:?}: {why}")));
        if name.is_empty() {
            return bad("is empty");
        }
        if name.contains('\0') {
            return bad("contains a NUL byte");
        }
        if name.starts_with('/') {
            return bad("is absolute; object names are relative to the work directory");
        }
        for comp in name.split('/') {
            match comp {
                "" => return bad("has an empty component (a doubled or trailing '/')"),
                "." | ".." => return bad("has a '.' or '..' component"),
                c if c.len() > NAME_MAX_BYTES => return bad("has a component longer than 255 bytes"),
                _ => {}
            }
        }
        if name.split('/').next() == Some(MARKER_NAME) {
            return bad("is reserved for the work directory's marker");
        }
        Ok(self.root.join(name))
    }
}

/// Refuses, without creating anything, a `DIR/mlpdrive` that exists and is
/// not a marked work directory. Lets the target check fail before any
/// directory is made.
pub(crate) fn check_reusable(dir: &Path) -> Result<(), Error> {
    inspect_settled(&dir.join(WORKDIR_NAME)).map(|_| ())
}

/// Makes sure DIR is a directory, creating it (one level) if missing.
fn ensure_target_dir(dir: &Path) -> Result<(), Error> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::usage(format!(
                "target {} exists and is not a directory; file:// needs a directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::usage(format!("cannot inspect target directory {}: {e}", dir.display()))),
    }
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            Err(Error::usage(format!(
                "cannot create target directory {}: its parent {} does not exist; create it first (mkdir -p {})",
                dir.display(),
                parent.display(),
                parent.display()
            )))
        }
        Err(e) => Err(Error::usage(format!("cannot create target directory {}: {e}", dir.display()))),
    }
}

/// How long [`inspect_settled`] gives another process (an MPI rank on the
/// same target) to finish writing the marker of a directory it just made.
const SETTLE_TRIES: u32 = 20;
const SETTLE_STEP: std::time::Duration = std::time::Duration::from_millis(50);

/// [`inspect`], but a directory that looks like another process is still
/// creating it (empty, or holding only a shorter-than-complete marker) is
/// looked at again for up to a second before it is refused: several ranks
/// of an MPI job open the same `file://` target at once.
fn inspect_settled(root: &Path) -> Result<bool, Error> {
    let mut tries = 0;
    loop {
        let err = match inspect(root) {
            Ok(found) => return Ok(found),
            Err(e) => e,
        };
        if tries >= SETTLE_TRIES {
            return Err(err);
        }
        if !being_created(root) {
            // The creator may have finished between the two looks: one
            // more look decides.
            return inspect(root);
        }
        tries += 1;
        std::thread::sleep(SETTLE_STEP);
    }
}

/// `root` is a directory that is empty or holds only a partial marker.
fn being_created(root: &Path) -> bool {
    let Ok(rd) = fs::read_dir(root) else { return false };
    let complete = marker_content().len() as u64;
    let mut entries = 0;
    for e in rd.flatten() {
        entries += 1;
        let partial_marker =
            e.file_name() == MARKER_NAME && e.metadata().is_ok_and(|m| m.is_file() && m.len() < complete);
        if entries > 1 || !partial_marker {
            return false;
        }
    }
    true
}

/// Whether `root` is a work directory mlpdrive can use: `Ok(true)` if it
/// exists with a valid marker, `Ok(false)` if it does not exist, an error if
/// it exists but is not ours.
fn inspect(root: &Path) -> Result<bool, Error> {
    let shown = root.display();
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::usage(format!("cannot inspect {shown}: {e}"))),
    };
    let foreign = |what: &str| {
        Err(Error::usage(format!(
            "{shown} {what} and was not created by mlpdrive; mlpdrive never writes into or deletes anything it did \
             not create. Choose another target directory, or move {shown} out of the way"
        )))
    };
    if meta.file_type().is_symlink() {
        return foreign("is a symbolic link");
    }
    if !meta.is_dir() {
        return foreign("exists, is not a directory,");
    }
    let marker = root.join(MARKER_NAME);
    let text = match read_marker(&marker) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return foreign(&format!(
                "exists without the {MARKER_NAME} marker (an empty one may be left by an interrupted run)"
            ));
        }
        Err(e) => return Err(Error::usage(format!("cannot read {}: {e}", marker.display()))),
    };
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_HEADER) {
        return foreign(&format!("has a {MARKER_NAME} file that is not mlpdrive's marker"));
    }
    let version = lines.find_map(|l| l.strip_prefix("version="));
    if version != Some(&*MARKER_VERSION.to_string()) {
        return Err(Error::usage(format!(
            "{shown} was made by an mlpdrive with a different work directory layout ({}); this version uses \
             version={MARKER_VERSION}. Choose another target directory, or delete {shown} if its data is no longer needed",
            version.map_or_else(|| "no version recorded".to_string(), |v| format!("version={v}"))
        )));
    }
    Ok(true)
}

/// The marker's text, or `None` if there is no regular file of plausible
/// size by that name (symbolic links are not followed).
fn read_marker(marker: &Path) -> std::io::Result<Option<String>> {
    let meta = match fs::symlink_metadata(marker) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() > MARKER_MAX_BYTES {
        return Ok(None);
    }
    let mut text = String::new();
    match fs::File::open(marker)?.take(MARKER_MAX_BYTES).read_to_string(&mut text) {
        Ok(_) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::InvalidData => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_marker(root: &Path) -> Result<(), Error> {
    let marker = root.join(MARKER_NAME);
    let fail =
        |e: std::io::Error| Error::usage(format!("cannot write the work directory marker {}: {e}", marker.display()));
    let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&marker).map_err(fail)?;
    f.write_all(marker_content().as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn usage_msg(r: Result<impl std::fmt::Debug, Error>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn creates_the_target_dir_and_a_marked_work_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let wd = WorkDir::open_or_create(&dir).unwrap();
        assert_eq!(wd.root(), dir.join("mlpdrive"));
        assert!(wd.root().is_dir());
        let marker = fs::read_to_string(wd.root().join(MARKER_NAME)).unwrap();
        assert_eq!(marker, "mlpdrive work directory; safe to delete\nversion=1\n");
        assert_eq!(listing(&dir), vec!["mlpdrive"]);
    }

    #[test]
    fn an_existing_target_dir_is_used_and_its_files_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("theirs.txt"), b"not ours").unwrap();
        let wd = WorkDir::open_or_create(tmp.path()).unwrap();
        assert_eq!(listing(tmp.path()), vec!["mlpdrive", "theirs.txt"]);
        assert_eq!(fs::read(tmp.path().join("theirs.txt")).unwrap(), b"not ours");
        assert_eq!(listing(wd.root()), vec![MARKER_NAME]);
    }

    #[test]
    fn a_marked_work_dir_is_reused_with_its_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let first = WorkDir::open_or_create(tmp.path()).unwrap();
        fs::write(first.object_path("obj-1").unwrap(), b"data").unwrap();
        check_reusable(tmp.path()).unwrap();
        let second = WorkDir::open_or_create(tmp.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(fs::read(second.root().join("obj-1")).unwrap(), b"data");
        assert_eq!(
            fs::read_to_string(second.root().join(MARKER_NAME)).unwrap(),
            "mlpdrive work directory; safe to delete\nversion=1\n"
        );
    }

    #[test]
    fn a_foreign_mlpdrive_dir_is_refused_and_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let foreign = tmp.path().join("mlpdrive");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("important"), b"x").unwrap();
        let m = usage_msg(WorkDir::open_or_create(tmp.path()));
        assert!(m.contains(&foreign.display().to_string()), "{m}");
        assert!(m.contains("was not created by mlpdrive") && m.contains("Choose another target directory"), "{m}");
        assert!(usage_msg(check_reusable(tmp.path())).contains("was not created by mlpdrive"));
        assert_eq!(listing(&foreign), vec!["important"]);
    }

    #[test]
    fn a_mlpdrive_file_or_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("mlpdrive"), b"x").unwrap();
        assert!(usage_msg(WorkDir::open_or_create(tmp.path())).contains("is not a directory"));

        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // Even a link to a marked work directory: the link itself is not ours.
        WorkDir::open_or_create(elsewhere.path()).unwrap();
        symlink(elsewhere.path().join("mlpdrive"), tmp.path().join("mlpdrive")).unwrap();
        assert!(usage_msg(WorkDir::open_or_create(tmp.path())).contains("is a symbolic link"));
    }

    #[test]
    fn a_wrong_or_foreign_marker_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("mlpdrive");
        fs::create_dir(&root).unwrap();
        fs::write(root.join(MARKER_NAME), b"something else\n").unwrap();
        assert!(usage_msg(WorkDir::open_or_create(tmp.path())).contains("not mlpdrive's marker"));

        fs::write(root.join(MARKER_NAME), format!("{MARKER_HEADER}\nversion=2\n")).unwrap();
        let m = usage_msg(WorkDir::open_or_create(tmp.path()));
        assert!(m.contains("version=2") && m.contains("version=1"), "{m}");

        fs::remove_file(root.join(MARKER_NAME)).unwrap();
        symlink("/etc/hostname", root.join(MARKER_NAME)).unwrap();
        assert!(usage_msg(WorkDir::open_or_create(tmp.path())).contains("without the .mlpdrive-workdir marker"));
    }

    #[test]
    fn only_one_level_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let m = usage_msg(WorkDir::open_or_create(&tmp.path().join("a/b")));
        assert!(m.contains("does not exist") && m.contains("create it first"), "{m}");
        assert!(listing(tmp.path()).is_empty());
    }

    #[test]
    fn a_file_as_target_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"x").unwrap();
        assert!(usage_msg(WorkDir::open_or_create(&f)).contains("is not a directory"));
        assert_eq!(fs::read(&f).unwrap(), b"x");
    }

    #[test]
    fn object_paths_stay_inside_the_work_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = WorkDir::open_or_create(tmp.path()).unwrap();
        assert_eq!(wd.object_path("a").unwrap(), wd.root().join("a"));
        assert_eq!(wd.object_path("ckpt/rank-0/shard.bin").unwrap(), wd.root().join("ckpt/rank-0/shard.bin"));
        assert_eq!(wd.object_path("x.mlpdrive-workdir").unwrap(), wd.root().join("x.mlpdrive-workdir"));
        let long = "n".repeat(256);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("..", "'..'"),
            ("../escape", "'..'"),
            ("a/../../escape", "'..'"),
            ("a/./b", "'.'"),
            (".", "'.'"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a\0b", "NUL"),
            (MARKER_NAME, "reserved"),
            (".mlpdrive-workdir/x", "reserved"),
            (&long, "longer than 255"),
        ];
        for (name, why) in cases {
            match wd.object_path(name) {
                Err(TargetError::Namespace(m)) => assert!(m.contains(why), "{name:?}: {m}"),
                other => panic!("{name:?}: expected a namespace error, got {other:?}"),
            }
        }
    }
}
