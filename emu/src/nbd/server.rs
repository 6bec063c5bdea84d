//! The NBD server: a TCP listener, a thread per connection, and a small pool
//! that completes requests at the device model's completion times.
//!
//! How a request flows:
//!
//! 1. The connection's thread reads the request (and a write's payload,
//!    bounded by [`PAYLOAD_LEN_MAX`]) and checks it: a malformed or
//!    out-of-range request gets an error reply at once and never reaches the
//!    model; a request whose header cannot be trusted closes the connection.
//! 2. The device model ([`Device::submit`], on the real clock) says when and
//!    how the op completes: latency, queueing on its channels, bandwidth,
//!    EIO, hangs (ETIMEDOUT, replied as EIO), read corruption.
//! 3. An op already due (the `ideal` profile) is completed by the connection
//!    thread itself; any other waits in a time-ordered queue that the
//!    completion pool drains when each op falls due. Completing means moving
//!    the bytes through the [`Store`] and sending the reply, so replies go
//!    out in completion order, not request order (pipelined clients see the
//!    model's internal parallelism).
//!
//! Memory is bounded: each connection has at most [`INFLIGHT_MAX`] requests
//! and [`INFLIGHT_BYTES_MAX`] payload bytes in flight; beyond that it stops
//! reading the socket until replies have gone out (TCP backpressure); at
//! most [`CONNECTIONS_MAX`] connections are served at once.

use core::time::Duration;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::export::Store;
use super::protocol::*;
use crate::clock::{Clock, RealClock};
use crate::model::{Device, DeviceOp, Outcome};

/// Requests in flight per connection before the server stops reading.
pub const INFLIGHT_MAX: usize = 512;
/// Payload bytes (writes received, reads to send) in flight per connection
/// before the server stops reading.
pub const INFLIGHT_BYTES_MAX: u64 = 128 << 20;
/// Connections served at once; further clients are closed at accept, so a
/// flood of connections cannot exhaust threads or memory.
pub const CONNECTIONS_MAX: usize = 64;
/// A client must finish the handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that does not take a reply for this long is disconnected, so a
/// client that stops reading holds a completion thread for at most this.
const REPLY_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the listener looks for new clients (and at the stop flag).
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What the server exports and how.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The export's name (clients may also ask for the empty default name).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Refuse writes, trims and write-zeroes with EPERM.
    pub read_only: bool,
    /// Sent as `NBD_INFO_DESCRIPTION` and shown by `nbdinfo`.
    pub description: String,
    /// Threads that complete delayed requests.
    pub completion_threads: usize,
}

/// Counters over the server's life.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests answered (successfully or not).
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// Bytes sent for reads.
    pub read_bytes: AtomicU64,
    /// Bytes received for writes.
    pub written_bytes: AtomicU64,
}

/// A running NBD server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    cfg: ExportConfig,
    store: Box<dyn Store>,
    device: Mutex<Device>,
    clock: RealClock,
    stop: AtomicBool,
    queue: Mutex<BinaryHeap<Reverse<Job>>>,
    queue_cv: Condvar,
    seq: AtomicU64,
    stats: Stats,
}

/// One connection's reply side and in-flight accounting.
struct Conn {
    writer: Mutex<TcpStream>,
    inflight: Mutex<(usize, u64)>,
    inflight_cv: Condvar,
    broken: AtomicBool,
}

/// A request the model has timed, waiting to complete.
struct Job {
    due_ns: u64,
    seq: u64,
    conn: Arc<Conn>,
    req: Request,
    payload: Vec<u8>,
    outcome: Outcome,
    /// For a FUA write: the outcome of the flush that makes it durable.
    fua: Option<Outcome>,
    cost_bytes: u64,
}

impl PartialEq for Job {
    fn eq(&self, other: &Job) -> bool {
        (self.due_ns, self.seq) == (other.due_ns, other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Job) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Job) -> CmpOrdering {
        (self.due_ns, self.seq).cmp(&(other.due_ns, other.seq))
    }
}

/// Why a connection ended early (logged, never fatal to the server).
#[derive(Debug)]
enum End {
    /// The client closed or the socket failed.
    Io(io::Error),
    /// The client broke the protocol in a way that cannot be answered.
    Protocol(String),
    /// Negotiation ended without transmission (NBD_OPT_ABORT).
    Aborted,
    /// The server is stopping.
    Stopping,
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Io(e)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Never give up serving because another thread panicked mid-update: every
    // guarded value here stays consistent between statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) for one export over `store`,
    /// timed by `device` (whose capacity should be the export size).
    pub fn bind(
        addr: impl ToSocketAddrs,
        cfg: ExportConfig,
        store: Box<dyn Store>,
        device: Device,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            cfg,
            store,
            device: Mutex::new(device),
            clock: RealClock::new(),
            stop: AtomicBool::new(false),
            queue: Mutex::new(BinaryHeap::new()),
            queue_cv: Condvar::new(),
            seq: AtomicU64::new(0),
            stats: Stats::default(),
        });
        Ok(Server { listener, shared })
    }

    /// The address clients connect to (with the real port if 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Serves until `stop` becomes true, then closes every connection
    /// (requests still in flight get no reply: a hard disconnect) and
    /// returns. `log` receives one line per connection event.
    pub fn run(&self, stop: &AtomicBool, log: Arc<dyn Fn(String) + Send + Sync>) -> io::Result<()> {
        let workers: Vec<JoinHandle<()>> = (0..self.shared.cfg.completion_threads.max(1))
            .map(|i| {
                let shared = self.shared.clone();
                std::thread::Builder::new().name(format!("nbd-complete-{i}")).spawn(move || completion_worker(&shared))
            })
            .collect::<io::Result<_>>()?;
        let mut conns: Vec<(TcpStream, JoinHandle<()>)> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    conns.retain(|(_, h)| !h.is_finished());
                    if conns.len() >= CONNECTIONS_MAX {
                        log(format!("{peer}: refused: already serving {CONNECTIONS_MAX} connections"));
                        drop(stream);
                        continue;
                    }
                    match self.spawn_connection(stream, peer, &log) {
                        Ok(c) => {
                            self.shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                            conns.push(c);
                        }
                        // Out of threads or descriptors: drop this client, keep serving.
                        Err(e) => log(format!("{peer}: cannot serve this connection: {e}")),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log(format!("accept failed: {e}"));
                    std::thread::sleep(POLL);
                }
            }
            conns.retain(|(_, h)| !h.is_finished());
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.queue_cv.notify_all();
        for (s, _) in &conns {
            let _ = s.shutdown(Shutdown::Both);
        }
        for (_, h) in conns {
            let _ = h.join();
        }
        for w in workers {
            let _ = w.join();
        }
        lock(&self.shared.queue).clear();
        Ok(())
    }
}

impl Server {
    /// Starts the thread that serves one accepted connection; returns a
    /// handle to shut its socket down with, and the thread.
    fn spawn_connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        log: &Arc<dyn Fn(String) + Send + Sync>,
    ) -> io::Result<(TcpStream, JoinHandle<()>)> {
        stream.set_nonblocking(false)?;
        let shutdown_handle = stream.try_clone()?;
        let shared = self.shared.clone();
        let log_end = log.clone();
        log(format!("{peer}: connected"));
        let handle = std::thread::Builder::new().name(format!("nbd-conn-{peer}")).spawn(move || {
            let end = serve_connection(&shared, stream).err();
            log_end(describe_end(peer, end));
        })?;
        Ok((shutdown_handle, handle))
    }
}

fn describe_end(peer: SocketAddr, end: Option<End>) -> String {
    match end {
        None => format!("{peer}: disconnected"),
        Some(End::Aborted) => format!("{peer}: negotiation ended by the client"),
        Some(End::Stopping) => format!("{peer}: closed (server stopping)"),
        Some(End::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("{peer}: connection closed by the client")
        }
        Some(End::Io(e)) => format!("{peer}: connection error: {e}"),
        Some(End::Protocol(why)) => format!("{peer}: protocol error, closing: {why}"),
    }
}

/// Reads exactly `buf.len()` bytes, giving up when the server stops.
fn read_full(shared: &Shared, s: &mut TcpStream, buf: &mut [u8]) -> Result<(), End> {
    let mut got = 0;
    while got < buf.len() {
        if shared.stop.load(Ordering::SeqCst) {
            return Err(End::Stopping);
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(End::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            // A read timeout only gives the loop a chance to see a stop.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(End::Io(e)),
        }
    }
    Ok(())
}

/// Reads and throws away `len` bytes in small pieces (a payload too large to
/// accept), so the stream stays in sync without allocating `len` bytes.
fn discard(shared: &Shared, s: &mut TcpStream, len: u64) -> Result<(), End> {
    let mut scratch = [0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(scratch.len() as u64) as usize;
        read_full(shared, s, &mut scratch[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn serve_connection(shared: &Arc<Shared>, mut s: TcpStream) -> Result<(), End> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    negotiate(shared, &mut s)?;
    // Transmission: reads block until a request arrives, waking up now and
    // then to notice a stop.
    s.set_read_timeout(Some(POLL))?;
    s.set_write_timeout(Some(REPLY_SEND_TIMEOUT))?;
    transmit(shared, s)
}

/// Runs the handshake and option haggling; returns once the client entered
/// transmission.
fn negotiate(shared: &Shared, s: &mut TcpStream) -> Result<(), End> {
    let cfg = &shared.cfg;
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    let mut b4 = [0u8; 4];
    read_handshake(s, &mut b4)?;
    let client_flags = be32(&b4);
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(End::Protocol(format!("unknown client flags {client_flags:#x}")));
    }
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
    let flags = transmission_flags(cfg);
    loop {
        let mut head = [0u8; 16];
        read_handshake(s, &mut head)?;
        if be64(&head[0..8]) != IHAVEOPT {
            return Err(End::Protocol("option without the IHAVEOPT magic".to_string()));
        }
        let option = be32(&head[8..12]);
        let len = be32(&head[12..16]);
        if len > OPTION_LEN_MAX {
            return Err(End::Protocol(format!("option {option} claims {len} bytes of data (limit {OPTION_LEN_MAX})")));
        }
        let mut data = vec![0u8; len as usize];
        read_handshake(s, &mut data)?;
        let name_ok = |name: &[u8]| name.is_empty() || name == cfg.name.as_bytes();
        match option {
            OPT_EXPORT_NAME => {
                if !name_ok(&data) {
                    return Err(End::Protocol(format!(
                        "NBD_OPT_EXPORT_NAME for unknown export {:?}",
                        String::from_utf8_lossy(&data)
                    )));
                }
                let mut reply = Vec::with_capacity(10 + 124);
                reply.extend_from_slice(&cfg.size_bytes.to_be_bytes());
                reply.extend_from_slice(&flags.to_be_bytes());
                if !no_zeroes {
                    reply.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&reply)?;
                return Ok(());
            }
            OPT_ABORT => {
                // The client may already have closed; the ack is a courtesy.
                let _ = s.write_all(&option_reply(option, REP_ACK, &[]));
                return Err(End::Aborted);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    s.write_all(&option_reply(option, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data"))?;
                    continue;
                }
                let mut server = (cfg.name.len() as u32).to_be_bytes().to_vec();
                server.extend_from_slice(cfg.name.as_bytes());
                server.extend_from_slice(cfg.description.as_bytes());
                s.write_all(&option_reply(option, REP_SERVER, &server))?;
                s.write_all(&option_reply(option, REP_ACK, &[]))?;
            }
            OPT_INFO | OPT_GO => {
                let Some(req) = InfoRequest::parse(&data) else {
                    s.write_all(&option_reply(option, REP_ERR_INVALID, b"malformed NBD_OPT_INFO/GO payload"))?;
                    continue;
                };
                if !name_ok(&req.name) {
                    let msg = format!(
                        "no export named {:?}; this server exports {:?}",
                        String::from_utf8_lossy(&req.name),
                        cfg.name
                    );
                    s.write_all(&option_reply(option, REP_ERR_UNKNOWN, msg.as_bytes()))?;
                    continue;
                }
                let mut out = option_reply(option, REP_INFO, &info_export(cfg.size_bytes, flags));
                out.extend(option_reply(option, REP_INFO, &info_block_size(1, 4096, PAYLOAD_LEN_MAX)));
                for r in &req.requests {
                    match *r {
                        INFO_NAME => {
                            out.extend(option_reply(option, REP_INFO, &info_string(INFO_NAME, cfg.name.as_bytes())))
                        }
                        INFO_DESCRIPTION => out.extend(option_reply(
                            option,
                            REP_INFO,
                            &info_string(INFO_DESCRIPTION, cfg.description.as_bytes()),
                        )),
                        _ => {}
                    }
                }
                out.extend(option_reply(option, REP_ACK, &[]));
                s.write_all(&out)?;
                if option == OPT_GO {
                    return Ok(());
                }
            }
            OPT_STARTTLS => s.write_all(&option_reply(option, REP_ERR_POLICY, b"TLS is not supported"))?,
            _ => s.write_all(&option_reply(option, REP_ERR_UNSUP, &[]))?,
        }
    }
}

fn read_handshake(s: &mut TcpStream, buf: &mut [u8]) -> Result<(), End> {
    s.read_exact(buf).map_err(|e| {
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
            End::Protocol(format!("handshake not finished within {} s", HANDSHAKE_TIMEOUT.as_secs()))
        } else {
            End::Io(e)
        }
    })
}

fn transmission_flags(cfg: &ExportConfig) -> u16 {
    let mut f = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_CAN_MULTI_CONN;
    if cfg.read_only {
        f |= FLAG_READ_ONLY;
    } else {
        f |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
    }
    f
}

/// The transmission phase of one connection.
fn transmit(shared: &Arc<Shared>, mut s: TcpStream) -> Result<(), End> {
    let conn = Arc::new(Conn {
        writer: Mutex::new(s.try_clone()?),
        inflight: Mutex::new((0, 0)),
        inflight_cv: Condvar::new(),
        broken: AtomicBool::new(false),
    });
    let result = loop {
        if conn.broken.load(Ordering::SeqCst) {
            break Err(End::Protocol("a reply could not be sent".to_string()));
        }
        let mut head = [0u8; REQUEST_LEN];
        if let Err(e) = read_full(shared, &mut s, &mut head) {
            break Err(e);
        }
        let Some(req) = Request::parse(&head) else {
            break Err(End::Protocol("request without the NBD request magic".to_string()));
        };
        if req.kind == CMD_DISC {
            break Ok(());
        }
        if let Err(e) = handle_request(shared, &conn, &mut s, req) {
            break Err(e);
        }
    };
    // After NBD_CMD_DISC, let replies of requests still in flight go out (a
    // soft disconnect promises them), unless the server is stopping. After
    // an error the connection is dropped at once (a hard disconnect).
    let mut inflight = lock(&conn.inflight);
    while result.is_ok() && inflight.0 > 0 && !shared.stop.load(Ordering::SeqCst) && !conn.broken.load(Ordering::SeqCst)
    {
        inflight = conn.inflight_cv.wait_timeout(inflight, POLL).unwrap_or_else(|e| e.into_inner()).0;
    }
    drop(inflight);
    let _ = s.shutdown(Shutdown::Both);
    result
}

/// Validates one request, reads its payload, times it on the model and
/// either completes it now or queues it.
fn handle_request(shared: &Arc<Shared>, conn: &Arc<Conn>, s: &mut TcpStream, req: Request) -> Result<(), End> {
    let cfg = &shared.cfg;
    let len = u64::from(req.len);
    let in_range = req.offset.checked_add(len).is_some_and(|end| end <= cfg.size_bytes);
    let known_flags = CMD_FLAG_FUA | if req.kind == CMD_WRITE_ZEROES { CMD_FLAG_NO_HOLE } else { 0 };
    let error = |code: u32| -> Result<(), End> { send_error(shared, conn, req.handle, code) };

    if req.kind == CMD_WRITE {
        // The payload follows whatever we decide about it.
        if req.len > PAYLOAD_LEN_MAX {
            discard(shared, s, len)?;
            return error(EINVAL);
        }
        wait_for_room(shared, conn, len)?;
        let mut payload = vec![0u8; req.len as usize];
        if let Err(e) = read_full(shared, s, &mut payload) {
            release(conn, len);
            return Err(e);
        }
        let refusal = if req.flags & !known_flags != 0 {
            Some(EINVAL)
        } else if cfg.read_only {
            Some(EPERM)
        } else if !in_range {
            Some(ENOSPC)
        } else if req.len == 0 {
            Some(EINVAL)
        } else {
            None
        };
        if let Some(code) = refusal {
            release(conn, len);
            return error(code);
        }
        shared.stats.written_bytes.fetch_add(len, Ordering::Relaxed);
        return schedule(shared, conn, req, payload, DeviceOp::write(req.offset, len), len);
    }
    if req.flags & !known_flags != 0 {
        return error(EINVAL);
    }
    let op = match req.kind {
        CMD_READ if req.len > PAYLOAD_LEN_MAX || req.len == 0 || !in_range => return error(EINVAL),
        CMD_READ => DeviceOp::read(req.offset, len),
        CMD_FLUSH if req.offset != 0 || req.len != 0 => return error(EINVAL),
        CMD_FLUSH => DeviceOp::flush(),
        CMD_TRIM | CMD_WRITE_ZEROES if cfg.read_only => return error(EPERM),
        CMD_TRIM if !in_range || req.len == 0 => return error(EINVAL),
        CMD_TRIM => DeviceOp::trim(req.offset, len),
        CMD_WRITE_ZEROES if !in_range => return error(ENOSPC),
        CMD_WRITE_ZEROES if req.len == 0 => return error(EINVAL),
        CMD_WRITE_ZEROES => DeviceOp::write(req.offset, len),
        _ => return error(EINVAL),
    };
    let reply_bytes = if req.kind == CMD_READ { len } else { 0 };
    wait_for_room(shared, conn, reply_bytes)?;
    schedule(shared, conn, req, Vec::new(), op, reply_bytes)
}

/// Blocks until the connection may take another request of `bytes`.
fn wait_for_room(shared: &Shared, conn: &Conn, bytes: u64) -> Result<(), End> {
    let mut inflight = lock(&conn.inflight);
    while inflight.0 > 0 && (inflight.0 >= INFLIGHT_MAX || inflight.1 + bytes > INFLIGHT_BYTES_MAX) {
        if shared.stop.load(Ordering::SeqCst) {
            return Err(End::Stopping);
        }
        if conn.broken.load(Ordering::SeqCst) {
            return Err(End::Protocol("a reply could not be sent".to_string()));
        }
        inflight = conn.inflight_cv.wait_timeout(inflight, POLL).unwrap_or_else(|e| e.into_inner()).0;
    }
    inflight.0 += 1;
    inflight.1 += bytes;
    Ok(())
}

fn release(conn: &Conn, bytes: u64) {
    let mut inflight = lock(&conn.inflight);
    inflight.0 = inflight.0.saturating_sub(1);
    inflight.1 = inflight.1.saturating_sub(bytes);
    conn.inflight_cv.notify_all();
}

/// Replies with an error at once (the request never reached the model).
fn send_error(shared: &Shared, conn: &Conn, handle: u64, code: u32) -> Result<(), End> {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    shared.stats.errors.fetch_add(1, Ordering::Relaxed);
    lock(&conn.writer).write_all(&simple_reply(code, handle))?;
    Ok(())
}

/// Times `op` on the device model and completes it now or when due.
fn schedule(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    req: Request,
    payload: Vec<u8>,
    op: DeviceOp,
    cost_bytes: u64,
) -> Result<(), End> {
    let now_ns = shared.clock.now_ns();
    let (outcome, fua) = {
        let mut device = lock(&shared.device);
        let outcome = device.submit(op, now_ns);
        let durable = req.flags & CMD_FLAG_FUA != 0 && matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES);
        (outcome, durable.then(|| device.submit(DeviceOp::flush(), now_ns)))
    };
    let due_ns = outcome.complete_ns.max(fua.map_or(0, |f| f.complete_ns));
    let job = Job {
        due_ns,
        seq: shared.seq.fetch_add(1, Ordering::Relaxed),
        conn: conn.clone(),
        req,
        payload,
        outcome,
        fua,
        cost_bytes,
    };
    if due_ns <= shared.clock.now_ns() {
        complete(shared, job);
    } else {
        lock(&shared.queue).push(Reverse(job));
        shared.queue_cv.notify_one();
    }
    Ok(())
}

/// Pool thread: completes queued jobs as they fall due.
fn completion_worker(shared: &Shared) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let now_ns = shared.clock.now_ns();
                match queue.peek() {
                    Some(Reverse(j)) if j.due_ns <= now_ns => break queue.pop().map(|Reverse(j)| j),
                    Some(Reverse(j)) => {
                        let wait = Duration::from_nanos(j.due_ns - now_ns).min(POLL);
                        queue = shared.queue_cv.wait_timeout(queue, wait).unwrap_or_else(|e| e.into_inner()).0;
                    }
                    None => {
                        queue = shared.queue_cv.wait_timeout(queue, POLL).unwrap_or_else(|e| e.into_inner()).0;
                    }
                }
            }
        };
        if let Some(job) = job {
            complete(shared, job);
        }
    }
}

/// Moves the bytes of a due job (if the model let it succeed) and replies.
fn complete(shared: &Shared, job: Job) {
    let Job { conn, req, payload, outcome, fua, cost_bytes, .. } = job;
    let len = u64::from(req.len);
    let durable = fua.is_some();
    let model_result = outcome.result.and(fua.map_or(Ok(()), |f| f.result));
    let store = &shared.store;
    let mut data = Vec::new();
    let result: Result<(), u32> = match model_result {
        Err(e) => Err(error_from_errno(e.errno())),
        Ok(()) => {
            let io = match req.kind {
                CMD_READ => {
                    data = vec![0u8; req.len as usize];
                    store.read(req.offset, &mut data).map(|()| {
                        if let Some(c) = outcome.corruption {
                            c.apply(&mut data);
                        }
                    })
                }
                CMD_WRITE => store.write(req.offset, &payload, durable),
                CMD_FLUSH => store.flush(),
                CMD_TRIM => store.trim(req.offset, len),
                CMD_WRITE_ZEROES => store.write_zeroes(req.offset, len, durable),
                _ => Ok(()),
            };
            io.map_err(|e| error_from_errno(e.raw_os_error().unwrap_or(libc::EIO)))
        }
    };
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let sent = {
        let mut w = lock(&conn.writer);
        match result {
            Ok(()) => {
                let head = simple_reply(0, req.handle);
                if req.kind == CMD_READ {
                    shared.stats.read_bytes.fetch_add(len, Ordering::Relaxed);
                    w.write_all(&head).and_then(|()| w.write_all(&data))
                } else {
                    w.write_all(&head)
                }
            }
            Err(code) => {
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                w.write_all(&simple_reply(code, req.handle))
            }
        }
    };
    if sent.is_err() {
        conn.broken.store(true, Ordering::SeqCst);
        let _ = lock(&conn.writer).shutdown(Shutdown::Both);
    }
    release(&conn, cost_bytes);
}
