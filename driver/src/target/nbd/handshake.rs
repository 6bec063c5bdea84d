//! The client side of the NBD handshake: fixed newstyle, `NBD_OPT_GO` (with
//! a fallback to `NBD_OPT_EXPORT_NAME` for servers without it), simple
//! replies only. Every length the server sends is bounded before use.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use mlpdrive_emu::nbd::protocol::*;

/// How long connecting and negotiating may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest option reply payload accepted from a server.
const OPTION_REPLY_MAX: u32 = 64 * 1024;

/// What the server told us about the export.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    pub size_bytes: u64,
    /// Transmission flags (`FLAG_*`).
    pub flags: u16,
    /// Smallest I/O granularity (1 if the server did not say).
    pub min_block: u32,
    /// Largest request payload (32 MiB if the server did not say).
    pub max_payload: u32,
    /// `NBD_INFO_DESCRIPTION`, if sent.
    pub description: Option<String>,
}

impl ExportInfo {
    pub fn can_flush(&self) -> bool {
        self.flags & FLAG_SEND_FLUSH != 0
    }

    pub fn read_only(&self) -> bool {
        self.flags & FLAG_READ_ONLY != 0
    }
}

/// Connects to `host:port` and negotiates `export`; the stream is left in
/// the transmission phase (blocking, no read timeout).
pub fn connect(host: &str, port: u16, export: &str) -> Result<(TcpStream, ExportInfo), String> {
    let addrs: Vec<_> = (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    let mut last = format!("{host} has no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, HANDSHAKE_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| e.to_string())?;
    let info = negotiate(&mut s, export)?;
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((s, info))
}

fn read(s: &mut TcpStream, buf: &mut [u8], what: &str) -> Result<(), String> {
    s.read_exact(buf).map_err(|e| format!("handshake: reading {what}: {e}"))
}

fn negotiate(s: &mut TcpStream, export: &str) -> Result<ExportInfo, String> {
    let mut hello = [0u8; 18];
    read(s, &mut hello, "the server greeting")?;
    if be64(&hello[0..8]) != NBDMAGIC {
        return Err("not an NBD server (no NBDMAGIC greeting)".to_string());
    }
    if be64(&hello[8..16]) != IHAVEOPT {
        return Err("the server speaks the oldstyle NBD handshake, which mlpdrive does not support".to_string());
    }
    let server_flags = be16(&hello[16..18]);
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err("the server does not offer fixed newstyle negotiation".to_string());
    }
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let client_flags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
    let go = InfoRequest { name: export.as_bytes().to_vec(), requests: vec![INFO_BLOCK_SIZE, INFO_DESCRIPTION] };
    let mut out = client_flags.to_be_bytes().to_vec();
    out.extend(option(OPT_GO, &go.encode()));
    s.write_all(&out).map_err(|e| format!("handshake: {e}"))?;

    let mut info =
        ExportInfo { size_bytes: 0, flags: 0, min_block: 1, max_payload: PAYLOAD_LEN_MAX, description: None };
    let mut have_export = false;
    loop {
        let mut head = [0u8; 20];
        read(s, &mut head, "an option reply")?;
        let Some((opt, kind, len)) = parse_option_reply_header(&head) else {
            return Err("malformed option reply (bad magic)".to_string());
        };
        if len > OPTION_REPLY_MAX {
            return Err(format!("option reply of {len} bytes is larger than the {OPTION_REPLY_MAX} accepted"));
        }
        let mut data = vec![0u8; len as usize];
        read(s, &mut data, "an option reply payload")?;
        if opt != OPT_GO {
            return Err(format!("option reply for option {opt}, expected NBD_OPT_GO"));
        }
        match kind {
            REP_INFO => match parse_info(&data) {
                Some(Info::Export { size_bytes, flags }) => {
                    info.size_bytes = size_bytes;
                    info.flags = flags;
                    have_export = true;
                }
                Some(Info::BlockSize { min, max, .. }) => {
                    info.min_block = min.max(1);
                    info.max_payload = max.clamp(1, PAYLOAD_LEN_MAX);
                }
                Some(Info::Description(d)) => info.description = Some(d),
                Some(Info::Other(_)) => {}
                None => return Err("malformed NBD_REP_INFO".to_string()),
            },
            REP_ACK if have_export => return Ok(info),
            REP_ACK => return Err("the server acknowledged NBD_OPT_GO without sending the export size".to_string()),
            REP_ERR_UNSUP => return export_name(s, export, no_zeroes),
            REP_ERR_UNKNOWN => {
                return Err(format!(
                    "the server has no export named {export:?}{}",
                    message(&data).map(|m| format!(" ({m})")).unwrap_or_default()
                ));
            }
            other if other & REP_FLAG_ERROR != 0 => {
                return Err(format!(
                    "the server refused NBD_OPT_GO (reply {:#x}){}",
                    other,
                    message(&data).map(|m| format!(": {m}")).unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
}

/// The old way in, for servers without `NBD_OPT_GO`.
fn export_name(s: &mut TcpStream, export: &str, no_zeroes: bool) -> Result<ExportInfo, String> {
    s.write_all(&option(OPT_EXPORT_NAME, export.as_bytes())).map_err(|e| format!("handshake: {e}"))?;
    let mut head = vec![0u8; if no_zeroes { 10 } else { 134 }];
    read(s, &mut head, "the export size (the server may not have this export)")?;
    Ok(ExportInfo {
        size_bytes: be64(&head[0..8]),
        flags: be16(&head[8..10]),
        min_block: 1,
        max_payload: PAYLOAD_LEN_MAX,
        description: None,
    })
}

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

fn message(data: &[u8]) -> Option<String> {
    (!data.is_empty()).then(|| String::from_utf8_lossy(&data[..data.len().min(512)]).into_owned())
}
