//! `--webhooks N`: N webhook endpoints subscribed to every event (`*`), all pointing at a
//! receiver in this process that answers 200 at once and notes how long after its
//! recording each event arrived (the delivery lag).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http::{Http, Method};

/// What the receiver got.
#[derive(Debug, Default)]
pub struct Received {
    /// Deliveries answered.
    pub count: u64,
    /// Each delivery's lag, in microseconds.
    pub lags_us: Vec<u64>,
}

/// Starts the receiver on a free loopback port, on a thread and runtime of its own: the
/// load generator's runtime has one thread, which the receiver must not take from it.
pub async fn receiver() -> anyhow::Result<(SocketAddr, Arc<Mutex<Received>>)> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let got = Arc::new(Mutex::new(Received::default()));
    let shared = got.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                return;
            };
            loop {
                match listener.accept().await {
                    Ok((sock, _)) => {
                        tokio::spawn(serve(sock, shared.clone()));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    });
    Ok((addr, got))
}

/// Answers 200 to every request of one keep-alive connection.
async fn serve(mut sock: TcpStream, got: Arc<Mutex<Received>>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let (head, body) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let len = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0usize);
                    break (n, len);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return,
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head + body {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let lag = recorded_at(&buf[head..head + body]).map(|t| {
            (chrono::Utc::now() - t)
                .num_microseconds()
                .unwrap_or(i64::MAX)
                .max(0) as u64
        });
        if let Ok(mut g) = got.lock() {
            g.count += 1;
            g.lags_us.extend(lag);
        }
        buf.drain(..head + body);
        if sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

fn recorded_at(body: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["recordedAt"].as_str()?.parse().ok()
}

/// Registers `n` endpoints for every event at `addr`, as the admin `token`; returns their
/// ids.
pub async fn subscribe(
    http: &Http,
    token: &str,
    addr: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"url": format!("http://{addr}/hook/{i}"), "events": ["*"]});
        let r = http
            .request(Method::POST, "/webhooks", Some(token), Some(&body))
            .await?;
        if r.status != 201 {
            bail!(
                "registering webhook {i}: {} {} (the server needs WEBHOOK_ALLOW_PRIVATE_NETWORKS=true)",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let v: Value = serde_json::from_slice(&r.body).context("the endpoint's answer")?;
        ids.push(v["id"].as_str().context("the endpoint's id")?.to_owned());
    }
    Ok(ids)
}

/// Pauses the endpoints `ids`: the backlog a saturating load leaves would otherwise be
/// sent while the ceiling after the load is measured, and lower it.
pub async fn pause(http: &Http, token: &str, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        let r = http
            .request(
                Method::PATCH,
                &format!("/webhooks/{id}"),
                Some(token),
                Some(&json!({"status": "PAUSED"})),
            )
            .await?;
        if r.status != 200 {
            bail!("pausing webhook {id}: {}", r.status);
        }
    }
    Ok(())
}

/// Waits until no delivery has arrived for two seconds (at most `limit`); returns how
/// long that took.
pub async fn drained(got: &Mutex<Received>, limit: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let count = || got.lock().map(|g| g.count).ok().context("receiver lock");
    let mut last = count()?;
    let mut quiet_since = Instant::now();
    while t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = count()?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(2) {
            return Ok(quiet_since.duration_since(t0));
        }
    }
    Ok(t0.elapsed())
}
