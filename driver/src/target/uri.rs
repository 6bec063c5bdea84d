//! Target URIs (`file://DIR`, `dev:///dev/X`, `null://`, `emu://PROFILE`,
//! `nbd://HOST:PORT[/EXPORT]`, `s3://BUCKET[/PREFIX]`) and the safety rules
//! checked before anything is created.
//!
//! A target always needs a scheme: the scheme says what mlpdrive may do to the
//! path (create files in a directory, or overwrite a whole device), so it is
//! never guessed from a bare path. [`parse`] checks the syntax only;
//! [`check`] looks at the system and refuses targets that would be dangerous
//! (system directories, device nodes behind `file://`, raw devices without
//! `--allow-raw-device`, mounted devices without `--force`). Both create
//! nothing; creating the work directory is [`super::workdir`]'s job, after the
//! check passed. docs/targets.md describes the forms and rules for users.
//!
//! The rules are pure functions of facts gathered by [`probe`], so every rule
//! is tested, including those a test cannot set up for real (an unwritable
//! directory while running as root, a device held by LVM).

mod probe;

use std::path::{Path, PathBuf};

use probe::{DevFacts, FileFacts, NodeKind};

use crate::error::Error;

/// The target used when `--target` is absent.
pub const DEFAULT_TARGET: &str = "file://./mlpdrive-data";

/// Shown whenever a URI is not understood.
const SUPPORTED: &str = "supported targets: file://DIR (a directory, e.g. file://./mlpdrive-data or \
     file:///mnt/nvme), dev:///dev/X (a raw block device, needs --allow-raw-device), null:// (stores \
     nothing; measures mlpdrive itself), emu://PROFILE (an emulated device in memory, e.g. emu://nvme-gen4), \
     nbd://HOST:PORT[/EXPORT] (an NBD export, e.g. one served by `mlpdrive emu serve`), s3://BUCKET[/PREFIX] \
     (an S3 bucket; endpoint and credentials from the AWS environment or --set s3.*)";

/// Schemes that later versions will support; named so the error can say so.
const PLANNED_SCHEMES: &[&str] = &["az", "gs"];

/// The NBD protocol's registered port, used when `nbd://HOST` has none.
pub const NBD_DEFAULT_PORT: u16 = 10809;

/// Refused for `file://`, with everything below them, unless `--force`.
/// `/dev` has one exception: a tmpfs mounted below it, such as `/dev/shm`.
const SYSTEM_TREES: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/sys", "/proc", "/dev", "/run",
    "/var/lib", "/var/log",
];

/// Refused for `file://` themselves (not their subdirectories) unless `--force`.
const TOP_LEVEL_ONLY: &[&str] = &["/", "/home", "/root", "/var"];

/// A parsed target URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetUri {
    /// Files in a directory (created if missing, one level only).
    File { dir: PathBuf },
    /// A raw block device, or a regular file used as a device image.
    Dev { path: PathBuf },
    /// Completes every operation at once and stores nothing.
    Null,
    /// An emulated device in memory, timed by a named device profile.
    Emu(EmuSpec),
    /// An export of an NBD server.
    Nbd(NbdSpec),
    /// Objects in an S3 bucket, under a key prefix.
    S3(S3Spec),
}

/// `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Spec {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

/// `nbd://HOST[:PORT][/EXPORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdSpec {
    /// Host name or address (IPv6 without the brackets).
    pub host: String,
    /// TCP port (10809 when absent).
    pub port: u16,
    /// Export name; empty asks for the server's default export.
    pub export: String,
    /// `--allow-raw-device` was given: an export that is not an mlpdrive
    /// emu export may be overwritten. Set by [`check`], not by the URI.
    pub allow_overwrite: bool,
}

/// `emu://PROFILE[?seed=N&size=S&clock=real|virtual&store=mem|none]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmuSpec {
    /// A built-in profile name (configs/devices/) or a path to a profile YAML.
    pub profile: String,
    /// The device model's seed; the run seed when absent.
    pub seed: Option<u64>,
    /// Overrides the profile's capacity (bytes).
    pub size: Option<u64>,
    /// `clock=virtual`: a deterministic discrete-event simulation.
    pub virtual_clock: bool,
    /// `store=mem` (bytes) or `store=none` (block identities only).
    pub store: super::emu::StoreKind,
}

/// The command-line flags that relax the safety rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SafetyFlags {
    /// `--allow-raw-device`: `dev://` may overwrite the device.
    pub allow_raw_device: bool,
    /// `--force`: system directories and in-use devices are accepted.
    pub force: bool,
}

/// A target that passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// The URI with its path made absolute and symbolic links resolved, so
    /// the path used for I/O is the path that was checked.
    pub uri: TargetUri,
    /// For messages and results, e.g. `file:///abs/path`.
    pub display: String,
    /// `file://` only: DIR exists already (else the work directory creates
    /// it). False for the other schemes.
    pub dir_exists: bool,
}

/// Parses `file://DIR` (relative like `file://./x`, or absolute like
/// `file:///mnt/x`), `dev:///dev/X` and `null://`. Syntax only: nothing on
/// the system is looked at. Errors are [`Error::Usage`].
pub fn parse(s: &str) -> Result<TargetUri, Error> {
    if s.is_empty() {
        return Err(Error::usage(format!("the target URI is empty; {SUPPORTED}")));
    }
    if s.trim() != s {
        return Err(Error::usage(format!(
            "target `{s}` starts or ends with whitespace; remove it (quote the path if it really contains spaces inside)"
        )));
    }
    if s.contains('\0') {
        return Err(Error::usage("the target URI contains a NUL byte"));
    }
    let Some((scheme, rest)) = s.split_once("://").filter(|(scheme, _)| is_scheme(scheme)) else {
        return Err(bare_path_error(s));
    };
    let scheme_lc = scheme.to_ascii_lowercase();
    match scheme_lc.as_str() {
        "file" => parse_file(s, rest),
        "dev" => parse_dev(s, rest),
        "null" if rest.is_empty() => Ok(TargetUri::Null),
        "null" => Err(Error::usage(format!("target `{s}`: null:// takes no path; write null://"))),
        "emu" => parse_emu(s, rest),
        "nbd" => parse_nbd(s, rest),
        "s3" => parse_s3(s, rest),
        planned if PLANNED_SCHEMES.contains(&planned) => Err(Error::usage(format!(
            "target `{s}`: {planned}:// targets are planned but not available in this version of mlpdrive; {SUPPORTED}"
        ))),
        _ => Err(Error::usage(format!("target `{s}`: unknown scheme `{scheme}://`; {SUPPORTED}"))),
    }
}

/// RFC 3986 scheme syntax: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn bare_path_error(s: &str) -> Error {
    let mut msg = format!(
        "target `{s}` has no scheme; mlpdrive needs one to know what it may write. For a directory write \
         --target file://{s}"
    );
    if s.starts_with("/dev/") {
        msg.push_str(&format!(
            "; for the raw block device itself write --target dev://{s} --allow-raw-device (this overwrites the data on it)"
        ));
    } else if s.eq_ignore_ascii_case("null") {
        msg.push_str("; for the target that stores nothing write --target null://");
    }
    Error::Usage(msg)
}

fn parse_file(s: &str, dir: &str) -> Result<TargetUri, Error> {
    if dir.is_empty() {
        return Err(Error::usage(format!(
            "target `{s}`: file:// needs a directory, e.g. file://./mlpdrive-data (relative) or file:///mnt/nvme (absolute)"
        )));
    }
    if dir == "~" || dir.starts_with("~/") {
        return Err(Error::usage(format!(
            "target `{s}`: `~` is not expanded in target URIs (it would create a directory named `~`); write the full \
             path, e.g. file://$HOME/{}",
            dir.trim_start_matches('~').trim_start_matches('/')
        )));
    }
    Ok(TargetUri::File { dir: PathBuf::from(dir) })
}

fn parse_emu(s: &str, rest: &str) -> Result<TargetUri, Error> {
    let (profile, query) = rest.split_once('?').unwrap_or((rest, ""));
    if profile.is_empty() {
        return Err(Error::usage(format!(
            "target `{s}`: emu:// needs a device profile, e.g. emu://nvme-gen4; built-in profiles: {}",
            mlpdrive_emu::BUILTIN_PROFILES.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut spec = EmuSpec {
        profile: profile.to_string(),
        seed: None,
        size: None,
        virtual_clock: false,
        store: super::emu::StoreKind::Mem,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (k, v) {
            ("seed", v) => {
                spec.seed = Some(v.parse().map_err(|_| {
                    Error::usage(format!("target `{s}`: seed={v} is not an unsigned integer, e.g. seed=42"))
                })?);
            }
            ("size", v) => {
                let bytes =
                    crate::units::parse_bytes(v).map_err(|e| Error::usage(format!("target `{s}`: size={v}: {e}")))?;
                spec.size = Some(bytes);
            }
            ("clock", "real") => spec.virtual_clock = false,
            ("clock", "virtual") => spec.virtual_clock = true,
            ("store", "mem") => spec.store = super::emu::StoreKind::Mem,
            ("store", "none") => spec.store = super::emu::StoreKind::None,
            ("clock", _) | ("store", _) => {
                return Err(Error::usage(format!(
                    "target `{s}`: {k}={v} is not a choice; accepted: clock=real or clock=virtual, store=mem or \
                     store=none"
                )));
            }
            _ => {
                return Err(Error::usage(format!(
                    "target `{s}`: unknown emu:// parameter `{pair}`; accepted: seed=N, size=SIZE, \
                     clock=real|virtual, store=mem|none"
                )));
            }
        }
    }
    Ok(TargetUri::Emu(spec))
}

fn parse_nbd(s: &str, rest: &str) -> Result<TargetUri, Error> {
    let form = "write nbd://HOST:PORT/EXPORT, e.g. nbd://127.0.0.1:10809/mlpdrive (the port defaults to 10809, the \
                export to the server's default)";
    if rest.contains('?') || rest.contains('#') {
        return Err(Error::usage(format!("target `{s}`: nbd:// takes no parameters; {form}")));
    }
    let (authority, export) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(Error::usage(format!("target `{s}`: unclosed `[` in the IPv6 address; {form}")));
        };
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(Error::usage(format!("target `{s}`: nbd:// needs a host; {form}")));
    }
    let port = match port {
        None => NBD_DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(Error::usage(format!("target `{s}`: port `{p}` is not a number from 1 to 65535; {form}"))),
        },
    };
    if export.len() > 4096 {
        return Err(Error::usage(format!("target `{s}`: the export name is longer than 4096 bytes")));
    }
    Ok(TargetUri::Nbd(NbdSpec { host: host.to_string(), port, export: export.to_string(), allow_overwrite: false }))
}

/// Bucket names follow S3's rules (3–63 characters: lowercase letters,
/// digits, `.`, `-`, starting and ending with a letter or digit), so a typo
/// is caught before any request.
fn parse_s3(s: &str, rest: &str) -> Result<TargetUri, Error> {
    let form = "write s3://BUCKET or s3://BUCKET/PREFIX, e.g. s3://mlpdrive-test/run1 (the endpoint is set with \
                --set s3.endpoint=URL or AWS_ENDPOINT_URL, not in the target)";
    if rest.contains('?') || rest.contains('#') {
        return Err(Error::usage(format!("target `{s}`: s3:// takes no parameters; {form}")));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::usage(format!("target `{s}`: s3:// needs a bucket name; {form}")));
    }
    if bucket.contains(':') || bucket.contains('@') {
        return Err(Error::usage(format!(
            "target `{s}`: `{bucket}` is not a bucket name (an endpoint or credentials do not belong in the target); \
             {form}"
        )));
    }
    let valid_chars = bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let valid_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !(3..=63).contains(&bucket.len()) || !valid_chars || !valid_ends || bucket.contains("..") {
        return Err(Error::usage(format!(
            "target `{s}`: `{bucket}` is not a valid bucket name (3 to 63 lowercase letters, digits, `.` or `-`, \
             starting and ending with a letter or digit)"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p.is_empty() || p == "." || p == "..") && !prefix.is_empty() {
        return Err(Error::usage(format!("target `{s}`: the prefix `{prefix}` has an empty, `.` or `..` part")));
    }
    if prefix.len() > 512 {
        return Err(Error::usage(format!("target `{s}`: the prefix is longer than 512 bytes")));
    }
    Ok(TargetUri::S3(S3Spec { bucket: bucket.to_string(), prefix: prefix.to_string() }))
}

fn parse_dev(s: &str, path: &str) -> Result<TargetUri, Error> {
    if !path.starts_with('/') {
        return Err(Error::usage(format!(
            "target `{s}`: dev:// needs an absolute device path, e.g. dev:///dev/nvme1n1 (three slashes)"
        )));
    }
    Ok(TargetUri::Dev { path: PathBuf::from(path) })
}

/// Applies the safety rules to a parsed URI and resolves its path. Creates
/// nothing. Every refusal is an [`Error::Usage`] naming the path, the reason
/// and the fix or flag.
pub fn check(uri: &TargetUri, flags: &SafetyFlags) -> Result<TargetSpec, Error> {
    match uri {
        TargetUri::File { dir } => {
            let facts = probe::file_facts(dir)?;
            let spec = judge_file(dir, &facts, flags)?;
            if spec.dir_exists {
                // A foreign DIR/mlpdrive is refused now, before anything is created.
                super::workdir::check_reusable(&facts.resolved)?;
            }
            Ok(spec)
        }
        TargetUri::Dev { path } => judge_dev(path, &probe::dev_facts(path)?, flags),
        TargetUri::Null => Ok(TargetSpec { uri: TargetUri::Null, display: "null://".to_string(), dir_exists: false }),
        TargetUri::Emu(spec) => {
            mlpdrive_emu::Profile::load(&spec.profile)
                .map_err(|e| Error::usage(format!("target emu://{}: {e}", spec.profile)))?;
            let mut display = format!("emu://{}", spec.profile);
            let mut params = Vec::new();
            if let Some(seed) = spec.seed {
                params.push(format!("seed={seed}"));
            }
            if let Some(size) = spec.size {
                params.push(format!("size={size}"));
            }
            if spec.virtual_clock {
                params.push("clock=virtual".to_string());
            }
            if spec.store != super::emu::StoreKind::Mem {
                params.push(format!("store={}", spec.store.as_str()));
            }
            if !params.is_empty() {
                display = format!("{display}?{}", params.join("&"));
            }
            Ok(TargetSpec { uri: uri.clone(), display, dir_exists: false })
        }
        TargetUri::Nbd(spec) => {
            // Whether the export may be overwritten is known only once the
            // server describes it; the target decides at open time.
            let host = if spec.host.contains(':') { format!("[{}]", spec.host) } else { spec.host.clone() };
            let display = format!("nbd://{host}:{}/{}", spec.port, spec.export);
            let spec = NbdSpec { allow_overwrite: flags.allow_raw_device, ..spec.clone() };
            Ok(TargetSpec { uri: TargetUri::Nbd(spec), display, dir_exists: false })
        }
        TargetUri::S3(spec) => {
            let display = if spec.prefix.is_empty() {
                format!("s3://{}", spec.bucket)
            } else {
                format!("s3://{}/{}", spec.bucket, spec.prefix)
            };
            Ok(TargetSpec { uri: uri.clone(), display, dir_exists: false })
        }
    }
}

/// `file://./x (resolved to /abs/x)`, or just `file:///abs/x`.
fn label(scheme: &str, given: &Path, resolved: &Path) -> String {
    if given == resolved {
        format!("{scheme}://{}", given.display())
    } else {
        format!("{scheme}://{} (resolved to {})", given.display(), resolved.display())
    }
}

/// The rules for `file://DIR`.
fn judge_file(given: &Path, facts: &FileFacts, flags: &SafetyFlags) -> Result<TargetSpec, Error> {
    let label = label("file", given, &facts.resolved);
    let path = facts.resolved.display();
    let refuse = |why: String| Err(Error::Usage(format!("target {label}: {why}")));
    // Device nodes are refused even with --force: file:// never writes to one.
    match facts.kind {
        NodeKind::BlockDevice => {
            return refuse(format!(
                "{path} is a block device, not a directory; to write to the device itself use dev://{path} with \
                 --allow-raw-device (this overwrites the data on it)"
            ));
        }
        NodeKind::CharDevice => {
            return refuse(format!(
                "{path} is a character device, not a directory; file:// needs a directory to create files in"
            ));
        }
        _ => {}
    }
    if !flags.force
        && let Some(why) = system_reason(&facts.resolved, facts.on_tmpfs_below_dev, facts.home.as_deref())
    {
        return refuse(format!(
            "refused because {why}. Choose a directory meant for data (for example file:///mnt/nvme or \
             file://./mlpdrive-data), or pass --force if you really mean this one"
        ));
    }
    let parent = facts.resolved.parent().unwrap_or(Path::new("/"));
    match (facts.kind, facts.parent_kind) {
        (NodeKind::Dir, _) | (NodeKind::Missing, NodeKind::Dir) => {}
        (NodeKind::File, _) => {
            return refuse(format!(
                "{path} is a regular file, not a directory; file:// needs a directory (to use a file as a device \
                 image write dev://{path} with --allow-raw-device)"
            ));
        }
        (NodeKind::Missing, NodeKind::Missing) => {
            return refuse(format!(
                "parent directory {} does not exist; create it first (mkdir -p {}); mlpdrive creates only the last \
                 level of the target directory",
                parent.display(),
                parent.display()
            ));
        }
        (NodeKind::Missing, _) => {
            return refuse(format!(
                "{} is not a directory, so {path} cannot be created in it; choose another target directory",
                parent.display()
            ));
        }
        _ => {
            return refuse(format!("{path} is not a directory (a FIFO or socket); file:// needs a directory"));
        }
    }
    let checked = if facts.kind == NodeKind::Dir { facts.resolved.as_path() } else { parent };
    match facts.write {
        Some(w) if w.read_only => {
            return refuse(format!(
                "{} is on a read-only filesystem; choose a target on a writable filesystem (or remount it read-write)",
                checked.display()
            ));
        }
        Some(w) if !w.access_ok => {
            return refuse(format!(
                "{} is not writable by this user; choose a directory you can write to, or change its permissions",
                checked.display()
            ));
        }
        Some(_) => {}
        None => return refuse(format!("cannot tell whether {} is writable", checked.display())),
    }
    Ok(TargetSpec {
        uri: TargetUri::File { dir: facts.resolved.clone() },
        display: format!("file://{path}"),
        dir_exists: facts.kind == NodeKind::Dir,
    })
}

/// Why `resolved` is a system location that `file://` refuses without
/// `--force`, or `None` if it is not one.
fn system_reason(resolved: &Path, on_tmpfs_below_dev: bool, home: Option<&Path>) -> Option<String> {
    if resolved == Path::new("/") {
        return Some("it is the root directory /".to_string());
    }
    for tree in SYSTEM_TREES {
        if resolved.starts_with(tree) {
            if *tree == "/dev" {
                if on_tmpfs_below_dev {
                    continue;
                }
                return Some(
                    "/dev holds device nodes, and nothing under it may be a target except a tmpfs mount such as \
                     /dev/shm"
                        .to_string(),
                );
            }
            return Some(format!("{tree} is a system directory, and nothing under it may be a target"));
        }
    }
    for top in TOP_LEVEL_ONLY {
        if resolved == Path::new(top) {
            return Some(format!(
                "{top} is a top-level system directory (a subdirectory such as {}/mlpdrive-data is fine)",
                top.trim_end_matches('/')
            ));
        }
    }
    if home == Some(resolved) || resolved.parent() == Some(Path::new("/home")) {
        return Some(format!(
            "{} is a home directory itself (a subdirectory such as {}/mlpdrive-data is fine)",
            resolved.display(),
            resolved.display()
        ));
    }
    None
}

/// The rules for `dev://PATH`.
fn judge_dev(given: &Path, facts: &DevFacts, flags: &SafetyFlags) -> Result<TargetSpec, Error> {
    let label = label("dev", given, &facts.resolved);
    let path = facts.resolved.display();
    let refuse = |why: String| Err(Error::Usage(format!("target {label}: {why}")));
    match facts.kind {
        NodeKind::BlockDevice | NodeKind::File => {}
        NodeKind::Missing => {
            return refuse(format!(
                "{} does not exist; name an existing block device such as dev:///dev/nvme1n1 (`lsblk` lists them)",
                given.display()
            ));
        }
        NodeKind::Dir => {
            return refuse(format!(
                "{path} is a directory, not a block device; to create files in it write file://{path}"
            ));
        }
        NodeKind::CharDevice => {
            return refuse(format!(
                "{path} is a character device; dev:// needs a block device (or a regular file used as a device image)"
            ));
        }
        NodeKind::Other => {
            return refuse(format!("{path} is not a block device; dev:// needs a block device"));
        }
    }
    let is_image = facts.kind == NodeKind::File;
    if !flags.allow_raw_device {
        let what = if is_image {
            "the contents of this file"
        } else {
            "everything on the device (partition table, filesystems, data)"
        };
        return refuse(format!(
            "refused without --allow-raw-device: mlpdrive writes to it directly and overwrites {what}. Pass \
             --allow-raw-device if that is what you want"
        ));
    }
    if !flags.force {
        match &facts.in_use {
            Ok(uses) if uses.is_empty() => {}
            Ok(uses) => {
                return refuse(format!(
                    "refused because it is in use ({}); writing to it would corrupt that data. Unmount it or stop \
                     using it first, or pass --force",
                    uses.join("; ")
                ));
            }
            Err(e) => {
                return refuse(format!(
                    "cannot tell whether it is mounted or in use ({e}); pass --force to skip this check"
                ));
            }
        }
    }
    match facts.write {
        Some(w) if w.read_only => return refuse(format!("{path} is read-only; choose a writable device")),
        Some(w) if !w.access_ok => {
            return refuse(format!(
                "{path} cannot be opened for reading and writing by this user; run with the needed permissions \
                 (e.g. the disk group)"
            ));
        }
        Some(_) => {}
        None => return refuse(format!("cannot tell whether {path} is writable")),
    }
    let suffix = if is_image { " (regular file)" } else { "" };
    Ok(TargetSpec {
        uri: TargetUri::Dev { path: facts.resolved.clone() },
        display: format!("dev://{path}{suffix}"),
        dir_exists: false,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    use super::probe::WriteFacts;
    use super::*;

    const NO_FLAGS: SafetyFlags = SafetyFlags { allow_raw_device: false, force: false };
    const FORCE: SafetyFlags = SafetyFlags { allow_raw_device: false, force: true };
    const RAW: SafetyFlags = SafetyFlags { allow_raw_device: true, force: false };
    const RAW_FORCE: SafetyFlags = SafetyFlags { allow_raw_device: true, force: true };

    #[test]
    fn emu_clock_and_store_choices_parse_and_show_in_the_display() {
        let TargetUri::Emu(spec) = parse("emu://ci-fast?clock=virtual&store=none&seed=3").unwrap() else {
            panic!("not emu")
        };
        assert!(spec.virtual_clock);
        assert_eq!(spec.store, crate::target::emu::StoreKind::None);
        let checked = check(&TargetUri::Emu(spec), &SafetyFlags::default()).unwrap();
        assert_eq!(checked.display, "emu://ci-fast?seed=3&clock=virtual&store=none");
        let TargetUri::Emu(spec) = parse("emu://ci-fast?clock=real&store=mem").unwrap() else { panic!("not emu") };
        assert!(!spec.virtual_clock);
        assert_eq!(spec.store, crate::target::emu::StoreKind::Mem);
        for bad in ["emu://ci-fast?clock=fast", "emu://ci-fast?store=disk", "emu://ci-fast?clock"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("clock=real or clock=virtual, store=mem or store=none"), "{bad}: {e}");
        }
    }

    fn usage_msg(r: Result<impl std::fmt::Debug, Error>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    fn file(dir: impl Into<PathBuf>) -> TargetUri {
        TargetUri::File { dir: dir.into() }
    }

    fn listing(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    }

    /// Facts for an existing, writable directory, for the rule tests.
    fn dir_facts(resolved: &str) -> FileFacts {
        FileFacts {
            resolved: PathBuf::from(resolved),
            kind: NodeKind::Dir,
            parent_kind: NodeKind::Dir,
            write: Some(WriteFacts { access_ok: true, read_only: false }),
            on_tmpfs_below_dev: false,
            home: Some(PathBuf::from("/home/alice")),
        }
    }

    // ---- parse ----

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse("file://./x").unwrap(), file("./x"));
        assert_eq!(parse("file:///mnt/x").unwrap(), file("/mnt/x"));
        assert_eq!(parse("file://data").unwrap(), file("data"));
        assert_eq!(parse("FILE:///mnt/x").unwrap(), file("/mnt/x"));
        assert_eq!(parse("dev:///dev/nvme1n1").unwrap(), TargetUri::Dev { path: "/dev/nvme1n1".into() });
        assert_eq!(parse("null://").unwrap(), TargetUri::Null);
        assert_eq!(parse(DEFAULT_TARGET).unwrap(), file("./mlpdrive-data"));
    }

    #[test]
    fn a_bare_path_suggests_file_scheme() {
        let m = usage_msg(parse("/mnt/nvme"));
        assert!(m.contains("no scheme") && m.contains("file:///mnt/nvme"), "{m}");
        let m = usage_msg(parse("./data"));
        assert!(m.contains("file://./data"), "{m}");
        let m = usage_msg(parse("/dev/sdb"));
        assert!(m.contains("file:///dev/sdb") && m.contains("dev:///dev/sdb --allow-raw-device"), "{m}");
        let m = usage_msg(parse("null"));
        assert!(m.contains("null://"), "{m}");
        // A "://" after something that is not a scheme is still a bare path.
        let m = usage_msg(parse("./odd://name"));
        assert!(m.contains("file://./odd://name"), "{m}");
    }

    #[test]
    fn unknown_and_planned_schemes_are_explained() {
        let m = usage_msg(parse("gs://bucket/prefix"));
        assert!(m.contains("planned but not available"), "{m}");
        assert!(m.contains("file://DIR") && m.contains("null://") && m.contains("nbd://HOST:PORT"), "{m}");
        let m = usage_msg(parse("http://example.com/x"));
        assert!(m.contains("unknown scheme `http://`"), "{m}");
        assert!(m.contains("file://DIR") && m.contains("dev:///dev/X") && m.contains("null://"), "{m}");
    }

    #[test]
    fn s3_uris_parse_and_bad_buckets_are_refused() {
        let s3 = |b: &str, p: &str| TargetUri::S3(S3Spec { bucket: b.into(), prefix: p.into() });
        assert_eq!(parse("s3://bkt").unwrap(), s3("bkt", ""));
        assert_eq!(parse("s3://bkt/").unwrap(), s3("bkt", ""));
        assert_eq!(parse("s3://my.bkt-1/a/b/").unwrap(), s3("my.bkt-1", "a/b"));
        for bad in [
            "s3://",
            "s3://B",
            "s3://Bucket",
            "s3://ab",
            "s3://-ab",
            "s3://a_b_c",
            "s3://host:9000/b",
            "s3://bkt/a//b",
            "s3://bkt?x=1",
        ] {
            let m = usage_msg(parse(bad));
            assert!(m.contains("s3://"), "{bad}: {m}");
        }
        let spec = check(&parse("s3://bkt/p/").unwrap(), &SafetyFlags::default()).unwrap();
        assert_eq!(spec.display, "s3://bkt/p");
    }

    #[test]
    fn nbd_uris_parse_with_default_port_and_export() {
        let nbd = |host: &str, port, export: &str| {
            TargetUri::Nbd(NbdSpec { host: host.into(), port, export: export.into(), allow_overwrite: false })
        };
        assert_eq!(parse("nbd://127.0.0.1:10810/exp").unwrap(), nbd("127.0.0.1", 10810, "exp"));
        assert_eq!(parse("nbd://host").unwrap(), nbd("host", NBD_DEFAULT_PORT, ""));
        assert_eq!(parse("nbd://host:99/").unwrap(), nbd("host", 99, ""));
        assert_eq!(parse("nbd://[::1]:5/a/b").unwrap(), nbd("::1", 5, "a/b"));
        assert!(usage_msg(parse("nbd://:10809")).contains("needs a host"));
        assert!(usage_msg(parse("nbd://h:0")).contains("from 1 to 65535"));
        assert!(usage_msg(parse("nbd://h:x")).contains("from 1 to 65535"));
        assert!(usage_msg(parse("nbd://[::1")).contains("unclosed"));
        assert!(usage_msg(parse("nbd://h/e?x=1")).contains("no parameters"));
        let spec = check(&parse("nbd://[::1]:5/e").unwrap(), &RAW).unwrap();
        assert_eq!(spec.display, "nbd://[::1]:5/e");
        assert!(matches!(spec.uri, TargetUri::Nbd(NbdSpec { allow_overwrite: true, .. })));
    }

    #[test]
    fn malformed_uris_are_refused() {
        assert!(usage_msg(parse("")).contains("empty"));
        assert!(usage_msg(parse("file://")).contains("needs a directory"));
        assert!(usage_msg(parse("dev://sdb")).contains("absolute device path"));
        assert!(usage_msg(parse("dev://")).contains("absolute device path"));
        assert!(usage_msg(parse("null://x")).contains("takes no path"));
        assert!(usage_msg(parse(" file://x")).contains("whitespace"));
        assert!(usage_msg(parse("file://a\0b")).contains("NUL"));
        let m = usage_msg(parse("file://~/data"));
        assert!(m.contains("not expanded") && m.contains("file://$HOME/data"), "{m}");
    }

    // ---- check: file:// on the real system ----

    #[test]
    fn an_existing_directory_is_accepted_and_resolved() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = check(&file(tmp.path()), &NO_FLAGS).unwrap();
        let canon = fs::canonicalize(tmp.path()).unwrap();
        assert_eq!(spec.uri, file(&canon));
        assert_eq!(spec.display, format!("file://{}", canon.display()));
        assert!(spec.dir_exists);
        assert!(listing(tmp.path()).is_empty(), "check created something");
    }

    #[test]
    fn a_missing_directory_with_an_existing_parent_is_accepted_and_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = check(&file(tmp.path().join("new")), &NO_FLAGS).unwrap();
        assert!(!spec.dir_exists);
        assert_eq!(spec.uri, file(fs::canonicalize(tmp.path()).unwrap().join("new")));
        assert!(listing(tmp.path()).is_empty(), "check created something");
    }

    #[test]
    fn a_relative_directory_is_resolved_against_the_current_directory() {
        let spec = check(&file("./mlpdrive-uri-test-missing"), &NO_FLAGS).unwrap();
        let want = fs::canonicalize(std::env::current_dir().unwrap()).unwrap().join("mlpdrive-uri-test-missing");
        assert_eq!(spec.uri, file(want));
        assert!(!spec.dir_exists);
    }

    #[test]
    fn a_missing_parent_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let m = usage_msg(check(&file(tmp.path().join("a/b")), &NO_FLAGS));
        let parent = fs::canonicalize(tmp.path()).unwrap().join("a");
        assert!(m.contains(&format!("parent directory {} does not exist", parent.display())), "{m}");
        assert!(m.contains("create it first"), "{m}");
        assert!(listing(tmp.path()).is_empty());
    }

    #[test]
    fn a_regular_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"keep me").unwrap();
        let m = usage_msg(check(&file(&f), &FORCE));
        assert!(m.contains("is a regular file, not a directory"), "{m}");
        let m = usage_msg(check(&file(f.join("sub")), &NO_FLAGS));
        assert!(m.contains("is not a directory"), "{m}");
        assert_eq!(fs::read(&f).unwrap(), b"keep me");
    }

    #[test]
    fn system_directories_are_refused() {
        for p in ["/etc", "/etc/mlpdrive-uri-test", "/usr/lib", "/proc", "/sys/kernel", "/boot", "/var/lib/x"] {
            let m = usage_msg(check(&file(p), &NO_FLAGS));
            assert!(m.contains("system directory") && m.contains("--force"), "{p}: {m}");
        }
        let m = usage_msg(check(&file("/"), &NO_FLAGS));
        assert!(m.contains("root directory /") && m.contains("--force"), "{m}");
        // /etc/a/b: the system rule wins over the missing parent.
        let m = usage_msg(check(&file("/etc/mlpdrive-uri-test/a"), &NO_FLAGS));
        assert!(m.contains("/etc is a system directory"), "{m}");
    }

    #[test]
    fn dev_itself_is_refused_but_a_tmpfs_below_it_is_allowed() {
        let m = usage_msg(check(&file("/dev/mlpdrive-uri-test"), &NO_FLAGS));
        assert!(m.contains("/dev holds device nodes"), "{m}");
        let shm = Path::new("/dev/shm");
        let separate_mount = fs::metadata(shm).is_ok_and(|m| m.is_dir())
            && fs::metadata(shm).unwrap().dev() != fs::metadata("/dev").unwrap().dev();
        if !separate_mount {
            eprintln!("skipped the /dev/shm half: /dev/shm is not a separate mount here");
            return;
        }
        let target = shm.join(format!("mlpdrive-uri-test-{}", std::process::id()));
        let spec = check(&file(&target), &NO_FLAGS).unwrap();
        assert_eq!(spec.display, format!("file://{}", target.display()));
        assert!(!target.exists(), "check created {}", target.display());
    }

    #[test]
    fn a_symlink_into_a_system_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("link-to-etc");
        symlink("/etc", &link).unwrap();
        let m = usage_msg(check(&file(&link), &NO_FLAGS));
        assert!(m.contains("resolved to /etc") && m.contains("system directory"), "{m}");
        let m = usage_msg(check(&file(link.join("sub")), &NO_FLAGS));
        assert!(m.contains("resolved to /etc/sub"), "{m}");
    }

    #[test]
    fn a_symlink_to_a_data_directory_is_followed() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("real")).unwrap();
        symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        let spec = check(&file(tmp.path().join("link")), &NO_FLAGS).unwrap();
        assert_eq!(spec.uri, file(fs::canonicalize(tmp.path().join("real")).unwrap()));
    }

    #[test]
    fn a_dangling_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        symlink(tmp.path().join("nowhere"), tmp.path().join("dangling")).unwrap();
        let m = usage_msg(check(&file(tmp.path().join("dangling")), &NO_FLAGS));
        assert!(m.contains("symbolic link") && m.contains("does not exist"), "{m}");
    }

    #[test]
    fn device_nodes_behind_file_are_refused_even_with_force() {
        for p in ["/dev/null", "/dev/zero"] {
            let m = usage_msg(check(&file(p), &FORCE));
            assert!(m.contains("is a character device, not a directory"), "{p}: {m}");
        }
        let Some(blk) = root_block_device() else {
            eprintln!("skipped the block device half: no node for the root filesystem's device");
            return;
        };
        let m = usage_msg(check(&file(&blk), &FORCE));
        assert!(m.contains("is a block device") && m.contains("--allow-raw-device"), "{m}");
        assert!(m.contains(&format!("dev://{}", blk.display())), "{m}");
    }

    #[test]
    fn a_foreign_mlpdrive_directory_is_refused_at_check_time() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join(crate::target::workdir::WORKDIR_NAME)).unwrap();
        let m = usage_msg(check(&file(tmp.path()), &NO_FLAGS));
        assert!(m.contains("not created by mlpdrive"), "{m}");
    }

    // ---- the file:// rules with injected facts ----

    #[test]
    fn force_lifts_the_system_directory_rule() {
        let facts = dir_facts("/etc");
        assert!(usage_msg(judge_file(Path::new("/etc"), &facts, &NO_FLAGS)).contains("system directory"));
        let spec = judge_file(Path::new("/etc"), &facts, &FORCE).unwrap();
        assert_eq!(spec.display, "file:///etc");
    }

    #[test]
    fn top_level_and_home_directories_are_refused_but_not_their_subdirectories() {
        for p in ["/home", "/root", "/var", "/home/alice", "/home/bob"] {
            let m = usage_msg(judge_file(Path::new(p), &dir_facts(p), &NO_FLAGS));
            assert!(m.contains("--force") && m.contains(&format!("{p}/mlpdrive-data is fine")), "{p}: {m}");
        }
        let mut facts = dir_facts("/srv/alice");
        facts.home = Some(PathBuf::from("/srv/alice"));
        assert!(usage_msg(judge_file(Path::new("/srv/alice"), &facts, &NO_FLAGS)).contains("home directory"));
        for p in ["/home/alice/data", "/var/tmp", "/root/bench", "/mnt/nvme", "/tmp", "/etcetera"] {
            judge_file(Path::new(p), &dir_facts(p), &NO_FLAGS).unwrap();
        }
    }

    #[test]
    fn dev_tmpfs_exception_follows_the_probe() {
        let mut facts = dir_facts("/dev/shm/x");
        assert!(usage_msg(judge_file(Path::new("/dev/shm/x"), &facts, &NO_FLAGS)).contains("/dev holds device nodes"));
        facts.on_tmpfs_below_dev = true;
        judge_file(Path::new("/dev/shm/x"), &facts, &NO_FLAGS).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_refused() {
        let mut facts = dir_facts("/data/x");
        facts.write = Some(WriteFacts { access_ok: false, read_only: false });
        let m = usage_msg(judge_file(Path::new("/data/x"), &facts, &FORCE));
        assert!(m.contains("/data/x is not writable"), "{m}");
        // DIR missing: the parent is what must be writable.
        facts.kind = NodeKind::Missing;
        let m = usage_msg(judge_file(Path::new("/data/x"), &facts, &NO_FLAGS));
        assert!(m.contains("/data is not writable"), "{m}");
    }

    #[test]
    fn a_read_only_filesystem_is_refused() {
        let mut facts = dir_facts("/data/x");
        facts.write = Some(WriteFacts { access_ok: true, read_only: true });
        let m = usage_msg(judge_file(Path::new("/data/x"), &facts, &FORCE));
        assert!(m.contains("/data/x is on a read-only filesystem"), "{m}");
    }

    #[test]
    fn a_relative_target_is_labelled_with_what_the_user_typed() {
        let m = usage_msg(judge_file(Path::new("./etc"), &dir_facts("/etc"), &NO_FLAGS));
        assert!(m.starts_with("target file://./etc (resolved to /etc): "), "{m}");
    }

    // ---- dev:// ----

    #[test]
    fn dev_without_the_flag_is_refused_with_the_consequence() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("disk.img");
        fs::write(&img, vec![7u8; 4096]).unwrap();
        let m = usage_msg(check(&TargetUri::Dev { path: img.clone() }, &FORCE));
        assert!(m.contains("--allow-raw-device") && m.contains("overwrites the contents of this file"), "{m}");
        if let Some(blk) = root_block_device() {
            let m = usage_msg(check(&TargetUri::Dev { path: blk }, &NO_FLAGS));
            assert!(m.contains("--allow-raw-device") && m.contains("overwrites everything on the device"), "{m}");
        }
        assert_eq!(fs::read(&img).unwrap(), vec![7u8; 4096]);
    }

    #[test]
    fn a_regular_file_image_is_accepted_with_the_flag_and_labelled() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("disk.img");
        fs::write(&img, b"").unwrap();
        let spec = check(&TargetUri::Dev { path: img.clone() }, &RAW).unwrap();
        let canon = fs::canonicalize(&img).unwrap();
        assert_eq!(spec.uri, TargetUri::Dev { path: canon.clone() });
        assert_eq!(spec.display, format!("dev://{} (regular file)", canon.display()));
    }

    #[test]
    fn dev_of_a_missing_path_or_a_non_device_is_refused() {
        let m = usage_msg(check(&TargetUri::Dev { path: "/dev/mlpdrive-no-such-device".into() }, &RAW_FORCE));
        assert!(m.contains("/dev/mlpdrive-no-such-device does not exist"), "{m}");
        let m = usage_msg(check(&TargetUri::Dev { path: "/dev/null".into() }, &RAW_FORCE));
        assert!(m.contains("character device"), "{m}");
        let tmp = tempfile::tempdir().unwrap();
        let m = usage_msg(check(&TargetUri::Dev { path: tmp.path().to_path_buf() }, &RAW_FORCE));
        assert!(m.contains("is a directory") && m.contains("file://"), "{m}");
    }

    #[test]
    fn a_mounted_block_device_is_refused_without_force() {
        let Some(blk) = root_block_device() else {
            eprintln!("skipped: no node for the root filesystem's device");
            return;
        };
        let uri = TargetUri::Dev { path: blk.clone() };
        let m = usage_msg(check(&uri, &RAW));
        assert!(m.contains("in use") && m.contains("--force"), "{m}");
        // check() only looks; with --force it passes (and still writes nothing).
        let spec = check(&uri, &RAW_FORCE).unwrap();
        assert_eq!(spec.display, format!("dev://{}", fs::canonicalize(&blk).unwrap().display()));
    }

    #[test]
    fn dev_rules_with_injected_facts() {
        let base = DevFacts {
            resolved: PathBuf::from("/dev/sdz"),
            kind: NodeKind::BlockDevice,
            write: Some(WriteFacts { access_ok: true, read_only: false }),
            in_use: Ok(vec!["partition sdz1 is held by dm-0 (device-mapper, LVM or RAID)".to_string()]),
        };
        let given = Path::new("/dev/sdz");
        let m = usage_msg(judge_dev(given, &base, &RAW));
        assert!(m.contains("held by dm-0"), "{m}");
        assert_eq!(judge_dev(given, &base, &RAW_FORCE).unwrap().display, "dev:///dev/sdz");

        let unknown = DevFacts { in_use: Err("reading /proc/self/mounts: denied".to_string()), ..base.clone() };
        assert!(usage_msg(judge_dev(given, &unknown, &RAW)).contains("cannot tell whether it is mounted"));

        let ro = DevFacts { write: Some(WriteFacts { access_ok: true, read_only: true }), ..base.clone() };
        assert!(usage_msg(judge_dev(given, &ro, &RAW_FORCE)).contains("read-only"));

        let denied = DevFacts { write: Some(WriteFacts { access_ok: false, read_only: false }), ..base };
        assert!(usage_msg(judge_dev(given, &denied, &RAW_FORCE)).contains("cannot be opened for reading and writing"));
    }

    #[test]
    fn null_needs_no_checks() {
        let spec = check(&TargetUri::Null, &NO_FLAGS).unwrap();
        assert_eq!(spec, TargetSpec { uri: TargetUri::Null, display: "null://".into(), dir_exists: false });
    }

    /// The device node of the root filesystem (e.g. /dev/vda), if there is one.
    fn root_block_device() -> Option<PathBuf> {
        let dev = fs::metadata("/").ok()?.dev();
        let uevent =
            fs::read_to_string(format!("/sys/dev/block/{}:{}/uevent", libc::major(dev), libc::minor(dev))).ok()?;
        let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
        let node = Path::new("/dev").join(name);
        let meta = fs::metadata(&node).ok()?;
        (std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) && meta.rdev() == dev).then_some(node)
    }
}
