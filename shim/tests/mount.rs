//! Real FUSE mounts: each test mounts the shim on a fresh temporary
//! directory and always unmounts (a guard's Drop), even when it fails.
//! Without /dev/fuse the tests say so loudly and skip.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlpdrive_emu::Profile;
use mlpdrive_shim::{Backing, DataPath, Mounted, ShimConfig, Summary};

const TEST_PROFILE: &str = "description: test device\ncapacity: unlimited\nchannels: 8\nlatency:\n  read: {fixed: 50us}\n  write: {fixed: 50us}\n  flush: {fixed: 50us}\n  trim: {fixed: 5us}\nchannel_bandwidth: {read: unlimited, write: unlimited}\ndevice_bandwidth: {read: unlimited, write: unlimited}\n";

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    eprintln!("\n*** SKIPPED: /dev/fuse is missing, so no FUSE mount can be tested here ***\n");
    false
}

/// Unmounts on drop (so a failing assertion does not leave a mount behind).
struct Guard {
    mounted: Option<Mounted>,
    mountpoint: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

impl Guard {
    fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    fn unmount(&mut self) -> Summary {
        let m = self.mounted.take().expect("mounted");
        m.unmount(false).expect("unmount");
        m.finish()
    }

    fn data_path(&self) -> DataPath {
        self.mounted.as_ref().expect("mounted").data_path().clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            if m.unmount(true).is_ok() {
                m.finish();
                return;
            }
            let c = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: c is a valid path; a lazy detach cannot hurt anything.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

struct Opts {
    profile: Profile,
    mem: bool,
    oplog: Option<PathBuf>,
    observer: Option<Arc<dyn mlpdrive_shim::Observer>>,
    crash_tracking: bool,
}

impl Opts {
    fn new(profile_yaml: Option<&str>) -> Opts {
        let profile = match profile_yaml {
            Some(y) => Profile::from_yaml("test", y).expect("profile"),
            None => Profile::load("ideal").unwrap(),
        };
        Opts { profile, mem: false, oplog: None, observer: None, crash_tracking: false }
    }
}

/// Mounts on a temp dir; returns the guard and the backing dir (if any).
fn mount(o: Opts) -> (Guard, Option<PathBuf>) {
    let mp = tempfile::Builder::new().prefix("shim-mnt-").tempdir().unwrap();
    let backing_dir = tempfile::Builder::new().prefix("shim-back-").tempdir().unwrap();
    let backing_path = backing_dir.path().to_path_buf();
    let cfg = ShimConfig {
        mountpoint: mp.path().to_path_buf(),
        backing: if o.mem { Backing::Mem } else { Backing::Dir(backing_path.clone()) },
        profile: o.profile,
        seed: 7,
        oplog: o.oplog,
        observer: o.observer,
        allow_other: false,
        allow_passthrough: true,
        threads: 4,
        crash_tracking: o.crash_tracking,
        rtt_compensation: true,
    };
    let m = mlpdrive_shim::mount(cfg).expect("mount");
    let g = Guard { mountpoint: m.mountpoint().to_path_buf(), mounted: Some(m), _dirs: vec![backing_dir, mp] };
    (g, (!o.mem).then_some(backing_path))
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Root on Linux 6.9 or later (FUSE passthrough needs both).
fn kernel_has_passthrough() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    // SAFETY: geteuid cannot fail.
    (major, minor) >= (6, 9) && unsafe { libc::geteuid() } == 0
}

/// Write, read, rename, readdir, statfs, truncate, unlink, mkdir/rmdir.
fn round_trip(g: &Guard, backing: Option<&Path>) {
    fs::create_dir(g.path("sub")).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(g.path("sub/a.bin"), &data).unwrap();
    assert_eq!(fs::read(g.path("sub/a.bin")).unwrap(), data);
    if let Some(b) = backing {
        assert_eq!(fs::read(b.join("sub/a.bin")).unwrap(), data, "bytes reached the backing dir");
    }
    fs::rename(g.path("sub/a.bin"), g.path("b.bin")).unwrap();
    assert!(!g.path("sub/a.bin").exists());
    assert_eq!(fs::metadata(g.path("b.bin")).unwrap().len(), data.len() as u64);
    // Reopen after the rename: the inode table follows the new name.
    let f = OpenOptions::new().read(true).write(true).open(g.path("b.bin")).unwrap();
    f.write_all_at(b"hello", 4096).unwrap();
    f.sync_all().unwrap();
    let mut got = [0u8; 5];
    f.read_exact_at(&mut got, 4096).unwrap();
    assert_eq!(&got, b"hello");
    f.set_len(10_000).unwrap();
    drop(f);
    assert_eq!(fs::metadata(g.path("b.bin")).unwrap().len(), 10_000);
    let mut names: Vec<String> =
        fs::read_dir(&g.mountpoint).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["b.bin", "sub"]);
    assert_eq!(fs::read_dir(g.path("sub")).unwrap().count(), 0);
    let st = nix_statvfs(&g.mountpoint);
    assert!(st.f_blocks > 0, "statfs reports a size");
    fs::remove_file(g.path("b.bin")).unwrap();
    fs::remove_dir(g.path("sub")).unwrap();
    assert_eq!(fs::read_dir(&g.mountpoint).unwrap().count(), 0);
    assert_eq!(errno_of(&File::open(g.path("b.bin")).unwrap_err()), libc::ENOENT);
}

fn nix_statvfs(p: &Path) -> libc::statvfs {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: zeroed statvfs is a valid out value; c is a valid path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0, "statvfs {}", p.display());
    s
}

/// An aligned buffer for O_DIRECT.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let v = vec![0u8; len + 4096];
    let off = v.as_ptr().align_offset(4096);
    (v, off)
}

fn direct_io(g: &Guard) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(g.path("direct.bin"))
        .unwrap();
    let (mut w, wo) = aligned(1 << 20);
    for (i, b) in w[wo..wo + (1 << 20)].iter_mut().enumerate() {
        *b = (i * 31 % 253) as u8;
    }
    assert_eq!(f.write_at(&w[wo..wo + (1 << 20)], 0).unwrap(), 1 << 20);
    let (mut r, ro) = aligned(1 << 20);
    assert_eq!(f.read_at(&mut r[ro..ro + (1 << 20)], 0).unwrap(), 1 << 20);
    assert_eq!(&r[ro..ro + (1 << 20)], &w[wo..wo + (1 << 20)]);
}

#[test]
fn passthrough_round_trip_on_a_directory() {
    if !fuse_available() {
        return;
    }
    let (mut g, backing) = mount(Opts::new(None));
    eprintln!("data path: {}", g.data_path());
    if kernel_has_passthrough() {
        assert_eq!(g.data_path(), DataPath::Passthrough, "root on Linux 6.9+ gets the kernel passthrough");
    }
    round_trip(&g, backing.as_deref());
    direct_io(&g);
    let s = g.unmount();
    assert_eq!(s.errors, 0, "{s:?}");
}

#[test]
fn daemon_path_round_trip_in_memory_with_direct_io() {
    if !fuse_available() {
        return;
    }
    let mut o = Opts::new(Some(TEST_PROFILE));
    o.mem = true;
    let (mut g, _) = mount(o);
    assert!(matches!(g.data_path(), DataPath::Daemon(_)), "{}", g.data_path());
    round_trip(&g, None);
    direct_io(&g);
    let s = g.unmount();
    assert!(s.ops > 10 && s.errors == 0, "{s:?}");
}

#[test]
fn daemon_path_round_trip_on_a_directory_with_direct_io() {
    if !fuse_available() {
        return;
    }
    let (mut g, backing) = mount(Opts::new(Some(TEST_PROFILE)));
    round_trip(&g, backing.as_deref());
    direct_io(&g);
    let s = g.unmount();
    assert_eq!(s.errors, 0, "{s:?}");
}

#[test]
fn injected_read_errors_reach_the_reader() {
    if !fuse_available() {
        return;
    }
    let yaml = format!("{TEST_PROFILE}faults:\n  error_probability: {{read: 1, write: 0, flush: 0, trim: 0}}\n");
    let (mut g, _) = mount(Opts::new(Some(&yaml)));
    // Writes succeed; every read fails with EIO (O_DIRECT so the page cache
    // cannot answer).
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false).custom_flags(libc::O_DIRECT);
    let f = opts.open(g.path("x")).unwrap();
    let (mut b, o) = aligned(4096);
    f.write_at(&b[o..o + 4096], 0).unwrap();
    let e = f.read_at(&mut b[o..o + 4096], 0).unwrap_err();
    assert_eq!(errno_of(&e), libc::EIO, "{e}");
    drop(f);
    let s = g.unmount();
    assert!(s.errors >= 1, "{s:?}");
}

#[test]
fn injected_corruption_alters_read_bytes() {
    if !fuse_available() {
        return;
    }
    let yaml = format!("{TEST_PROFILE}faults:\n  read_corruption_probability: 1\n");
    let (mut g, backing) = mount(Opts::new(Some(&yaml)));
    let data = vec![0x5au8; 8192];
    fs::write(g.path("c"), &data).unwrap();
    let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(g.path("c")).unwrap();
    let (mut b, o) = aligned(8192);
    assert_eq!(f.read_at(&mut b[o..o + 8192], 0).unwrap(), 8192);
    assert_ne!(&b[o..o + 8192], &data[..], "the read came back altered");
    drop(f);
    assert_eq!(fs::read(backing.unwrap().join("c")).unwrap(), data, "the stored bytes are intact");
    g.unmount();
}

#[test]
fn capacity_gives_enospc_and_statfs_reports_it() {
    if !fuse_available() {
        return;
    }
    let yaml = TEST_PROFILE.replace("capacity: unlimited", "capacity: 1MiB");
    let (mut g, _) = mount(Opts::new(Some(&yaml)));
    let st = nix_statvfs(&g.mountpoint);
    assert_eq!(st.f_blocks * st.f_frsize, 1 << 20);
    let mut f = File::create(g.path("big")).unwrap();
    let chunk = vec![1u8; 256 * 1024];
    let mut written = 0;
    let err = loop {
        match f.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
        assert!(written <= 2 << 20, "wrote past the capacity");
    };
    assert_eq!(errno_of(&err), libc::ENOSPC, "{err}");
    assert!(written <= 1 << 20);
    drop(f);
    // Deleting frees the space again.
    fs::remove_file(g.path("big")).unwrap();
    fs::write(g.path("small"), vec![2u8; 512 * 1024]).unwrap();
    g.unmount();
}

#[test]
fn oplog_rows_have_the_documented_columns_and_hashes() {
    if !fuse_available() {
        return;
    }
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("ops.csv");
    let mut o = Opts::new(Some(TEST_PROFILE));
    o.oplog = Some(log.clone());
    let (mut g, _) = mount(o);
    let data: Vec<u8> = (0..3 * 4096 + 10).map(|i| (i * 13 % 256) as u8).collect();
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_DIRECT)
            .open(g.path("f"))
            .unwrap();
        let (mut b, off) = aligned(3 * 4096);
        b[off..off + 3 * 4096].copy_from_slice(&data[..3 * 4096]);
        f.write_at(&b[off..off + 3 * 4096], 0).unwrap();
        let (mut r, roff) = aligned(3 * 4096);
        f.read_at(&mut r[roff..roff + 3 * 4096], 0).unwrap();
        f.sync_all().unwrap();
    }
    fs::rename(g.path("f"), g.path("g")).unwrap();
    fs::remove_file(g.path("g")).unwrap();
    let s = g.unmount();
    assert!(s.oplog_rows.unwrap() > 5, "{s:?}");

    let mut text = String::new();
    File::open(&log).unwrap().read_to_string(&mut text).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "start_ns,op,path,path2,offset,length,latency_ns,result,block_hashes,zstd_in_bytes,zstd_out_bytes"
    );
    let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(String::from).collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 11), "{text}");
    let find = |op: &str| rows.iter().find(|r| r[1] == op).unwrap_or_else(|| panic!("no {op} row in\n{text}"));
    let expect: Vec<String> =
        data[..3 * 4096].chunks(4096).map(|b| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(b))).collect();
    let w = find("write");
    assert_eq!((w[2].as_str(), w[4].as_str(), w[5].as_str(), w[7].as_str()), ("f", "0", "12288", "ok"));
    assert_eq!(w[8], expect.join(";"));
    assert!(w[6].parse::<u64>().unwrap() >= 50_000, "latency includes the profile's 50 us: {w:?}");
    let r = find("read");
    assert_eq!((r[2].as_str(), r[5].as_str(), r[8].as_str()), ("f", "12288", expect.join(";").as_str()));
    assert_eq!(find("create")[2], "f");
    assert_eq!(find("fsync")[7], "ok");
    let rn = find("rename");
    assert_eq!((rn[2].as_str(), rn[3].as_str()), ("f", "g"));
    assert_eq!(find("unlink")[2], "g");
    let starts: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(starts.iter().all(|&s| s > 0));
}

#[test]
fn concurrent_requests_overlap_in_the_daemon() {
    if !fuse_available() {
        return;
    }
    // 20 ms per read: eight readers at once must be in flight together
    // (the op log shows overlapping [start, start + latency] intervals),
    // more than the mount's 4 FUSE threads, so no thread waits out a delay.
    let yaml = TEST_PROFILE.replace("read: {fixed: 50us}", "read: {fixed: 20ms}");
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("ops.csv");
    let mut o = Opts::new(Some(&yaml));
    o.oplog = Some(log.clone());
    let (mut g, _) = mount(o);
    fs::write(g.path("f"), vec![3u8; 8 * 4096]).unwrap();
    let path = g.path("f");
    std::thread::scope(|s| {
        for i in 0..8u64 {
            let path = path.clone();
            s.spawn(move || {
                let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path).unwrap();
                let (mut b, o) = aligned(4096);
                assert_eq!(f.read_at(&mut b[o..o + 4096], i * 4096).unwrap(), 4096);
            });
        }
    });
    g.unmount();
    let text = fs::read_to_string(&log).unwrap();
    let reads: Vec<(u64, u64)> = text
        .lines()
        .filter(|l| l.split(',').nth(1) == Some("read"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let start: u64 = f[0].parse().unwrap();
            (start, start + f[6].parse::<u64>().unwrap())
        })
        .collect();
    assert_eq!(reads.len(), 8, "{text}");
    let most = reads.iter().map(|&(s, _)| reads.iter().filter(|&&(a, b)| a <= s && s < b).count()).max().unwrap();
    assert!(most > 4, "at most {most} reads were in flight at once:\n{text}");
}

/// Write A, fsync, write B over part of it and past its end (no fsync),
/// crash: the file reads A again, at A's size, through buffered and
/// O_DIRECT opens alike; a second crash has nothing left to lose.
fn crash_drops_unsynced_writes(mem: bool) {
    let mut o = Opts::new(Some(TEST_PROFILE));
    o.mem = mem;
    o.crash_tracking = true;
    let oplog = tempfile::NamedTempFile::new().unwrap();
    o.oplog = Some(oplog.path().to_path_buf());
    let (mut g, backing) = mount(o);
    let a = vec![b'A'; 8192];
    let b = vec![b'B'; 8192];
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(g.path("f")).unwrap();
    f.write_all_at(&a, 0).unwrap();
    f.sync_all().unwrap();
    f.write_all_at(&b, 4096).unwrap();
    let mut got = vec![0u8; 12288];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got[4096..], &b[..], "B is there before the crash");
    let c = mlpdrive_shim::crash(g.mountpoint.as_path()).expect("crash");
    assert_eq!((c.files, c.bytes_lost, c.writes_kept), (1, 8192, 0), "{c:?}");
    assert!(c.writes_lost >= 1, "{c:?}");
    assert_eq!(fs::read(g.path("f")).unwrap(), a, "buffered read after the crash shows A");
    assert_eq!(fs::metadata(g.path("f")).unwrap().len(), 8192, "the extending write is gone too");
    if let Some(dir) = &backing {
        assert_eq!(fs::read(dir.join("f")).unwrap(), a, "the backing file holds A");
    }
    let (mut buf, off) = aligned(8192);
    let d = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(g.path("f")).unwrap();
    assert_eq!(d.read_at(&mut buf[off..off + 8192], 0).unwrap(), 8192);
    assert_eq!(&buf[off..off + 8192], &a[..], "O_DIRECT read after the crash shows A");
    let again = mlpdrive_shim::crash(g.mountpoint.as_path()).unwrap();
    assert_eq!(again.writes_lost, 0, "nothing unsynced is left");
    drop((f, d));
    let m = g.unmount();
    assert!(m.oplog_rows.unwrap() > 0);
    let log = fs::read_to_string(oplog.path()).unwrap();
    let crash_rows: Vec<&str> = log.lines().filter(|l| l.split(',').nth(1) == Some("crash")).collect();
    assert_eq!(crash_rows.len() as u64, c.writes_lost, "one crash row per lost write: {log}");
    assert!(crash_rows[0].contains(",f,,4096,8192,"), "{}", crash_rows[0]);
    assert!(log.lines().any(|l| l.contains(",truncate,f,,8192,")), "the shrink is logged as a truncate: {log}");
}

#[test]
fn a_crash_drops_unsynced_writes_in_memory() {
    if !fuse_available() {
        return;
    }
    crash_drops_unsynced_writes(true);
}

#[test]
fn a_crash_drops_unsynced_writes_on_a_directory() {
    if !fuse_available() {
        return;
    }
    crash_drops_unsynced_writes(false);
}

#[test]
fn crash_needs_crash_tracking() {
    if !fuse_available() {
        return;
    }
    let (g, _) = mount(Opts::new(Some(TEST_PROFILE)));
    let e = mlpdrive_shim::crash(g.mountpoint.as_path()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
}
