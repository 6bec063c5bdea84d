//! A file as a list of segments, streamed front to back.

use crate::datagen::{self, Expect, Verifier, VerifyOutcome};

/// Checksums a container needs over some of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcKind {
    /// CRC-32 (zip members), little-endian.
    Crc32,
    /// TFRecord's masked CRC-32C, little-endian.
    MaskedCrc32c,
}

/// One piece of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// Container bytes known in advance.
    Lit(Vec<u8>),
    /// The next `n` bytes of the file's generated payload stream.
    Payload(u64),
    /// Start a checksum over the bytes emitted from here (0 bytes).
    CrcBegin(CrcKind),
    /// End the running checksum and remember it (0 bytes).
    CrcEnd,
    /// Emit the last remembered checksum (4 bytes).
    CrcLast,
    /// Emit a remembered checksum again (4 bytes): the n-th `CrcEnd`.
    CrcAgain(usize),
}

impl Seg {
    /// Bytes this segment contributes to the file.
    pub fn byte_len(&self) -> u64 {
        match self {
            Seg::Lit(b) => b.len() as u64,
            Seg::Payload(n) => *n,
            Seg::CrcBegin(_) | Seg::CrcEnd => 0,
            Seg::CrcLast | Seg::CrcAgain(_) => 4,
        }
    }
}

/// Where a run of payload bytes sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadRun {
    pub file_offset: u64,
    pub len: u64,
    /// Offset in the generator stream of the file's object key.
    pub stream_offset: u64,
}

/// A file's bytes: segments, size, and where the payload lies.
#[derive(Debug, Clone)]
pub struct Layout {
    pub segs: Vec<Seg>,
    pub len: u64,
    pub payload: Vec<PayloadRun>,
    pub seed: u64,
    /// Data generator object key (of the file's object name).
    pub key: u64,
    /// Samples in the file; sample `s` is payload bytes
    /// `[s × per_sample, (s + 1) × per_sample)`.
    pub samples: u64,
    /// File offsets just after each `CrcLast` (TFRecord: record ends).
    pub crc_ends: Vec<u64>,
}

impl Layout {
    pub fn new(segs: Vec<Seg>, seed: u64, key: u64, samples: u64) -> Layout {
        let mut len = 0;
        let mut stream = 0;
        let mut payload = Vec::new();
        let mut crc_ends = Vec::new();
        for s in &segs {
            if let Seg::Payload(n) = s {
                payload.push(PayloadRun { file_offset: len, len: *n, stream_offset: stream });
                stream += n;
            }
            len += s.byte_len();
            if matches!(s, Seg::CrcLast) {
                crc_ends.push(len);
            }
        }
        Layout { segs, len, payload, seed, key, samples, crc_ends }
    }

    /// Payload bytes in the file.
    pub fn payload_bytes(&self) -> u64 {
        self.payload.iter().map(|p| p.len).sum()
    }

    /// Byte range of sample `s` in the file: its whole record for TFRecord
    /// (one record per sample), the whole file for whole-file formats
    /// (DLIO reads the file once for all its samples).
    pub fn sample_range(&self, s: u64) -> (u64, u64) {
        if self.samples > 1 && self.crc_ends.len() as u64 == self.samples {
            let start = if s == 0 { 0 } else { self.crc_ends[s as usize - 1] };
            (start, self.crc_ends[s as usize])
        } else {
            (0, self.len)
        }
    }

    /// Verifies bytes read at `offset`: payload bytes against the data
    /// generator by `policy` (full: whole 4 KiB generator blocks by their
    /// checksum, partial ones by regeneration); container bytes (headers,
    /// lengths, CRC fields) are counted as unverified.
    pub fn verify(&self, data: &[u8], offset: u64, policy: &Verifier) -> VerifyOutcome {
        let mut out = VerifyOutcome::default();
        let end = offset + data.len() as u64;
        let expect = Expect { seed: self.seed, object: self.key, generation: Some(0) };
        let first = self.payload.partition_point(|p| p.file_offset + p.len <= offset);
        let mut covered = 0;
        for run in &self.payload[first..] {
            if run.file_offset >= end {
                break;
            }
            let lo = run.file_offset.max(offset);
            let hi = (run.file_offset + run.len).min(end);
            let part = &data[(lo - offset) as usize..(hi - offset) as usize];
            out.merge(&policy.verify(part, run.stream_offset + (lo - run.file_offset), &expect));
            covered += hi - lo;
        }
        out.unverified_bytes += data.len() as u64 - covered;
        out
    }
}

/// Running checksum state.
enum Running {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
}

/// TFRecord's CRC mask.
pub fn mask_crc32c(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Streams a layout's bytes front to back.
pub struct Composer {
    layout: Layout,
    seg: usize,
    /// Bytes of the current segment already emitted.
    within: u64,
    stream: u64,
    pos: u64,
    running: Option<(CrcKind, Running)>,
    done_crcs: Vec<u32>,
}

impl Composer {
    pub fn new(layout: Layout) -> Composer {
        Composer { layout, seg: 0, within: 0, stream: 0, pos: 0, running: None, done_crcs: Vec::new() }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// File offset of the next byte to emit.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Emits the next `dst.len()` bytes of the file (fewer at its end;
    /// returns how many).
    pub fn emit(&mut self, dst: &mut [u8]) -> usize {
        let mut at = 0;
        while at < dst.len() && self.seg < self.layout.segs.len() {
            let seg = &self.layout.segs[self.seg];
            let left = seg.byte_len() - self.within;
            let n = left.min((dst.len() - at) as u64) as usize;
            let out = &mut dst[at..at + n];
            match seg {
                Seg::Lit(b) => out.copy_from_slice(&b[self.within as usize..self.within as usize + n]),
                Seg::Payload(_) => {
                    datagen::fill(out, self.layout.seed, self.layout.key, 0, self.stream);
                    self.stream += n as u64;
                }
                Seg::CrcBegin(kind) => {
                    let r = match kind {
                        CrcKind::Crc32 => Running::Crc32(crc32fast::Hasher::new()),
                        CrcKind::MaskedCrc32c => Running::Crc32c(0),
                    };
                    self.running = Some((*kind, r));
                }
                Seg::CrcEnd => {
                    let v = match self.running.take() {
                        Some((_, Running::Crc32(h))) => h.finalize(),
                        Some((_, Running::Crc32c(c))) => mask_crc32c(c),
                        None => 0,
                    };
                    self.done_crcs.push(v);
                }
                Seg::CrcLast => {
                    let v = *self.done_crcs.last().expect("a finished checksum");
                    out.copy_from_slice(&v.to_le_bytes()[self.within as usize..self.within as usize + n]);
                }
                Seg::CrcAgain(i) => {
                    let v = self.done_crcs.get(*i).copied().unwrap_or(0);
                    out.copy_from_slice(&v.to_le_bytes()[self.within as usize..self.within as usize + n]);
                }
            }
            if matches!(seg, Seg::Lit(_) | Seg::Payload(_)) {
                match &mut self.running {
                    Some((_, Running::Crc32(h))) => h.update(out),
                    Some((_, Running::Crc32c(c))) => *c = crc32c::crc32c_append(*c, out),
                    None => {}
                }
            }
            at += n;
            self.within += n as u64;
            self.pos += n as u64;
            if self.within == seg.byte_len() {
                self.seg += 1;
                self.within = 0;
            }
        }
        at
    }
}
