//! s3s-fs over HTTP/1.1 on 127.0.0.1 for scripts/bench-s3.sh.
//!
//! Usage: `mlpdrive-s3-bench-server ROOT PORT_FILE [THREADS]`. Serves the
//! directory ROOT (a bucket is a subdirectory) with SigV4 authentication
//! for the access key and secret in `MLPDRIVE_BENCH_S3_ACCESS_KEY` and
//! `MLPDRIVE_BENCH_S3_SECRET_KEY`, on a port the kernel picks, which it
//! writes to PORT_FILE; runs until killed. THREADS (default 2) sizes the
//! tokio runtime.

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} ROOT PORT_FILE [THREADS]", args[0]);
        std::process::exit(2);
    }
    let threads: usize = args.get(3).map_or(2, |t| t.parse().expect("THREADS: a number"));
    let (Ok(access), Ok(secret)) =
        (std::env::var("MLPDRIVE_BENCH_S3_ACCESS_KEY"), std::env::var("MLPDRIVE_BENCH_S3_SECRET_KEY"))
    else {
        eprintln!("set MLPDRIVE_BENCH_S3_ACCESS_KEY and MLPDRIVE_BENCH_S3_SECRET_KEY");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    let fs = s3s_fs::FileSystem::new(&args[1]).expect("s3s-fs root");
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(access, secret));
    let service = b.build();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        std::fs::write(&args[2], port.to_string()).expect("write the port file");
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            // Without it, Nagle's algorithm holds a response's last short
            // segment until the client's delayed ACK (up to 40 ms per GET).
            let _ = sock.set_nodelay(true);
            let svc = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
}
