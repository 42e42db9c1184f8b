//! A minimal local AWS Lambda Runtime API, enough to run a function binary
//! the way Lambda does and to time it: `GET /2018-06-01/runtime/invocation/next`
//! (long-polls until an invocation is queued), `POST .../invocation/<id>/response`,
//! `POST .../invocation/<id>/error` and `POST /2018-06-01/runtime/init/error`.
//!
//! HTTP/1.1 with keep-alive, `Content-Length` or chunked request bodies. It
//! listens on 127.0.0.1 on a port chosen by the OS; dropping it stops the
//! listener and every connection. Everything it sees is reported, with the
//! instant it happened, through [`RuntimeApi::next_message`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::{JoinHandle, JoinSet};

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const INVOCATION: &str = "/2018-06-01/runtime/invocation/";
const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";

/// How long the function has for each invocation (the deadline header).
pub const INVOCATION_TIMEOUT: Duration = Duration::from_secs(60);

/// What the function did, in order.
#[derive(Debug, Clone)]
pub enum ApiMessage {
    /// A `GET .../invocation/next` arrived.
    Next { at: Instant },
    /// An invocation was written in answer to `/next`.
    Delivered { request_id: String, at: Instant },
    /// `POST .../invocation/<id>/response`, read whole.
    Response {
        request_id: String,
        body: Vec<u8>,
        at: Instant,
    },
    /// `POST .../invocation/<id>/error`.
    InvocationError {
        request_id: String,
        error_type: Option<String>,
        body: Vec<u8>,
        at: Instant,
    },
    /// `POST /2018-06-01/runtime/init/error`.
    InitError {
        error_type: Option<String>,
        body: Vec<u8>,
        at: Instant,
    },
    /// Any other request (answered 404).
    Unexpected { method: String, path: String, at: Instant },
}

struct Invocation {
    request_id: String,
    payload: Vec<u8>,
}

struct Shared {
    invocations: Mutex<mpsc::UnboundedReceiver<Invocation>>,
    messages: mpsc::UnboundedSender<ApiMessage>,
    function_arn: String,
}

/// A running Runtime API.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    invocations: mpsc::UnboundedSender<Invocation>,
    messages: mpsc::UnboundedReceiver<ApiMessage>,
    counter: AtomicU64,
    accept: JoinHandle<()>,
}

impl RuntimeApi {
    /// Starts the API on 127.0.0.1 for a function with this ARN.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(function_arn: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (invocations, invocations_rx) = mpsc::unbounded_channel();
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            invocations: Mutex::new(invocations_rx),
            messages: messages_tx,
            function_arn: function_arn.to_string(),
        });
        let accept = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                connections.spawn(async move {
                    let _ = serve(stream, shared).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            addr,
            invocations,
            messages,
            counter: AtomicU64::new(0),
            accept,
        })
    }

    /// `127.0.0.1:<port>`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an invocation; the next `/next` receives it. Returns its request id.
    pub fn invoke(&self, payload: &Value) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let request_id = format!("{nanos:08x}-0000-4000-8000-{n:012x}");
        let _ = self.invocations.send(Invocation {
            request_id: request_id.clone(),
            payload: payload.to_string().into_bytes(),
        });
        request_id
    }

    /// The next thing the function did; `None` once the API has stopped.
    pub async fn next_message(&mut self) -> Option<ApiMessage> {
        self.messages.recv().await
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut connection = Connection::new(stream);
    loop {
        let Some(request) = connection.read_request().await? else {
            return Ok(());
        };
        let at = Instant::now();
        let close = request
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let path = request.path.split('?').next().unwrap_or_default().to_string();
        let error_type = request.header("lambda-runtime-function-error-type").map(str::to_string);
        let report = |message: ApiMessage| {
            let _ = shared.messages.send(message);
        };
        match (request.method.as_str(), path.as_str()) {
            ("GET", NEXT) => {
                report(ApiMessage::Next { at });
                let invocation = shared.invocations.lock().await.recv().await;
                let Some(invocation) = invocation else {
                    return Ok(());
                };
                let deadline = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d + INVOCATION_TIMEOUT)
                    .map(|d| d.as_millis())
                    .unwrap_or_default();
                let headers = [
                    ("Content-Type", "application/json".to_string()),
                    ("Lambda-Runtime-Aws-Request-Id", invocation.request_id.clone()),
                    ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                    ("Lambda-Runtime-Invoked-Function-Arn", shared.function_arn.clone()),
                    (
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0".to_string(),
                    ),
                ];
                connection.respond(200, "OK", &headers, &invocation.payload).await?;
                report(ApiMessage::Delivered {
                    request_id: invocation.request_id,
                    at: Instant::now(),
                });
            }
            ("POST", p) if p.starts_with(INVOCATION) && (p.ends_with("/response") || p.ends_with("/error")) => {
                let rest = &p[INVOCATION.len()..];
                let (request_id, kind) = rest.rsplit_once('/').unwrap_or((rest, ""));
                let request_id = request_id.to_string();
                report(if kind == "response" {
                    ApiMessage::Response {
                        request_id,
                        body: request.body,
                        at,
                    }
                } else {
                    ApiMessage::InvocationError {
                        request_id,
                        error_type,
                        body: request.body,
                        at,
                    }
                });
                connection.respond(202, "Accepted", &[], br#"{"status":"OK"}"#).await?;
            }
            ("POST", INIT_ERROR) => {
                report(ApiMessage::InitError {
                    error_type,
                    body: request.body,
                    at,
                });
                connection.respond(202, "Accepted", &[], br#"{"status":"OK"}"#).await?;
            }
            (method, _) => {
                report(ApiMessage::Unexpected {
                    method: method.to_string(),
                    path: request.path.clone(),
                    at,
                });
                connection
                    .respond(404, "Not Found", &[], br#"{"errorMessage":"not found"}"#)
                    .await?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

/// A buffered HTTP/1.1 server connection.
pub struct Connection<S> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The bytes up to and including `delimiter`; `None` at a clean end of stream.
    async fn take_through(&mut self, delimiter: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buffer.windows(delimiter.len()).position(|w| w == delimiter) {
                return Ok(Some(self.buffer.drain(..i + delimiter.len()).collect()));
            }
            if !self.fill().await? {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(truncated())
                };
            }
        }
    }

    /// Exactly `n` bytes.
    async fn take(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buffer.len() < n {
            if !self.fill().await? {
                return Err(truncated());
            }
        }
        Ok(self.buffer.drain(..n).collect())
    }

    /// Reads one request; `None` when the client closed the connection between requests.
    ///
    /// # Errors
    /// I/O errors and malformed requests.
    pub async fn read_request(&mut self) -> std::io::Result<Option<Request>> {
        let Some(head) = self.take_through(b"\r\n\r\n").await? else {
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&head).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let chunked = header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line = self.take_through(b"\r\n").await?.ok_or_else(truncated)?;
                let line = String::from_utf8_lossy(&line);
                let size = line.trim().split(';').next().unwrap_or_default();
                let size = usize::from_str_radix(size.trim(), 16).map_err(|_| invalid("bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while self.take_through(b"\r\n").await?.ok_or_else(truncated)? != b"\r\n" {}
                    break;
                }
                body.extend(self.take(size).await?);
                if self.take(2).await? != b"\r\n" {
                    return Err(invalid("chunk not followed by CRLF"));
                }
            }
            body
        } else {
            let length: usize = match header("content-length") {
                Some(v) => v.parse().map_err(|_| invalid("bad Content-Length"))?,
                None => 0,
            };
            self.take(length).await?
        };
        Ok(Some(Request {
            method,
            path,
            headers,
            body,
        }))
    }

    /// Writes a response with a `Content-Length` body.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn respond(
        &mut self,
        status: u16,
        reason: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n", body.len());
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(body);
        self.stream.write_all(&message).await?;
        self.stream.flush().await
    }
}

fn truncated() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-request")
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> std::io::Result<Vec<Request>> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(raw).await?;
        drop(client);
        let mut connection = Connection::new(server);
        let mut requests = Vec::new();
        while let Some(r) = connection.read_request().await? {
            requests.push(r);
        }
        Ok(requests)
    }

    #[tokio::test]
    async fn reads_keep_alive_and_chunked_requests() -> std::io::Result<()> {
        let raw = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n\
POST /2018-06-01/runtime/invocation/abc/response HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
POST /2018-06-01/runtime/init/error HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let requests = parse(raw).await?;
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0].method, "GET");
        assert!(requests[0].body.is_empty());
        assert_eq!(requests[1].body, b"hello");
        assert_eq!(requests[2].path, INIT_ERROR);
        assert_eq!(requests[2].body, b"abcde");
        Ok(())
    }

    #[tokio::test]
    async fn a_truncated_request_is_an_error() {
        assert!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
                .await
                .is_err()
        );
    }
}
