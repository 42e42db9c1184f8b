//! A recording, delaying HTTP/1.1 proxy in front of the emulator.
//!
//! Every request from an SDK client is read whole (head and
//! `Content-Length` body), recorded, held for a fixed latency, then
//! forwarded; responses are copied back untouched. Tests use the record to
//! see what was sent (the emulator ignores some parameters), and the
//! benchmark uses the latency to count sequential rounds of calls. It listens
//! on 127.0.0.1 on a port chosen by the OS and stops when dropped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query string.
    pub target: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request was complete, relative to the proxy's start.
    pub received: Duration,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The `X-Amz-Target` operation (JSON protocols) or the method and path (REST).
    pub fn operation(&self) -> String {
        match self.header("x-amz-target") {
            Some(target) => target.rsplit('.').next().unwrap_or(target).to_string(),
            None => format!("{} {}", self.method, self.target.split('?').next().unwrap_or_default()),
        }
    }
}

/// A running proxy.
pub struct Proxy {
    pub port: u16,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    latency: Arc<Mutex<Duration>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:upstream_port` that delays each request by `latency`.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream_port: u16, latency: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let latency = Arc::new(Mutex::new(latency));
        let started = Instant::now();
        let (r, l) = (requests.clone(), latency.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (r, l) = (r.clone(), l.clone());
                tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        // Without this, Nagle's algorithm adds ~40 ms per request.
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        let _ = relay(client, upstream, r, l, started).await;
                    }
                });
            }
        });
        Ok(Self {
            port,
            requests,
            latency,
            accept,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Changes the added latency for requests from now on.
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut l) = self.latency.lock() {
            *l = latency;
        }
    }

    /// Everything recorded so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        if let Ok(mut r) = self.requests.lock() {
            r.clear();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    latency: Arc<Mutex<Duration>>,
    started: Instant,
) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let responses = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut buffer = Vec::new();
    loop {
        let Some((raw, request)) = read_request(&mut client_read, &mut buffer, started).await? else {
            break;
        };
        let delay = latency.lock().map(|l| *l).unwrap_or_default();
        if let Ok(mut r) = requests.lock() {
            r.push(request);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        upstream_write.write_all(&raw).await?;
    }
    let _ = upstream_write.shutdown().await;
    let _ = responses.await;
    Ok(())
}

/// Reads one request; `None` at end of stream.
async fn read_request(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    buffer: &mut Vec<u8>,
    started: Instant,
) -> std::io::Result<Option<(Vec<u8>, RecordedRequest)>> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let raw: Vec<u8> = buffer.drain(..head_end + length).collect();
    let body = raw[head_end..].to_vec();
    Ok(Some((
        raw,
        RecordedRequest {
            method,
            target,
            headers,
            body,
            received: started.elapsed(),
        },
    )))
}
