//! The NBD wire format: constants, fixed-size messages and their parsing.
//!
//! Only what the server (and the driver's `nbd://` client) speak is here:
//! the fixed newstyle handshake, option haggling with `NBD_OPT_EXPORT_NAME`,
//! `NBD_OPT_INFO`, `NBD_OPT_GO`, `NBD_OPT_LIST` and `NBD_OPT_ABORT`, and the
//! transmission phase with simple replies. Everything is big-endian. Parsing
//! never trusts a length field: option payloads and request lengths are
//! checked against explicit limits before anything is allocated.
//!
//! Reference: the protocol document of the NBD project (`doc/proto.md`).

/// The server's first 8 bytes: `NBDMAGIC`.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// Newstyle negotiation marker (`IHAVEOPT`); also the magic of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag (server): fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag (server): the client may ask for no 124 zero bytes.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: fixed newstyle understood.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: skip the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag: the flags field is valid.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: several connections see one consistent export.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Option: enter transmission (old way; no error reply possible).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: list exports.
pub const OPT_LIST: u32 = 3;
/// Option: TLS (not supported here).
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: structured replies (not supported here).
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: one export (`NBD_OPT_LIST`).
pub const REP_SERVER: u32 = 2;
/// Option reply: one piece of export information.
pub const REP_INFO: u32 = 3;
/// Option reply error bit.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// Option reply: unknown option.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// Option reply: refused by policy.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
/// Option reply: malformed option.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
/// Option reply: no such export.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
/// Option reply: option payload too large.
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

/// Info type: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Info type: the export's name.
pub const INFO_NAME: u16 = 1;
/// Info type: a human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Info type: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (a payload follows the request).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect (no reply).
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim.
pub const CMD_TRIM: u16 = 4;
/// Command: write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flag: force unit access (reply only once durable).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag: write zeroes without punching a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Error: operation not permitted (writes to a read-only export).
pub const EPERM: u32 = 1;
/// Error: I/O error.
pub const EIO: u32 = 5;
/// Error: out of memory (a request larger than the server accepts).
pub const ENOMEM: u32 = 12;
/// Error: invalid argument (bad range, unknown command or flag).
pub const EINVAL: u32 = 22;
/// Error: no space (a write beyond the end of the export).
pub const ENOSPC: u32 = 28;
/// Error: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// Longest option payload the server reads; anything longer is refused
/// and the connection closed (real options are a few hundred bytes).
pub const OPTION_LEN_MAX: u32 = 64 * 1024;
/// Longest export name or description (the protocol's string limit).
pub const STRING_LEN_MAX: usize = 4096;
/// Largest read or write payload served (the protocol's default maximum).
pub const PAYLOAD_LEN_MAX: u32 = 32 << 20;

/// Size of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;

/// The NBD error code for an errno (NBD allows a small set only).
pub fn error_from_errno(errno: i32) -> u32 {
    match errno {
        libc::EPERM | libc::EROFS => EPERM,
        libc::ENOMEM => ENOMEM,
        libc::EINVAL => EINVAL,
        libc::ENOSPC | libc::EFBIG | libc::EDQUOT => ENOSPC,
        libc::ESHUTDOWN => ESHUTDOWN,
        _ => EIO,
    }
}

/// One transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`CMD_*`).
    pub kind: u16,
    /// The client's cookie, echoed in the reply.
    pub handle: u64,
    /// First byte.
    pub offset: u64,
    /// Bytes (for a write, the payload that follows).
    pub len: u32,
}

impl Request {
    /// Parses a header; `None` if the magic is wrong (the stream cannot be
    /// trusted any more).
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Option<Request> {
        if be32(&b[0..4]) != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: be16(&b[4..6]),
            kind: be16(&b[6..8]),
            handle: be64(&b[8..16]),
            offset: be64(&b[16..24]),
            len: be32(&b[24..28]),
        })
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.handle.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// A simple reply header: `error` is 0 on success.
pub fn simple_reply(error: u32, handle: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b
}

/// Parses a simple reply header into `(error, handle)`; `None` if the magic
/// is wrong (a structured reply or garbage).
pub fn parse_simple_reply(b: &[u8; SIMPLE_REPLY_LEN]) -> Option<(u32, u64)> {
    (be32(&b[0..4]) == SIMPLE_REPLY_MAGIC).then(|| (be32(&b[4..8]), be64(&b[8..16])))
}

/// An option reply: header plus payload.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// An option reply header as received: `(option, reply type, payload length)`.
pub fn parse_option_reply_header(b: &[u8; 20]) -> Option<(u32, u32, u32)> {
    (be64(&b[0..8]) == OPTION_REPLY_MAGIC).then(|| (be32(&b[8..12]), be32(&b[12..16]), be32(&b[16..20])))
}

/// The payload of `NBD_OPT_INFO` / `NBD_OPT_GO`: an export name and the
/// information types the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// Export name (may be empty: the default export).
    pub name: Vec<u8>,
    /// Requested `INFO_*` types.
    pub requests: Vec<u16>,
}

impl InfoRequest {
    /// Parses the payload; `None` if the lengths inside do not add up.
    pub fn parse(data: &[u8]) -> Option<InfoRequest> {
        let name_len = usize::try_from(be32(data.get(0..4)?)).ok()?;
        if name_len > STRING_LEN_MAX {
            return None;
        }
        let name_end = 4usize.checked_add(name_len)?;
        let name = data.get(4..name_end)?.to_vec();
        let count = usize::from(be16(data.get(name_end..name_end + 2)?));
        let list = data.get(name_end + 2..)?;
        if list.len() != count * 2 {
            return None;
        }
        let requests = list.chunks_exact(2).map(be16).collect();
        Some(InfoRequest { name, requests })
    }

    /// The payload's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(6 + self.name.len() + 2 * self.requests.len());
        b.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.name);
        b.extend_from_slice(&(self.requests.len() as u16).to_be_bytes());
        for r in &self.requests {
            b.extend_from_slice(&r.to_be_bytes());
        }
        b
    }
}

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub fn info_export(size_bytes: u64, flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    b.extend_from_slice(&size_bytes.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum block sizes.
pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    for v in [min, preferred, max] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

/// `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`: a string.
pub fn info_string(kind: u16, text: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + text.len());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(text);
    b
}

/// What a client learns from an `NBD_REP_INFO` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    /// Size in bytes and transmission flags.
    Export {
        /// Export size.
        size_bytes: u64,
        /// `FLAG_*` transmission flags.
        flags: u16,
    },
    /// Block size constraints.
    BlockSize {
        /// Smallest request granularity.
        min: u32,
        /// Preferred request size.
        preferred: u32,
        /// Largest request payload.
        max: u32,
    },
    /// The export's description.
    Description(String),
    /// Anything else (ignored).
    Other(u16),
}

/// Parses an `NBD_REP_INFO` payload; `None` if it is malformed.
pub fn parse_info(data: &[u8]) -> Option<Info> {
    let kind = be16(data.get(0..2)?);
    let rest = &data[2..];
    Some(match kind {
        INFO_EXPORT if rest.len() == 10 => Info::Export { size_bytes: be64(&rest[0..8]), flags: be16(&rest[8..10]) },
        INFO_BLOCK_SIZE if rest.len() == 12 => {
            Info::BlockSize { min: be32(&rest[0..4]), preferred: be32(&rest[4..8]), max: be32(&rest[8..12]) }
        }
        INFO_EXPORT | INFO_BLOCK_SIZE => return None,
        INFO_DESCRIPTION => Info::Description(String::from_utf8_lossy(rest).into_owned()),
        other => Info::Other(other),
    })
}

/// Big-endian u16 from exactly 2 bytes.
pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Big-endian u32 from exactly 4 bytes.
pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Big-endian u64 from exactly 8 bytes.
pub fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_checks_magic() {
        let r = Request { flags: CMD_FLAG_FUA, kind: CMD_WRITE, handle: 0xdead_beef, offset: 1 << 40, len: 4096 };
        let b = r.encode();
        assert_eq!(&b[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(Request::parse(&b), Some(r));
        let mut bad = b;
        bad[0] ^= 1;
        assert_eq!(Request::parse(&bad), None);
    }

    #[test]
    fn simple_reply_round_trips() {
        let b = simple_reply(EIO, 7);
        assert_eq!(parse_simple_reply(&b), Some((EIO, 7)));
        let mut bad = b;
        bad[3] = 0;
        assert_eq!(parse_simple_reply(&bad), None);
    }

    #[test]
    fn info_request_parsing_checks_every_length() {
        let req = InfoRequest { name: b"exp".to_vec(), requests: vec![INFO_BLOCK_SIZE, INFO_NAME] };
        let b = req.encode();
        assert_eq!(InfoRequest::parse(&b), Some(req));
        // Truncated anywhere, or with trailing bytes: refused.
        for cut in 0..b.len() {
            assert_eq!(InfoRequest::parse(&b[..cut]), None, "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(InfoRequest::parse(&long), None);
        // A name length that points past the end (or is huge): refused.
        let mut huge = b.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(InfoRequest::parse(&huge), None);
    }

    #[test]
    fn info_payloads_parse_back() {
        assert_eq!(parse_info(&info_export(1 << 30, 3)), Some(Info::Export { size_bytes: 1 << 30, flags: 3 }));
        assert_eq!(
            parse_info(&info_block_size(1, 4096, PAYLOAD_LEN_MAX)),
            Some(Info::BlockSize { min: 1, preferred: 4096, max: PAYLOAD_LEN_MAX })
        );
        assert_eq!(parse_info(&info_string(INFO_DESCRIPTION, b"hi")), Some(Info::Description("hi".into())));
        assert_eq!(parse_info(&info_export(1, 1)[..5]), None);
        assert_eq!(parse_info(&[0]), None);
    }

    #[test]
    fn errnos_map_to_the_protocols_small_set() {
        assert_eq!(error_from_errno(libc::EIO), EIO);
        assert_eq!(error_from_errno(libc::ETIMEDOUT), EIO);
        assert_eq!(error_from_errno(libc::EFBIG), ENOSPC);
        assert_eq!(error_from_errno(libc::EINVAL), EINVAL);
        assert_eq!(error_from_errno(libc::EROFS), EPERM);
    }
}
