//! One worker's NBD connection as a [`Queue`]: requests are written on
//! submission (pipelined, NBD handles chosen by the queue), and a reader
//! thread turns replies into completions as they arrive, in whatever order
//! the server sends them.
//!
//! The reader thread is what keeps a deep queue from deadlocking: a server
//! that is blocked sending replies stops reading requests, so replies must be
//! drained while the submitting thread may be blocked writing a payload.
//! Read buffers travel with the request to the reader thread; write buffers
//! stay with the queue (the data was sent at submission) and rejoin their
//! completion in `reap`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mlpdrive_emu::nbd::protocol::{
    CMD_DISC, CMD_FLUSH, CMD_READ, CMD_WRITE, Request, SIMPLE_REPLY_LEN, parse_simple_reply,
};

use super::ExportInfo;
use crate::buf::AlignedBuf;
use crate::io::plan_extent_span;
use crate::target::extents::{Extent, ExtentTable};
use crate::target::{Completion, IoMode, ObjectHandle, Op, Queue, QueueFull, TargetError};

/// A request on the wire, waiting for its reply.
struct Pending {
    tag: u64,
    op: Op,
    /// Read buffers only (see the module docs).
    buf: Option<AlignedBuf>,
    /// Bytes of payload a successful read reply carries.
    reply_len: usize,
    data_start: usize,
    /// The completion's byte count on success.
    ok_len: u32,
    submitted: Instant,
    name: Arc<str>,
}

enum Event {
    Done { handle: u64, completion: Completion },
    Lost(String),
}

type PendingMap = Arc<Mutex<HashMap<u64, Pending>>>;

pub struct NbdQueue {
    writer: TcpStream,
    depth: usize,
    in_flight: usize,
    pending: PendingMap,
    write_bufs: HashMap<u64, AlignedBuf>,
    rx: Receiver<Event>,
    reader: Option<JoinHandle<()>>,
    /// Completions decided at submission (refused before reaching the wire).
    ready: Vec<Completion>,
    extents: Arc<ExtentTable>,
    resolved: HashMap<ObjectHandle, Extent>,
    next_handle: u64,
    align: u64,
    max_payload: u32,
    can_flush: bool,
    location: String,
    lost: Option<String>,
}

impl NbdQueue {
    pub fn new(
        stream: TcpStream,
        depth: usize,
        extents: Arc<ExtentTable>,
        export: &ExportInfo,
        align: usize,
        location: &str,
    ) -> std::io::Result<NbdQueue> {
        let pending: PendingMap = Arc::default();
        let (tx, rx) = mpsc::channel();
        let reader = {
            let (s, pending) = (stream.try_clone()?, pending.clone());
            std::thread::Builder::new().name("nbd-replies".into()).spawn(move || read_replies(s, &pending, &tx))?
        };
        Ok(NbdQueue {
            writer: stream,
            depth,
            in_flight: 0,
            pending,
            write_bufs: HashMap::new(),
            rx,
            reader: Some(reader),
            ready: Vec::new(),
            extents,
            resolved: HashMap::new(),
            next_handle: 1,
            align: align as u64,
            max_payload: export.max_payload,
            can_flush: export.can_flush(),
            location: location.to_string(),
            lost: None,
        })
    }

    fn refuse(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>, e: TargetError) {
        let now = Instant::now();
        self.ready.push(Completion { tag, op, result: Err(e), buf, data_start: 0, submitted: now, completed: now });
    }

    fn extent(&mut self, h: ObjectHandle) -> Option<Extent> {
        if let Some(e) = self.resolved.get(&h) {
            return Some(e.clone());
        }
        let e = self.extents.get(h)?;
        self.resolved.insert(h, e.clone());
        Some(e)
    }

    fn lost_error(&self) -> TargetError {
        TargetError::namespace(format!(
            "{}: NBD connection lost: {}",
            self.location,
            self.lost.as_deref().unwrap_or("the reply reader stopped")
        ))
    }

    /// Sends a request (and a write's payload). A failure is remembered
    /// and reported by `reap` (the op's reply will never come).
    fn send(&mut self, req: &Request, payload: Option<&[u8]>) {
        let result = self.writer.write_all(&req.encode()).and_then(|()| match payload {
            Some(p) => self.writer.write_all(p),
            None => Ok(()),
        });
        if let Err(e) = result {
            self.lost.get_or_insert_with(|| format!("sending a request: {e}"));
            // Wake the reader thread too: it reports the loss to `reap`.
            let _ = self.writer.shutdown(Shutdown::Both);
        }
    }

    fn handle_event(&mut self, ev: Event, out: &mut Vec<Completion>) -> Result<(), TargetError> {
        match ev {
            Event::Done { handle, mut completion } => {
                if let Some(b) = self.write_bufs.remove(&handle) {
                    completion.buf = Some(b);
                }
                self.in_flight -= 1;
                out.push(completion);
                Ok(())
            }
            Event::Lost(why) => {
                self.lost.get_or_insert(why);
                Err(self.lost_error())
            }
        }
    }
}

/// The reader thread: replies → completions, until the socket closes.
fn read_replies(mut s: TcpStream, pending: &Mutex<HashMap<u64, Pending>>, tx: &Sender<Event>) {
    let lost = |why: String| {
        let _ = tx.send(Event::Lost(why));
    };
    loop {
        let mut head = [0u8; SIMPLE_REPLY_LEN];
        if let Err(e) = s.read_exact(&mut head) {
            return lost(format!("reading a reply: {e}"));
        }
        let Some((error, handle)) = parse_simple_reply(&head) else {
            return lost("the server sent something other than a simple reply".to_string());
        };
        let Some(p) = pending.lock().expect("nbd pending poisoned").remove(&handle) else {
            return lost(format!("the server replied to handle {handle}, which is not in flight"));
        };
        let Pending { tag, op, mut buf, reply_len, data_start, ok_len, submitted, name } = p;
        let (what, offset) = match op {
            Op::Read { offset, .. } => ("read", offset),
            Op::Write { offset, .. } => ("write", offset),
            Op::Commit { size, .. } => ("flush", size),
        };
        let result = if error != 0 {
            // NBD error values are the Linux errno values of the same name.
            Err(TargetError::io(what, name.to_string(), offset, error as i32))
        } else {
            if reply_len > 0 {
                let b = buf.as_mut().expect("read carries a buffer");
                if let Err(e) = s.read_exact(&mut b.as_mut_slice()[..reply_len]) {
                    return lost(format!("reading {reply_len} bytes of read data: {e}"));
                }
            }
            Ok(ok_len)
        };
        let completion = Completion { tag, op, result, buf, data_start, submitted, completed: Instant::now() };
        if tx.send(Event::Done { handle, completion }).is_err() {
            return;
        }
    }
}

impl Queue for NbdQueue {
    fn depth(&self) -> usize {
        self.depth
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn submit(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>) -> Result<(), QueueFull> {
        if self.in_flight >= self.depth {
            return Err(QueueFull { op, buf });
        }
        self.in_flight += 1;
        if self.lost.is_some() {
            let e = self.lost_error();
            self.refuse(tag, op, buf, e);
            return Ok(());
        }
        let Some(extent) = self.extent(op.obj()) else {
            let e = TargetError::namespace(format!("unknown object handle {}", op.obj().0));
            self.refuse(tag, op, buf, e);
            return Ok(());
        };
        let handle = self.next_handle;
        self.next_handle += 1;
        let submitted = Instant::now();
        let pending = |buf, reply_len, data_start, ok_len| Pending {
            tag,
            op,
            buf,
            reply_len,
            data_start,
            ok_len,
            submitted,
            name: extent.name.clone(),
        };
        match op {
            Op::Commit { obj, size } => {
                if let Err(e) = self.extents.set_logical_size(obj, size) {
                    self.refuse(tag, op, buf, e);
                    return Ok(());
                }
                if !self.can_flush {
                    // Nothing to make durable with: complete at once (the
                    // queue's io_mode note says commits are not durable).
                    self.ready.push(Completion {
                        tag,
                        op,
                        result: Ok(0),
                        buf,
                        data_start: 0,
                        submitted,
                        completed: Instant::now(),
                    });
                    return Ok(());
                }
                self.pending.lock().expect("nbd pending poisoned").insert(handle, pending(buf, 0, 0, 0));
                let req = Request { flags: 0, kind: CMD_FLUSH, handle, offset: 0, len: 0 };
                self.send(&req, None);
            }
            Op::Read { .. } | Op::Write { .. } => {
                let cap = buf.as_ref().map_or(0, AlignedBuf::capacity);
                let span = match plan_extent_span(&op, extent.base, Some(extent.limit), &extent.name, self.align, cap) {
                    Ok(s) => s,
                    Err(e) => {
                        self.refuse(tag, op, buf, e);
                        return Ok(());
                    }
                };
                if span.len > self.max_payload as usize {
                    let e = TargetError::namespace(format!(
                        "{} of {} bytes: the export accepts requests of at most {} bytes",
                        op.kind().as_str(),
                        span.len,
                        self.max_payload
                    ));
                    self.refuse(tag, op, buf, e);
                    return Ok(());
                }
                let len = span.len as u32;
                if matches!(op, Op::Read { .. }) {
                    self.pending
                        .lock()
                        .expect("nbd pending poisoned")
                        .insert(handle, pending(buf, span.len, span.data_start, span.requested));
                    let req = Request { flags: 0, kind: CMD_READ, handle, offset: span.fd_offset, len };
                    self.send(&req, None);
                } else {
                    let b = buf.expect("write carries a buffer");
                    self.pending
                        .lock()
                        .expect("nbd pending poisoned")
                        .insert(handle, pending(None, 0, 0, span.requested));
                    let req = Request { flags: 0, kind: CMD_WRITE, handle, offset: span.fd_offset, len };
                    self.send(&req, Some(&b.as_slice()[..span.len]));
                    self.write_bufs.insert(handle, b);
                }
            }
        }
        Ok(())
    }

    fn reap(
        &mut self,
        min_complete: usize,
        timeout: Duration,
        out: &mut Vec<Completion>,
    ) -> Result<usize, TargetError> {
        let before = out.len();
        self.in_flight -= self.ready.len();
        out.append(&mut self.ready);
        let deadline = Instant::now() + timeout;
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(ev) => self.handle_event(ev, out)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(self.lost_error()),
                }
            }
            if out.len() - before >= min_complete || self.in_flight == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(ev) => self.handle_event(ev, out)?,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Err(self.lost_error()),
            }
        }
        Ok(out.len() - before)
    }

    fn io_mode(&self) -> IoMode {
        let mut note = "nbd:// target: pipelined NBD requests (simple replies), one TCP connection per job".to_string();
        if !self.can_flush {
            note.push_str("; the server does not support flush, so commits are NOT durable");
        }
        IoMode { direct: false, engine: "nbd".into(), registered_buffers: false, note: Some(note) }
    }
}

impl Drop for NbdQueue {
    fn drop(&mut self) {
        if self.lost.is_none() && self.in_flight == 0 {
            // A soft disconnect; the server closes its end.
            let req = Request { flags: 0, kind: CMD_DISC, handle: 0, offset: 0, len: 0 };
            let _ = self.writer.write_all(&req.encode());
        }
        let _ = self.writer.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
