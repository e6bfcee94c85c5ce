//! A real S3-compatible server on loopback for the benches
//! (`benches/s3_chunks.sh`): s3s-fs, the same server the tests run inside
//! their binary, with SigV4 checked. Not part of Strata.
//!
//! `cargo run --release --example s3_server -- ROOT PORT ACCESS_KEY SECRET_KEY`
//! serves the directories under ROOT as buckets on 127.0.0.1:PORT until
//! killed, after printing its URL.

use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, port, key, secret] = args.as_slice() else {
        return Err("usage: s3_server ROOT PORT ACCESS_KEY SECRET_KEY".into());
    };
    let port: u16 = port.parse()?;
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(
            s3s_fs::FileSystem::new(root).map_err(|e| format!("{root}: {e:?}"))?,
        );
        b.set_auth(s3s::auth::SimpleAuth::from_single(key.as_str(), secret.as_str()));
        b.build()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("s3 on http://{}", listener.local_addr()?);
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (socket, _) = listener.accept().await?;
            // Without it every GET's body waits for the client's delayed
            // ACK (40 ms): a test server's artefact, not S3's.
            socket.set_nodelay(true)?;
            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}
