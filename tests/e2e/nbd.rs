//! The NBD export (`mlpdrive emu serve`) against real NBD clients run as
//! subprocesses (nbdinfo and nbdcopy from libnbd-bin; qemu-img, qemu-io and
//! qemu-nbd from qemu-utils), raw protocol abuse over a TcpStream, and the
//! driver's `nbd://` target against this server and against qemu-nbd.
//!
//! A missing client binary skips its test with a loud message, except when
//! `MLPDRIVE_CI` is set (`.ci/run` sets it after installing them): then it
//! fails, so CI never skips silently.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlpdrive_emu::nbd::protocol::*;

use crate::common::*;

/// A running `mlpdrive emu serve`, stopped with SIGINT on drop.
pub struct Served {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Served {
    /// Starts the server on a free port with `args` after `emu serve`.
    pub fn start(args: &[&str]) -> Served {
        let mut child = Command::new(BIN)
            .args(["emu", "serve", "--nbd", "127.0.0.1:0", "--quiet"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mlpdrive emu serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addr = None;
        let mut seen = String::new();
        for _ in 0..5 {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            seen.push_str(&line);
            if let Some(rest) = line.split("listening on nbd://").nth(1) {
                addr = rest.split('/').next().map(str::to_string);
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("emu serve did not print its address; stdout so far:\n{seen}");
        };
        Served { child, addr, stdout }
    }

    pub fn uri(&self) -> String {
        format!("nbd://{}/mlpdrive", self.addr)
    }

    /// Stops with SIGINT and returns the rest of stdout (the summary line).
    pub fn stop(mut self) -> String {
        self.interrupt_and_wait();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        rest
    }

    fn interrupt_and_wait(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "emu serve exited with {status} after SIGINT");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("emu serve did not stop within 10 s of SIGINT");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `tool` is on PATH; if not, skips loudly (or fails under CI).
pub fn have(tool: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    if !found {
        let msg = format!(
            "SKIPPED {test}: `{tool}` is not installed (apt-get install libnbd-bin qemu-utils; .ci/run installs them)"
        );
        assert!(std::env::var_os("MLPDRIVE_CI").is_none(), "{msg}, and MLPDRIVE_CI is set: CI must not skip");
        eprintln!("{msg}");
    }
    found
}

/// Runs a client with a time limit; returns (exit ok, stdout, stderr).
fn client(cmd: &mut Command) -> (bool, String, String) {
    let out =
        Command::new("timeout").arg("60").arg(cmd.get_program()).args(cmd.get_args()).output().expect("run client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn profile_file(dir: &Path, body: &str) -> String {
    let p = dir.join("dev.yaml");
    std::fs::write(&p, format!("description: test device\ncapacity: unlimited\n{body}")).unwrap();
    p.to_str().unwrap().to_string()
}

// ---- real clients ----

#[test]
fn nbdinfo_sees_size_flags_block_sizes_and_description() {
    if !have("nbdinfo", "nbdinfo_sees_size_flags_block_sizes_and_description") {
        return;
    }
    let s = Served::start(&["--size", "64MiB", "--profile", "ci-fast", "--seed", "9"]);
    let (ok, out, err) = client(Command::new("nbdinfo").arg(s.uri()));
    assert!(ok, "nbdinfo failed: {err}");
    for want in [
        "export-size: 67108864",
        "description: mlpdrive emu export: profile ci-fast, backing mem, seed 9",
        "can_flush: true",
        "can_fua: true",
        "can_trim: true",
        "can_zero: true",
        "is_read_only: false",
        "block_size_minimum: 1",
        "block_size_maximum: 33554432",
    ] {
        assert!(out.contains(want), "nbdinfo output lacks `{want}`:\n{out}");
    }
    // NBD_OPT_LIST.
    let (ok, out, err) = client(Command::new("nbdinfo").arg("--list").arg(format!("nbd://{}", s.addr)));
    assert!(ok && out.contains("export=\"mlpdrive\""), "nbdinfo --list: {err}\n{out}");
    // The empty default name reaches the same export.
    let (ok, out, _) = client(Command::new("nbdinfo").arg("--size").arg(format!("nbd://{}", s.addr)));
    assert!(ok && out.trim() == "67108864", "{out}");
    // A name the server does not export is refused (NBD_REP_ERR_UNKNOWN).
    let (ok, _, err) = client(Command::new("nbdinfo").arg(format!("nbd://{}/nope", s.addr)));
    assert!(!ok, "nbdinfo accepted an unknown export: {err}");
    let summary = s.stop();
    assert!(summary.contains("stopped;"), "{summary}");
}

#[test]
fn read_only_export_refuses_writes() {
    if !have("qemu-io", "read_only_export_refuses_writes") {
        return;
    }
    let s = Served::start(&["--size", "8MiB", "--profile", "ideal", "--read-only"]);
    let (ok, out, err) =
        client(Command::new("qemu-io").args(["-f", "raw", "-r", "-c", "read -P 0 0 64k"]).arg(s.uri()));
    assert!(ok && !err.contains("error"), "read of an unwritten range: {out}{err}");
    let (_, out, err) = client(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 1 0 4k"]).arg(s.uri()));
    let text = format!("{out}{err}");
    assert!(text.contains("ermission") || text.contains("read-only") || text.contains("Read-only"), "{text}");
}

/// Streams `len` pseudo-random bytes into `w`, returning their XXH3-64.
fn pump(mut w: impl Write, len: u64, seed: u64) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            // xorshift64*: fast, and enough to make every block distinct.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).expect("write to nbdcopy");
        left -= n as u64;
    }
    h.digest()
}

#[test]
fn nbdcopy_one_gib_in_and_out_with_equal_checksums() {
    if !have("nbdcopy", "nbdcopy_one_gib_in_and_out_with_equal_checksums") {
        return;
    }
    const LEN: u64 = 1 << 30;
    let s = Served::start(&["--size", "1GiB", "--profile", "ideal"]);
    let mut up = Command::new("nbdcopy")
        .args(["--", "-"])
        .arg(s.uri())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nbdcopy in");
    let sent = pump(up.stdin.take().unwrap(), LEN, 42);
    let out = up.wait_with_output().unwrap();
    assert!(out.status.success(), "nbdcopy - -> server: {}", String::from_utf8_lossy(&out.stderr));

    let mut down = Command::new("nbdcopy")
        .arg(s.uri())
        .arg("-")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nbdcopy out");
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut stdout = down.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n as u64;
    }
    let out = down.wait_with_output().unwrap();
    assert!(out.status.success(), "nbdcopy server -> -: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(got, LEN);
    assert_eq!(h.digest(), sent, "the GiB read back differs from the GiB written");
    let summary = s.stop();
    assert!(summary.contains("0 errors"), "{summary}");
}

#[test]
fn qemu_img_info_convert_and_qemu_io_patterns() {
    if !have("qemu-img", "qemu_img_info_convert_and_qemu_io_patterns")
        || !have("qemu-io", "qemu_img_info_convert_and_qemu_io_patterns")
    {
        return;
    }
    let d = scratch();
    let s = Served::start(&["--size", "16MiB", "--profile", "ci-fast"]);
    let (ok, out, err) = client(Command::new("qemu-img").arg("info").arg(s.uri()));
    assert!(ok, "qemu-img info: {err}");
    assert!(out.contains("virtual size: 16 MiB (16777216 bytes)"), "{out}");

    let (ok, out, err) = client(
        Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0xab 0 1M", "-c", "read -P 0xab 0 1M"]).arg(s.uri()),
    );
    assert!(ok, "qemu-io: {err}");
    assert!(out.contains("wrote 1048576/1048576") && out.contains("read 1048576/1048576"), "{out}");
    assert!(!out.contains("Pattern verification failed"), "{out}");

    // convert in and out: 16 MiB of distinct bytes survive the trip.
    let src = d.path().join("src.img");
    let mut f = std::fs::File::create(&src).unwrap();
    pump(&mut f, 16 << 20, 7);
    drop(f);
    let (ok, _, err) =
        client(Command::new("qemu-img").args(["convert", "-n", "-f", "raw", "-O", "raw"]).arg(&src).arg(s.uri()));
    assert!(ok, "qemu-img convert in: {err}");
    let back = d.path().join("back.img");
    let (ok, _, err) =
        client(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw"]).arg(s.uri()).arg(&back));
    assert!(ok, "qemu-img convert out: {err}");
    assert!(std::fs::read(&src).unwrap() == std::fs::read(&back).unwrap(), "converted image differs");
}

#[test]
fn file_backing_keeps_the_bytes_after_the_server_stops() {
    if !have("qemu-io", "file_backing_keeps_the_bytes_after_the_server_stops") {
        return;
    }
    let d = scratch();
    let img = d.path().join("export.img");
    let s = Served::start(&["--size", "4MiB", "--profile", "ci-fast", "--backing", img.to_str().unwrap()]);
    let (ok, _, err) = client(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5a 4096 8k"]).arg(s.uri()));
    assert!(ok, "{err}");
    s.stop();
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(bytes.len(), 4 << 20);
    assert!(bytes[4096..12288].iter().all(|&b| b == 0x5a) && bytes[..4096].iter().all(|&b| b == 0));
    // A directory or a device node is refused as backing, with exit 2.
    let r =
        mlpdrive(d.path(), &["emu", "serve", "--nbd", "127.0.0.1:0", "--profile", "ideal", "--backing", "/dev/null"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("not a regular file"), "{}", r.show());
    let r = mlpdrive(d.path(), &["emu", "serve", "--nbd", "127.0.0.1:0", "--profile", "ideal"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("--backing mem needs --size"), "{}", r.show());
}

#[test]
fn injected_eio_reaches_the_client() {
    if !have("qemu-io", "injected_eio_reaches_the_client") {
        return;
    }
    let d = scratch();
    let p = profile_file(
        d.path(),
        "channels: 4\nlatency: {read: {fixed: 10us}, write: {fixed: 10us}, flush: {fixed: 0}, trim: {fixed: 0}}\n\
         channel_bandwidth: {read: unlimited, write: unlimited}\n\
         device_bandwidth: {read: unlimited, write: unlimited, total: unlimited}\n\
         faults:\n  error_probability: {read: 1.0}\n",
    );
    let s = Served::start(&["--size", "8MiB", "--profile", &p]);
    // Writes succeed, every read fails with EIO.
    let (ok, out, err) = client(Command::new("qemu-io").args(["-f", "raw", "-c", "write 0 64k"]).arg(s.uri()));
    assert!(ok && !out.contains("error"), "{out}{err}");
    let (_, out, err) = client(Command::new("qemu-io").args(["-f", "raw", "-c", "read 0 64k"]).arg(s.uri()));
    let text = format!("{out}{err}");
    assert!(text.contains("Input/output error"), "qemu-io did not see EIO: {text}");
    // And on the wire: the simple reply carries NBD_EIO and no payload.
    let mut c = Raw::go(&s.addr);
    c.send(CMD_READ, 0, 1, 0, 4096, &[]);
    assert_eq!(c.reply(), (EIO, 1));
    c.send(CMD_READ, 0, 2, 0, 4096, &[]);
    assert_eq!(c.reply(), (EIO, 2), "a payload followed the error reply");
}

// ---- raw protocol ----

/// A raw client that speaks just enough NBD to misbehave.
struct Raw {
    s: TcpStream,
}

impl Raw {
    /// Connects and reads the server's greeting.
    fn connect(addr: &str) -> Raw {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(be64(&hello[0..8]), NBDMAGIC);
        assert_eq!(be64(&hello[8..16]), IHAVEOPT);
        assert_eq!(be16(&hello[16..18]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        Raw { s }
    }

    /// Connects with fixed newstyle + no zeroes.
    fn negotiating(addr: &str) -> Raw {
        let mut r = Raw::connect(addr);
        r.s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes()).unwrap();
        r
    }

    /// Negotiates with NBD_OPT_GO into transmission.
    fn go(addr: &str) -> Raw {
        let mut r = Raw::negotiating(addr);
        r.option(OPT_GO, &InfoRequest { name: b"mlpdrive".to_vec(), requests: vec![] }.encode());
        loop {
            let (opt, kind, data) = r.option_reply();
            assert_eq!(opt, OPT_GO);
            match kind {
                REP_INFO => {}
                REP_ACK => break,
                other => panic!("GO failed with {other:#x}: {}", String::from_utf8_lossy(&data)),
            }
        }
        r
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }

    fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        let (opt, kind, len) = parse_option_reply_header(&h).expect("option reply magic");
        let mut data = vec![0u8; len as usize];
        self.s.read_exact(&mut data).unwrap();
        (opt, kind, data)
    }

    fn send(&mut self, kind: u16, flags: u16, handle: u64, offset: u64, len: u32, payload: &[u8]) {
        let mut b = Request { flags, kind, handle, offset, len }.encode().to_vec();
        b.extend_from_slice(payload);
        self.s.write_all(&b).unwrap();
    }

    fn reply(&mut self) -> (u32, u64) {
        let mut h = [0u8; SIMPLE_REPLY_LEN];
        self.s.read_exact(&mut h).unwrap();
        parse_simple_reply(&h).expect("simple reply magic")
    }

    fn read_payload(&mut self, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    /// True once the server has closed the connection (EOF, or a reset);
    /// false if it is still open after 5 s.
    fn closed(&mut self) -> bool {
        self.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

#[test]
fn malformed_handshakes_close_the_connection_and_the_server_keeps_serving() {
    let s = Served::start(&["--size", "1MiB", "--profile", "ideal"]);
    // Unknown client flags.
    let mut r = Raw::connect(&s.addr);
    r.s.write_all(&0xffff_0000u32.to_be_bytes()).unwrap();
    assert!(r.closed());
    // An option without the IHAVEOPT magic.
    let mut r = Raw::negotiating(&s.addr);
    r.s.write_all(&[0u8; 16]).unwrap();
    assert!(r.closed());
    // An option claiming 4 GiB of data: closed without reading (or allocating) it.
    let mut r = Raw::negotiating(&s.addr);
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&OPT_GO.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    r.s.write_all(&b).unwrap();
    assert!(r.closed());
    // A client that hangs up mid-greeting.
    drop(TcpStream::connect(&s.addr).unwrap());
    // Garbage instead of a handshake.
    let mut g = TcpStream::connect(&s.addr).unwrap();
    let _ = g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    drop(g);

    // Errors that keep the negotiation going.
    let mut r = Raw::negotiating(&s.addr);
    r.option(0x7777, &[]);
    assert_eq!(r.option_reply().1, REP_ERR_UNSUP, "unknown option");
    r.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(r.option_reply().1, REP_ERR_UNSUP, "structured replies are not offered");
    r.option(OPT_INFO, &[0, 0, 0, 9, b'x']);
    assert_eq!(r.option_reply().1, REP_ERR_INVALID, "truncated NBD_OPT_INFO");
    r.option(OPT_LIST, b"junk");
    assert_eq!(r.option_reply().1, REP_ERR_INVALID, "NBD_OPT_LIST with data");
    r.option(OPT_GO, &InfoRequest { name: b"other".to_vec(), requests: vec![] }.encode());
    assert_eq!(r.option_reply().1, REP_ERR_UNKNOWN, "unknown export");
    r.option(OPT_LIST, &[]);
    let (_, kind, data) = r.option_reply();
    assert_eq!(kind, REP_SERVER);
    assert_eq!(&data[4..12], b"mlpdrive");
    assert_eq!(r.option_reply().1, REP_ACK);
    r.option(OPT_INFO, &InfoRequest { name: vec![], requests: vec![INFO_BLOCK_SIZE] }.encode());
    let mut infos = Vec::new();
    loop {
        let (_, kind, data) = r.option_reply();
        if kind == REP_ACK {
            break;
        }
        assert_eq!(kind, REP_INFO);
        infos.push(parse_info(&data).unwrap());
    }
    assert!(infos.iter().any(|i| matches!(i, Info::Export { size_bytes: 1_048_576, .. })), "{infos:?}");
    assert!(infos.iter().any(|i| matches!(i, Info::BlockSize { max: PAYLOAD_LEN_MAX, .. })), "{infos:?}");
    r.option(OPT_ABORT, &[]);
    assert_eq!(r.option_reply().1, REP_ACK);
    assert!(r.closed());

    // NBD_OPT_EXPORT_NAME (the old way in) still works, and so does everyone else.
    let mut r = Raw::negotiating(&s.addr);
    r.option(OPT_EXPORT_NAME, b"mlpdrive");
    let mut head = [0u8; 10];
    r.s.read_exact(&mut head).unwrap();
    assert_eq!(be64(&head[0..8]), 1 << 20);
    r.send(CMD_READ, 0, 5, 0, 512, &[]);
    assert_eq!(r.reply(), (0, 5));
    assert_eq!(r.read_payload(512), vec![0u8; 512]);
    r.send(CMD_DISC, 0, 6, 0, 0, &[]);
    assert!(r.closed());
    // A client that did not ask for NBD_FLAG_C_NO_ZEROES gets the 124 zero bytes.
    let mut r = Raw::connect(&s.addr);
    r.s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    r.option(OPT_EXPORT_NAME, b"");
    let mut head = [0xffu8; 134];
    r.s.read_exact(&mut head).unwrap();
    assert_eq!(be64(&head[0..8]), 1 << 20);
    assert!(head[10..].iter().all(|&b| b == 0));
    r.send(CMD_FLUSH, 0, 7, 0, 0, &[]);
    assert_eq!(r.reply(), (0, 7));
    let summary = s.stop();
    assert!(summary.contains("stopped;"), "{summary}");
}

#[test]
fn bad_requests_get_error_replies_and_the_stream_stays_in_sync() {
    let s = Served::start(&["--size", "1MiB", "--profile", "ideal"]);
    let mut c = Raw::go(&s.addr);
    let size = 1u64 << 20;
    // Reads past the end, overflowing ranges, zero and oversized lengths: EINVAL.
    c.send(CMD_READ, 0, 1, size - 512, 1024, &[]);
    assert_eq!(c.reply(), (EINVAL, 1));
    c.send(CMD_READ, 0, 2, u64::MAX - 10, 512, &[]);
    assert_eq!(c.reply(), (EINVAL, 2));
    c.send(CMD_READ, 0, 3, 0, 0, &[]);
    assert_eq!(c.reply(), (EINVAL, 3));
    c.send(CMD_READ, 0, 4, 0, u32::MAX, &[]);
    assert_eq!(c.reply(), (EINVAL, 4));
    // A write past the end: ENOSPC, its payload consumed.
    c.send(CMD_WRITE, 0, 5, size - 512, 1024, &[0xee; 1024]);
    assert_eq!(c.reply(), (ENOSPC, 5));
    // A write larger than the server accepts: EINVAL, payload skipped.
    let big = PAYLOAD_LEN_MAX as usize + 4096;
    c.send(CMD_WRITE, 0, 6, 0, big as u32, &vec![0x11; big]);
    assert_eq!(c.reply(), (EINVAL, 6));
    // Unknown command, unknown flag, flush with a range: EINVAL.
    c.send(99, 0, 7, 0, 0, &[]);
    assert_eq!(c.reply(), (EINVAL, 7));
    c.send(CMD_READ, 0x8000, 8, 0, 512, &[]);
    assert_eq!(c.reply(), (EINVAL, 8));
    c.send(CMD_FLUSH, 0, 9, 4096, 0, &[]);
    assert_eq!(c.reply(), (EINVAL, 9));
    c.send(CMD_TRIM, 0, 10, size, 4096, &[]);
    assert_eq!(c.reply(), (EINVAL, 10));
    // Still in sync: a FUA write and a read of it.
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    c.send(CMD_WRITE, CMD_FLAG_FUA, 11, 8192, 4096, &data);
    assert_eq!(c.reply(), (0, 11));
    c.send(CMD_READ, 0, 12, 8192, 4096, &[]);
    assert_eq!(c.reply(), (0, 12));
    assert_eq!(c.read_payload(4096), data);
    c.send(CMD_WRITE_ZEROES, 0, 13, 8192, 1024, &[]);
    assert_eq!(c.reply(), (0, 13));
    c.send(CMD_FLUSH, 0, 14, 0, 0, &[]);
    assert_eq!(c.reply(), (0, 14));
    c.send(CMD_READ, 0, 15, 8192, 2048, &[]);
    assert_eq!(c.reply(), (0, 15));
    let back = c.read_payload(2048);
    assert!(back[..1024].iter().all(|&b| b == 0) && back[1024..] == data[1024..2048]);
    // A request without the magic cannot be answered: the server hangs up.
    c.s.write_all(&[0u8; REQUEST_LEN]).unwrap();
    assert!(c.closed());
    let summary = s.stop();
    assert!(summary.contains("(10 errors)"), "{summary}");
}

#[test]
fn pipelined_requests_complete_in_the_models_order_not_the_clients() {
    let d = scratch();
    // Reads move at 100 MB/s per channel: a 16 MiB read takes ~170 ms, a
    // 4 KiB read ~40 µs, on separate channels.
    let p = profile_file(
        d.path(),
        "channels: 4\nlatency: {read: {fixed: 0}, write: {fixed: 0}, flush: {fixed: 0}, trim: {fixed: 0}}\n\
         channel_bandwidth: {read: 100MB/s, write: unlimited}\n\
         device_bandwidth: {read: unlimited, write: unlimited, total: unlimited}\n",
    );
    let s = Served::start(&["--size", "32MiB", "--profile", &p]);
    let mut c = Raw::go(&s.addr);
    c.send(CMD_READ, 0, 100, 0, 16 << 20, &[]);
    for h in 0..8 {
        c.send(CMD_READ, 0, h, 16 << 20, 4096, &[]);
    }
    let mut order = Vec::new();
    for _ in 0..9 {
        let (err, h) = c.reply();
        assert_eq!(err, 0);
        let _ = c.read_payload(if h == 100 { 16 << 20 } else { 4096 });
        order.push(h);
    }
    assert_eq!(order.last(), Some(&100), "the big read should finish last: {order:?}");
    let mut small: Vec<u64> = order[..8].to_vec();
    small.sort();
    assert_eq!(small, (0..8).collect::<Vec<_>>());
}

// ---- the driver's nbd:// target ----

/// `mlpdrive run raw-smoke --target URI` with results in `dir/res`; returns
/// the run and its results JSON, if written.
fn run_on(dir: &Path, uri: &str, extra: &[&str]) -> (Run, Option<serde_json::Value>) {
    let res = dir.join("res");
    let out = dir.join("out.json");
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["run", "raw-smoke", "--quiet", "--target", uri, "--results", res.to_str().unwrap(), "--output"];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    // `timeout` guards against a hang: a hung run fails the test instead of CI.
    let r = Run::from(
        Command::new("timeout").arg("120").arg(BIN).args(&args).current_dir(dir).output().expect("run mlpdrive"),
    );
    let j = out.is_file().then(|| read_json(&out));
    (r, j)
}

#[test]
fn raw_run_on_an_emu_export_round_trips_with_verification() {
    let d = scratch();
    let s = Served::start(&["--size", "256MiB", "--profile", "ci-fast"]);
    let (r, j) = run_on(d.path(), &s.uri(), &["--duration", "1s", "--set", "jobs=2"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["target"]["kind"], "nbd");
    assert_eq!(j["io_mode"]["engine"], "nbd");
    assert_eq!(j["verify_errors"], 0);
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "{j}");
    let writes = j["summary"]["write"]["ops"].as_u64().unwrap();
    assert!(writes > 0 && j["summary"]["read"]["ops"].as_u64().unwrap() > 0, "{j}");
    // The server saw the run's bytes (the layout, then the measured writes).
    let summary = s.stop();
    let written: u64 = summary.split(" bytes written").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(written >= writes * 4096, "server wrote {written} bytes for {writes} writes: {summary}");
    assert!(tree(d.path()).iter().all(|p| p.starts_with("res") || p.starts_with("out.json")));
}

#[test]
fn injected_read_errors_on_the_export_fail_the_run_with_a_count() {
    let d = scratch();
    let p = profile_file(
        d.path(),
        "channels: 8\nlatency: {read: {fixed: 20us}, write: {fixed: 20us}, flush: {fixed: 20us}, trim: {fixed: 0}}\n\
         channel_bandwidth: {read: unlimited, write: unlimited}\n\
         device_bandwidth: {read: unlimited, write: unlimited, total: unlimited}\n\
         faults:\n  error_probability: {read: 0.05}\n",
    );
    let s = Served::start(&["--size", "64MiB", "--profile", &p]);
    let (r, j) = run_on(d.path(), &s.uri(), &["--duration", "1s", "--set", "continue_on_error=true"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "failed");
    assert!(j["errors"]["count"].as_u64().unwrap() > 5, "{j}");
    assert!(j["errors"]["first"].as_str().unwrap().contains("Input/output error"), "{j}");
}

#[test]
fn a_server_that_dies_mid_run_fails_the_run_instead_of_hanging() {
    let d = scratch();
    let mut s = Served::start(&["--size", "64MiB", "--profile", "ci-fast"]);
    let killer = {
        let pid = s.child.id() as i32;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            // SAFETY: kill(2) on the server child; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
    };
    let (r, j) = run_on(d.path(), &s.uri(), &["--duration", "30s"]);
    killer.join().unwrap();
    let _ = s.child.wait();
    assert_eq!(r.code, 1, "{}", r.show());
    let first = j.unwrap()["errors"]["first"].as_str().unwrap_or("").to_string();
    assert!(first.contains("NBD connection lost") || first.contains("stalled"), "{first}");
}

#[test]
fn a_hanging_export_fails_the_run_as_stalled_and_the_server_still_stops() {
    let d = scratch();
    let p = profile_file(
        d.path(),
        "channels: 8\nlatency: {read: {fixed: 20us}, write: {fixed: 20us}, flush: {fixed: 20us}, trim: {fixed: 0}}\n\
         channel_bandwidth: {read: unlimited, write: unlimited}\n\
         device_bandwidth: {read: unlimited, write: unlimited, total: unlimited}\n\
         faults:\n  hang: {probability: 0.5, duration: 600s}\n",
    );
    let s = Served::start(&["--size", "64MiB", "--profile", &p]);
    let (r, j) = run_on(d.path(), &s.uri(), &["--duration", "30s", "--set", "io.timeout=1s", "--set", "rw=randread"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let first = j.unwrap()["errors"]["first"].as_str().unwrap_or("").to_string();
    assert!(first.contains("stalled"), "{first}");
    // Requests still hung inside the server do not keep it from stopping.
    let summary = s.stop();
    assert!(summary.contains("stopped;"), "{summary}");
}

#[test]
fn a_missing_server_or_export_is_a_usage_error() {
    let d = scratch();
    // A port nobody listens on: bind one, learn it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (r, _) = run_on(d.path(), &format!("nbd://127.0.0.1:{port}/x"), &[]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("cannot connect"), "{}", r.show());
    let s = Served::start(&["--size", "8MiB", "--profile", "ideal"]);
    let (r, _) = run_on(d.path(), &format!("nbd://{}/other", s.addr), &[]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("no export named \"other\""), "{}", r.show());
    assert!(!d.path().join("res").exists(), "a refused target must not create results");
}

/// A qemu-nbd serving `img` on a free port, killed on drop.
struct QemuNbd(Child, u16);

impl QemuNbd {
    fn start(img: &Path) -> QemuNbd {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "exp", "--persistent", "-e", "4", "-b", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg(img)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-nbd");
        wait_for_port(port);
        QemuNbd(child, port)
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port} after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn raw_run_on_qemu_nbd_needs_allow_raw_device_and_verifies() {
    if !have("qemu-nbd", "raw_run_on_qemu_nbd_needs_allow_raw_device_and_verifies") {
        return;
    }
    let d = scratch();
    let img = d.path().join("q.img");
    std::fs::File::create(&img).unwrap().set_len(128 << 20).unwrap();
    let q = QemuNbd::start(&img);
    let uri = format!("nbd://127.0.0.1:{}/exp", q.1);
    let (r, _) = run_on(d.path(), &uri, &["--duration", "1s"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("--allow-raw-device") && r.stderr.contains("not an mlpdrive emu export"), "{}", r.show());
    assert_eq!(std::fs::read(&img).unwrap().iter().filter(|&&b| b != 0).count(), 0, "refused, yet the image changed");
    let (r, j) = run_on(d.path(), &uri, &["--duration", "1s", "--allow-raw-device", "--set", "jobs=2"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["verify_errors"], 0);
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "{j}");
    // The bytes reached qemu-nbd's image: its first block is one of ours.
    let mut head = [0u8; 16];
    std::fs::File::open(&img).unwrap().read_exact(&mut head).unwrap();
    assert_eq!(&head[8..15], b"MLPDBLK", "first block: {head:?}");
}

#[test]
fn raw_run_on_nbdkit_memory_verifies() {
    if !have("nbdkit", "raw_run_on_nbdkit_memory_verifies") {
        return;
    }
    let d = scratch();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("nbdkit")
        .args(["--foreground", "--exit-with-parent", "-i", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["memory", "128M"])
        .spawn()
        .expect("start nbdkit");
    wait_for_port(port);
    let (r, j) = run_on(d.path(), &format!("nbd://127.0.0.1:{port}"), &["--duration", "1s", "--allow-raw-device"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["verify_errors"], 0);
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn serve_usage_errors_exit_2_before_listening() {
    let d = scratch();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let img = d.path().join("new.img");
    for (args, needle) in [
        (vec!["--nbd", "nonsense", "--size", "1MiB", "--profile", "ideal"], "ADDR:PORT"),
        (vec!["--nbd", &busy, "--size", "1MiB", "--profile", "ideal"], "cannot listen"),
        (vec!["--nbd", "127.0.0.1:0", "--size", "0", "--profile", "ideal"], "at least one byte"),
        (vec!["--nbd", "127.0.0.1:0", "--size", "1MiB", "--profile", "nope"], "unknown device profile"),
        (vec!["--nbd", "127.0.0.1:0", "--profile", "ideal", "--backing", img.to_str().unwrap()], "pass --size"),
    ] {
        let mut full = vec!["emu", "serve"];
        full.extend_from_slice(&args);
        let r = mlpdrive(d.path(), &full);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.show());
        assert!(!r.stdout.contains("listening"), "{args:?}: {}", r.show());
    }
    assert!(!img.exists(), "a refused serve created its backing file");
}

#[test]
fn injected_read_corruption_on_the_export_is_caught_by_verification() {
    let d = scratch();
    let p = profile_file(
        d.path(),
        "channels: 8\nlatency: {read: {fixed: 20us}, write: {fixed: 20us}, flush: {fixed: 20us}, trim: {fixed: 0}}\n\
         channel_bandwidth: {read: unlimited, write: unlimited}\n\
         device_bandwidth: {read: unlimited, write: unlimited, total: unlimited}\n\
         faults:\n  read_corruption_probability: 0.01\n",
    );
    let s = Served::start(&["--size", "64MiB", "--profile", &p]);
    let (r, j) = run_on(d.path(), &s.uri(), &["--duration", "1s"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert!(j["verify_errors"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["errors"]["count"], 0, "corruption is not an I/O error: {j}");
}

#[test]
fn a_block_device_backing_needs_allow_raw_device() {
    // Refused before it is opened, so any block device node will do.
    let dev = ["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda", "/dev/loop0"]
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type())));
    let Some(dev) = dev else {
        eprintln!("SKIPPED a_block_device_backing_needs_allow_raw_device: no block device node on this machine");
        return;
    };
    let d = scratch();
    let r = mlpdrive(d.path(), &["emu", "serve", "--nbd", "127.0.0.1:0", "--profile", "ideal", "--backing", dev]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("block device") && r.stderr.contains("--allow-raw-device"), "{}", r.show());
}

#[test]
fn a_loop_device_backing_is_served_with_allow_raw_device() {
    if !have("qemu-io", "a_loop_device_backing_is_served_with_allow_raw_device") {
        return;
    }
    let d = scratch();
    let img = d.path().join("loop.img");
    std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    let lo = match crate::raw_runs::Loop::attach(&img) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("SKIPPED a_loop_device_backing_is_served_with_allow_raw_device: no loop device ({why})");
            return;
        }
    };
    // Without --size the export is the device's size.
    let s = Served::start(&["--profile", "ci-fast", "--backing", &lo.dev, "--allow-raw-device"]);
    let (ok, out, err) = client(Command::new("qemu-img").arg("info").arg(s.uri()));
    assert!(ok && out.contains("(8388608 bytes)"), "{out}{err}");
    let (ok, _, err) = client(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x3c 1M 64k"]).arg(s.uri()));
    assert!(ok, "{err}");
    s.stop();
    drop(lo);
    let bytes = std::fs::read(&img).unwrap();
    assert!(bytes[1 << 20..(1 << 20) + 65536].iter().all(|&b| b == 0x3c), "the write did not reach the device");
}
