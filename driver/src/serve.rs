//! `mlpdrive emu serve --nbd ADDR:PORT`: the device model behind an NBD
//! server (the server itself is `mlpdrive_emu::nbd`). Everything is checked
//! before the socket is bound: the profile, the size, the backing. Prints
//! the listening address and the seed, serves until Ctrl-C, then prints
//! what it served. docs/nbd.md is the user's page.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mlpdrive_emu::nbd::{DESCRIPTION_PREFIX, ExportConfig, FileStore, MemStore, Server, Store};
use mlpdrive_emu::{Capacity, Device, Profile};

use crate::cli::ServeArgs;
use crate::error::{EXIT_OK, Error};

/// Runs the server until Ctrl-C (or SIGTERM).
pub fn serve(args: &ServeArgs) -> Result<i32, Error> {
    let profile = Profile::load(&args.profile).map_err(|e| Error::usage(format!("--profile {}: {e}", args.profile)))?;
    let size_bytes = match &args.size {
        Some(s) => {
            let b = crate::units::parse_bytes(s).map_err(|e| Error::usage(format!("--size {s}: {e}")))?;
            if b == 0 {
                return Err(Error::usage(format!("--size {s}: the export needs at least one byte")));
            }
            Some(b)
        }
        None => None,
    };
    if args.export_name.len() > mlpdrive_emu::nbd::protocol::STRING_LEN_MAX || args.export_name.contains('\0') {
        return Err(Error::usage("--export-name: at most 4096 bytes and no NUL bytes (the NBD string rules)"));
    }
    if args.completion_threads == 0 || args.completion_threads > 256 {
        return Err(Error::usage("--completion-threads: use a number from 1 to 256"));
    }
    let (store, size_bytes): (Box<dyn Store>, u64) = if args.backing == "mem" {
        let Some(size) = size_bytes else {
            return Err(Error::usage("--backing mem needs --size (e.g. --size 1GiB)"));
        };
        (Box::new(MemStore::new()), size)
    } else {
        let (store, size) = FileStore::open(Path::new(&args.backing), size_bytes, args.allow_raw_device)
            .map_err(|e| Error::usage(format!("--backing: {e}")))?;
        (Box::new(store), size)
    };
    if let Some(cap) = profile.capacity.bytes()
        && size_bytes > cap
    {
        eprintln!(
            "mlpdrive: note: --size {size_bytes} is larger than profile {}'s capacity ({cap} bytes); the export uses \
             --size",
            args.profile
        );
    }
    let device = Device::new(&profile, args.seed).with_capacity(Capacity::Bytes(size_bytes));
    let backing = store.describe();
    let description = format!("{DESCRIPTION_PREFIX}: profile {}, backing {backing}, seed {}", args.profile, args.seed);
    let cfg = ExportConfig {
        name: args.export_name.clone(),
        size_bytes,
        read_only: args.read_only,
        description,
        completion_threads: args.completion_threads,
    };
    let server = Server::bind(args.nbd.as_str(), cfg, store, device).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::InvalidInput {
            "; write ADDR:PORT, e.g. 127.0.0.1:10809 (port 0 picks a free port)"
        } else {
            ""
        };
        Error::usage(format!("--nbd {}: cannot listen: {e}{hint}", args.nbd))
    })?;
    let addr = server.local_addr().map_err(|e| Error::failed(format!("cannot read the listening address: {e}")))?;

    let stop = Arc::new(AtomicBool::new(false));
    crate::signal::install(&stop);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "mlpdrive: NBD export `{}`: {size_bytes} bytes, profile {}, backing {backing}, seed {}{}",
        args.export_name,
        args.profile,
        args.seed,
        if args.read_only { ", read-only" } else { "" }
    );
    let _ = writeln!(out, "mlpdrive: listening on nbd://{addr}/{} (Ctrl-C stops)", args.export_name);
    let _ = out.flush();
    drop(out);

    let quiet = args.quiet;
    let log: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |line: String| {
        if !quiet {
            eprintln!("mlpdrive: {line}");
        }
    });
    server.run(&stop, log).map_err(|e| Error::failed(format!("NBD server failed: {e}")))?;
    let st = server.stats();
    println!(
        "mlpdrive: stopped; {} connections, {} requests ({} errors), {} bytes read, {} bytes written",
        st.connections.load(Ordering::Relaxed),
        st.requests.load(Ordering::Relaxed),
        st.errors.load(Ordering::Relaxed),
        st.read_bytes.load(Ordering::Relaxed),
        st.written_bytes.load(Ordering::Relaxed),
    );
    Ok(EXIT_OK)
}
