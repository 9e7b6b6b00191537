//! The load generator's HTTP/1.1 client: hyper's connection API over kept-alive loopback
//! connections, and nothing else.
//!
//! The load generator shares the machine with the server, PostgreSQL and NATS, so every
//! microsecond it spends is one the ledger does not get. A general-purpose client (reqwest)
//! parsed the URL (with IDNA), went through a connection pool keyed by origin and used the
//! system allocator on every request: ~63 µs of CPU per command, a tenth of the machine.
//! This client keeps idle connections in a stack, builds the request from a path, and reads
//! the whole body before handing the connection back.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// A server's answer, read whole.
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (`null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Requests to one `http://host:port/prefix` base.
pub struct Http {
    /// `host:port`, to connect to.
    addr: String,
    host: HeaderValue,
    /// The base's path, prepended to every request's path.
    prefix: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    timeout: Duration,
}

impl Http {
    /// A client for `base` (`http://host:port/path`; plain HTTP only: it drives a server
    /// on this machine or a trusted network, as the benchmark does).
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let Some(rest) = base.strip_prefix("http://") else {
            bail!("--base must be an http:// URL (the load generator speaks plain HTTP/1.1)");
        };
        let (addr, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if addr.is_empty() {
            bail!("--base has no host: {base}");
        }
        let addr = if addr.contains(':') {
            addr.to_owned()
        } else {
            format!("{addr}:80")
        };
        Ok(Self {
            host: HeaderValue::from_str(&addr).context("--base host")?,
            addr,
            prefix: prefix.to_owned(),
            idle: Mutex::new(Vec::new()),
            timeout,
        })
    }

    /// Sends one request and reads its answer whole, within the timeout. `body` is sent as
    /// JSON with an `Idempotency-Key` of its own, as a careful client does.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, token, body))
            .await
            .context("timed out")?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, self.host.clone());
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let payload = match body {
            Some(b) => {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string());
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload))?;
        let mut sender = self.connection().await?;
        let res = sender.send_request(req).await?;
        let (parts, incoming) = res.into_parts();
        let body = incoming.collect().await?.to_bytes();
        if !sender.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(sender);
            }
        }
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// An idle connection that is still open, or a new one.
    async fn connection(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        loop {
            let next = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(mut sender) = next else { break };
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = conn.await;
        });
        sender.ready().await?;
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_split_into_address_and_prefix() -> anyhow::Result<()> {
        let h = Http::new("http://127.0.0.1:18090/api/v1/", Duration::from_secs(1))?;
        assert_eq!(
            (h.addr.as_str(), h.prefix.as_str()),
            ("127.0.0.1:18090", "/api/v1")
        );
        let h = Http::new("http://localhost", Duration::from_secs(1))?;
        assert_eq!((h.addr.as_str(), h.prefix.as_str()), ("localhost:80", ""));
        assert!(Http::new("https://example.com/api/v1", Duration::from_secs(1)).is_err());
        assert!(Http::new("http:///api/v1", Duration::from_secs(1)).is_err());
        Ok(())
    }
}
