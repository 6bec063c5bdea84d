//! A real S3 server for tests: s3s-fs (the s3s project's file-system
//! backend) served in-process over HTTP/1.1 on a loopback socket
//! (127.0.0.1, port chosen by the kernel), with SigV4 authentication.
//! Objects are plain files under `<root>/<bucket>/<key>`; unfinished
//! multipart uploads are `.upload_id-*` files in the root, which is how the
//! tests see that none were left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "MLPDRIVETESTACCESS01";
pub const SECRET_KEY: &str = "mlpdrive/test+secret0123456789abcdefSECRET";

pub struct S3Server {
    pub port: u16,
    root: tempfile::TempDir,
    service: s3s::service::S3Service,
    rt: tokio::runtime::Runtime,
}

/// Serves `service` on a new loopback port; every `throttle_every`-th
/// request (if set) is answered `503 SlowDown` instead, as a throttling
/// store would.
fn serve(rt: &tokio::runtime::Runtime, service: s3s::service::S3Service, throttle_every: Option<u64>) -> u16 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicU64::new(0));
    rt.spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            let (svc, count) = (service.clone(), count.clone());
            tokio::spawn(async move {
                let f = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let svc = svc.clone();
                    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                    async move {
                        if throttle_every.is_some_and(|k| n % k == 0) {
                            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                                        <Message>Please reduce your request rate.</Message></Error>";
                            let resp = hyper::Response::builder()
                                .status(503)
                                .header("content-type", "application/xml")
                                .body(s3s::Body::from(body.to_string()))
                                .unwrap();
                            return Ok::<_, s3s::HttpError>(resp);
                        }
                        hyper::service::Service::call(&svc, req).await
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(sock), f)
                    .await;
            });
        }
    });
    port
}

impl S3Server {
    /// A second endpoint of the same store (same buckets and objects).
    pub fn another_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", serve(&self.rt, self.service.clone(), None))
    }

    /// An endpoint of the same store that answers every `k`-th request
    /// with 503 SlowDown.
    pub fn throttling_endpoint(&self, k: u64) -> String {
        format!("http://127.0.0.1:{}", serve(&self.rt, self.service.clone(), Some(k)))
    }

    pub fn start() -> S3Server {
        let root = tempfile::Builder::new().prefix("mlpdrive-s3s-").tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let port = serve(&rt, service.clone(), None);
        S3Server { port, root, service, rt }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Creates a bucket (a directory of the root).
    pub fn bucket(&self, name: &str) -> PathBuf {
        let p = self.root.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Unfinished multipart uploads on the server.
    pub fn open_uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.starts_with(".upload_id-"))
            .collect()
    }
}

/// A command for `mlpdrive` with an AWS environment that sees only this
/// test's settings: no host profiles, no instance metadata, the test keys.
pub fn aws_command(bin: &str, cwd: &Path) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("AWS_")) {
            c.env_remove(k);
        }
    }
    c.env("AWS_CONFIG_FILE", cwd.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", cwd.join("no-aws-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1");
    c
}

/// moto's S3 server (Python), a second, independent S3 implementation,
/// started on a free 127.0.0.1 port and killed when dropped. Objects live
/// in the server's memory; it accepts any credentials.
pub struct Moto {
    pub port: u16,
    child: std::process::Child,
}

impl Moto {
    /// Starts `moto_server`; `None` (after saying why, loudly) if it is not
    /// installed. With `MLPDRIVE_CI` set a missing moto fails the test:
    /// `.ci/run` installs it.
    pub fn start() -> Option<Moto> {
        let found = Command::new("moto_server").arg("--help").output().is_ok_and(|o| o.status.success());
        if !found {
            let msg = "moto_server is not installed (pip install 'moto[server]'; .ci/run does this)";
            assert!(std::env::var_os("MLPDRIVE_CI").is_none(), "{msg}, and MLPDRIVE_CI is set: CI must not skip");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { port, child };
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed().as_secs() < 30, "moto_server did not listen on 127.0.0.1:{port} within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
