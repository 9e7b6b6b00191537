//! The load generator's HTTP/1.1 client: kept-alive loopback connections, each request
//! written and its answer read by the task that asks, and nothing else.
//!
//! The load generator shares the machine with the server, PostgreSQL and NATS, so every
//! microsecond it spends is one the ledger does not get. A general-purpose client (reqwest)
//! parsed the URL (with IDNA), went through a connection pool keyed by origin and used the
//! system allocator on every request: ~63 µs of CPU per command, a tenth of the machine.
//! hyper's connection API brought that to ~26 µs, but it drives each connection from a
//! task of its own and hands every request and answer across a channel: two tasks woken
//! per request, a tenth of the generator's samples in context switches. This client writes
//! the request with one `write` and parses the answer's head with `httparse` in place.
//! Answers are read whole: by `Content-Length`, or chunk by chunk; a connection the server
//! closes, or answers `Connection: close` on, is not reused.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP method the load generator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method(&'static str);

impl Method {
    /// `GET`.
    pub const GET: Method = Method("GET");
    /// `POST`.
    pub const POST: Method = Method("POST");
    /// `PATCH`.
    pub const PATCH: Method = Method("PATCH");
}

/// A server's answer, read whole.
pub struct Response {
    pub status: u16,
    /// Header names in lower case, with their values.
    headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (`null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The first value of header `name` (given in lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// One kept-alive connection and the bytes read from it beyond the last answer (none,
/// unless a server sends more than it announced).
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Requests to one `http://host:port/prefix` base.
pub struct Http {
    /// `host:port`, to connect to.
    addr: String,
    /// The base's path, prepended to every request's path.
    prefix: String,
    idle: Mutex<Vec<Connection>>,
    timeout: Duration,
}

/// Largest answer head accepted, and the most headers in it.
const HEAD_BYTES_MAX: usize = 64 * 1024;
const HEADERS_MAX: usize = 64;

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
        if addr
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            bail!("--base has a malformed host: {base}");
        }
        let addr = if addr.contains(':') {
            addr.to_owned()
        } else {
            format!("{addr}:80")
        };
        Ok(Self {
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
        let head = self.head(method, path, token, body)?;
        tokio::time::timeout(self.timeout, self.exchange(head))
            .await
            .context("timed out")?
    }

    /// The request's bytes: head and body.
    fn head(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Vec<u8>> {
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            bail!("request path {path:?} has whitespace or control characters");
        }
        let payload = match body {
            Some(b) => Some(serde_json::to_vec(b)?),
            None => None,
        };
        let mut req = Vec::with_capacity(512 + payload.as_ref().map_or(0, Vec::len));
        for part in [
            method.0,
            " ",
            &self.prefix,
            path,
            " HTTP/1.1\r\nhost: ",
            &self.addr,
        ] {
            req.extend_from_slice(part.as_bytes());
        }
        if let Some(t) = token {
            req.extend_from_slice(b"\r\nauthorization: Bearer ");
            req.extend_from_slice(t.as_bytes());
        }
        match &payload {
            Some(p) => {
                let key = uuid::Uuid::new_v4();
                let mut key_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                req.extend_from_slice(b"\r\ncontent-type: application/json\r\nidempotency-key: ");
                req.extend_from_slice(key.hyphenated().encode_lower(&mut key_text).as_bytes());
                write!(req, "\r\ncontent-length: {}\r\n\r\n", p.len())?;
                req.extend_from_slice(p);
            }
            None => req.extend_from_slice(b"\r\n\r\n"),
        }
        Ok(req)
    }

    async fn exchange(&self, request: Vec<u8>) -> anyhow::Result<Response> {
        // A kept-alive connection the server has closed meanwhile fails on write or on the
        // first read; that request is sent again once, on a new connection. The ledger's
        // commands carry idempotency keys, so a request that did reach the server is
        // answered from its stored response, not applied twice.
        if let Some(mut conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            if let Ok(Some((res, keep))) = conn.round_trip(&request).await {
                self.put_back(conn, keep);
                return Ok(res);
            }
        }
        let stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
            buf: Vec::with_capacity(8 * 1024),
        };
        match conn.round_trip(&request).await? {
            Some((res, keep)) => {
                self.put_back(conn, keep);
                Ok(res)
            }
            None => bail!("the server closed the connection without an answer"),
        }
    }

    fn put_back(&self, conn: Connection, keep: bool) {
        if keep {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
    }
}

impl Connection {
    /// Writes `request` and reads its answer, and whether the connection can be used
    /// again. `None`: the server closed the connection before answering anything.
    async fn round_trip(&mut self, request: &[u8]) -> anyhow::Result<Option<(Response, bool)>> {
        self.stream.write_all(request).await?;
        let (status, head_len, names, length, chunked, close) = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            if self.buf.len() >= HEAD_BYTES_MAX {
                bail!("answer head larger than {HEAD_BYTES_MAX} bytes");
            }
            if self.fill().await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed inside an answer head");
            }
        };
        self.buf.drain(..head_len);
        let (body, keep) = if chunked {
            (self.read_chunked().await?, !close)
        } else if let Some(n) = length {
            while self.buf.len() < n {
                if self.fill().await? == 0 {
                    bail!("connection closed inside an answer body");
                }
            }
            let rest = self.buf.split_off(n);
            (std::mem::replace(&mut self.buf, rest), !close)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new(), !close)
        } else {
            // No length: the body runs until the server closes the connection.
            while self.fill().await? > 0 {}
            (std::mem::take(&mut self.buf), false)
        };
        Ok(Some((
            Response {
                status,
                headers: names,
                body,
            },
            keep,
        )))
    }

    /// Reads more of the stream into the buffer; 0 at its end.
    async fn fill(&mut self) -> anyhow::Result<usize> {
        self.buf.reserve(8 * 1024);
        Ok(self.stream.read_buf(&mut self.buf).await?)
    }

    /// Reads a chunked body (chunk extensions and trailers ignored).
    async fn read_chunked(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if self.buf.len() > 1024 {
                    bail!("malformed chunk size line");
                }
                if self.fill().await? == 0 {
                    bail!("connection closed inside a chunked body");
                }
            };
            let line = std::str::from_utf8(&self.buf[..line_end]).context("chunk size")?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).context("malformed chunk size")?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, if any, then the empty line that ends the body.
                loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        self.buf.drain(..i + 2);
                        if i == 0 {
                            return Ok(body);
                        }
                        continue;
                    }
                    if self.fill().await? == 0 {
                        bail!("connection closed inside a chunked body's trailer");
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill().await? == 0 {
                    bail!("connection closed inside a chunk");
                }
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                bail!("chunk not followed by CRLF");
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

/// An answer's head, once `buf` holds all of it: status, head length, headers (names in
/// lower case), `Content-Length`, chunked, `Connection: close` (or HTTP/1.0).
type Head = (
    u16,
    usize,
    Vec<(String, Vec<u8>)>,
    Option<usize>,
    bool,
    bool,
);

fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut res = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = res.parse(buf).context("malformed answer head")? else {
        return Ok(None);
    };
    let status = res.code.context("answer without a status")?;
    let mut length = None;
    let mut chunked = false;
    let mut close = res.version == Some(0);
    let mut names = Vec::with_capacity(res.headers.len());
    for h in res.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                let v = std::str::from_utf8(h.value).ok();
                length = Some(
                    v.and_then(|v| v.trim().parse::<usize>().ok())
                        .context("malformed content-length")?,
                );
            }
            "transfer-encoding" => chunked = h.value.eq_ignore_ascii_case(b"chunked"),
            "connection" => close = h.value.eq_ignore_ascii_case(b"close"),
            _ => {}
        }
        names.push((name, h.value.to_vec()));
    }
    Ok(Some((status, n, names, length, chunked, close)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

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

    /// A server that reads one request head (and `body_len` body bytes) per answer and
    /// writes the given answers in turn, each split in two writes; then closes.
    async fn serve(answers: Vec<&'static [u8]>, body_len: usize) -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut seen = Vec::new();
            for answer in answers {
                loop {
                    if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        if seen.len() >= i + 4 + body_len {
                            seen.drain(..i + 4 + body_len);
                            break;
                        }
                    }
                    let mut b = [0u8; 1024];
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&b[..n]),
                    }
                }
                let (a, b) = answer.split_at(answer.len() / 2);
                let _ = s.write_all(a).await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = s.write_all(b).await;
            }
        });
        Ok(format!("http://{addr}/api/v1"))
    }

    #[tokio::test]
    async fn answers_are_read_by_length_and_by_chunks_on_one_connection() -> anyhow::Result<()> {
        let base = serve(
            vec![
                b"HTTP/1.1 201 Created\r\nContent-Length: 14\r\nX-Read-Consistency: fresh\r\n\r\n{\"position\":7}",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\nT: v\r\n\r\n",
                b"HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
            ],
            2,
        )
        .await?;
        let http = Http::new(&base, Duration::from_secs(5))?;
        let body = serde_json::json!({});
        let r = http
            .request(Method::POST, "/transfers", Some("t"), Some(&body))
            .await?;
        assert_eq!(r.status, 201);
        assert_eq!(r.header("x-read-consistency"), Some(&b"fresh"[..]));
        assert_eq!(r.json(), serde_json::json!({"position": 7}));
        let r = http.request(Method::POST, "/x", None, Some(&body)).await?;
        assert_eq!((r.status, r.json()), (200, serde_json::json!({"a": 1})));
        let r = http.request(Method::POST, "/y", None, Some(&body)).await?;
        assert_eq!((r.status, r.body.as_slice()), (409, &b"{}"[..]));
        // The last answer said `connection: close`: nothing is kept for reuse.
        assert!(http.idle.lock().map(|i| i.is_empty()).unwrap_or(false));
        Ok(())
    }

    #[test]
    fn request_heads_carry_token_key_and_length() -> anyhow::Result<()> {
        let http = Http::new("http://127.0.0.1:1/api/v1", Duration::from_secs(1))?;
        let body = serde_json::json!({"amount": "1.00"});
        let req =
            String::from_utf8(http.head(Method::POST, "/transfers", Some("tok"), Some(&body))?)?;
        assert!(req.starts_with("POST /api/v1/transfers HTTP/1.1\r\nhost: 127.0.0.1:1\r\n"));
        assert!(req.contains("\r\nauthorization: Bearer tok\r\n"));
        assert!(req.contains("\r\nidempotency-key: "));
        assert!(req.ends_with("\r\ncontent-length: 17\r\n\r\n{\"amount\":\"1.00\"}"));
        let req =
            String::from_utf8(http.head(Method::GET, "/wallets/x?minPosition=3", None, None)?)?;
        assert_eq!(
            req,
            "GET /api/v1/wallets/x?minPosition=3 HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\r\n"
        );
        assert!(http.head(Method::GET, "/a b", None, None).is_err());
        Ok(())
    }
}
