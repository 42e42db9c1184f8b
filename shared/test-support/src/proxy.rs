//! A recording, delaying, failure-injecting HTTP/1.1 proxy in front of the
//! emulator.
//!
//! Every request from an SDK client is read whole (head and
//! `Content-Length` body), recorded, held for a fixed latency, then
//! forwarded; responses are copied back untouched. Tests use the record to
//! see what was sent (the emulator ignores some parameters), and the
//! benchmark uses the latency to count sequential rounds of calls. It listens
//! on 127.0.0.1 on a port chosen by the OS and stops when dropped.
//!
//! Failures are injected per request: [`Proxy::fail`] makes the next `times`
//! requests a [`Matcher`] selects fail with an HTTP 500 `InternalFailure`
//! that never reaches the emulator; [`Proxy::fail_with`] chooses how
//! ([`FailureMode`]: refused, answer lost after the emulator acted, or the
//! connection dropped). With the SDK's retries off (one attempt per call) an
//! injected failure surfaces as the failure of the step that made the call:
//! a crash between two steps of a workflow.
//!
//! Quotas are enforced when asked ([`Proxy::start_with`] and
//! [`ProxyOptions::quotas`], or [`Proxy::set_quotas`]): a token bucket per API
//! action ([`RecordedRequest::action`]) at AWS's quota ([`Quotas`]), and a
//! request over its action's quota is answered by the proxy with the
//! service's own throttling error, not forwarded. Every action's calls,
//! throttles and peak rate are counted either way ([`Proxy::quota_report`]).
//!
//! Random faults are injected when asked ([`ProxyOptions::faults`], or
//! [`Proxy::set_faults`]): a fraction of the calls admitted get a 5xx
//! answer in the service's own shape, a timeout or a connection reset,
//! before or after the emulator applied them ([`crate::faults`]). They are
//! counted per action and kind in the same report.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::faults::{FaultDice, FaultKind, Faults, InjectedFault, server_error_response};
use crate::quota::{
    Action, Limiter, QuotaReport, Quotas, Verdict, rest_operation, rest_route_pattern, throttle_response,
};

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

    /// `METHOD target`, the query string included (`PUT /certificates/<id>?newStatus=ACTIVE`).
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }

    /// The SigV4 signing name of the request's credential scope (`dynamodb`,
    /// `iot`, `iotdata`, `s3`…), when it is signed.
    pub fn service(&self) -> Option<&str> {
        let authorization = self.header("authorization")?;
        let scope = authorization.split("Credential=").nth(1)?.split([',', ' ']).next()?;
        // <key id>/<date>/<region>/<service>/aws4_request
        scope.split('/').nth(3)
    }

    /// The API action the request calls: its [`service`](Self::service)
    /// (`unsigned` when it is not signed) and its operation name, from
    /// `X-Amz-Target` (JSON protocols) or, for the REST routes this project
    /// calls, from the method and path (`GET /certificates/<id>` is
    /// `DescribeCertificate`); any other REST route is named by its pattern
    /// (`GET /widgets/*`).
    pub fn action(&self) -> Action {
        let service = self.service().unwrap_or("unsigned");
        let operation = match self.header("x-amz-target") {
            Some(_) => self.operation(),
            None => {
                let path = self.target.split('?').next().unwrap_or_default();
                rest_operation(service, &self.method, path)
                    .map_or_else(|| rest_route_pattern(&self.method, path), str::to_string)
            }
        };
        Action::new(service, &operation)
    }

    /// The content type of a JSON-protocol request (one naming an
    /// `X-Amz-Target`), `None` for the REST protocols.
    pub fn json_protocol(&self) -> Option<&str> {
        self.header("x-amz-target")
            .map(|_| self.header("content-type").unwrap_or("application/x-amz-json-1.0"))
    }

    /// The request body as JSON (the JSON protocols), `Null` otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// Selects the requests an injected failure applies to.
#[derive(Clone)]
pub struct Matcher {
    description: String,
    test: Arc<dyn Fn(&RecordedRequest) -> bool + Send + Sync>,
}

impl Matcher {
    /// Requests whose [`RecordedRequest::operation`] is exactly `name`
    /// (`PutItem`, `POST /certificates`).
    pub fn operation(name: &str) -> Self {
        let name = name.to_string();
        Self {
            description: format!("operation {name}"),
            test: Arc::new(move |r| r.operation() == name),
        }
    }

    /// Requests whose [`RecordedRequest::line`] (`METHOD path?query`)
    /// contains `text`.
    pub fn line(text: &str) -> Self {
        let text = text.to_string();
        Self {
            description: format!("line containing {text:?}"),
            test: Arc::new(move |r| r.line().contains(&text)),
        }
    }

    /// Requests `test` accepts; `description` names them in failure messages.
    pub fn predicate(description: &str, test: impl Fn(&RecordedRequest) -> bool + Send + Sync + 'static) -> Self {
        Self {
            description: description.to_string(),
            test: Arc::new(test),
        }
    }

    pub fn matches(&self, request: &RecordedRequest) -> bool {
        (self.test)(request)
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// A name without a space or `/` is an [`Matcher::operation`] (an
/// `X-Amz-Target` operation such as `PutItem`); anything else is a
/// [`Matcher::line`] substring (`PUT /jobs/`, `newStatus=ACTIVE`).
impl From<&str> for Matcher {
    fn from(text: &str) -> Self {
        if text.contains([' ', '/', '?', '=']) {
            Self::line(text)
        } else {
            Self::operation(text)
        }
    }
}

/// How an injected failure fails a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Answered with an HTTP 500 `InternalFailure` without being forwarded:
    /// the call had no effect (a crash just before it).
    Refuse,
    /// Forwarded, and once the emulator has answered, that answer is dropped
    /// and an HTTP 500 sent instead: the call took effect but its caller sees
    /// it fail (a crash just after it, or a lost answer).
    LoseAnswer,
    /// The connection is closed without an answer, before the request is
    /// forwarded (no effect; the SDK sees an I/O error).
    Disconnect,
}

/// A failure the proxy injected.
#[derive(Debug, Clone)]
pub struct InjectedFailure {
    pub request: RecordedRequest,
    pub mode: FailureMode,
    /// The matcher's description.
    pub matcher: String,
}

#[derive(Debug)]
struct Fault {
    matcher: Matcher,
    mode: FailureMode,
    remaining: usize,
}

#[derive(Debug, Default)]
struct State {
    requests: Mutex<Vec<RecordedRequest>>,
    latency: Mutex<Duration>,
    faults: Mutex<Vec<Fault>>,
    injected: Mutex<Vec<InjectedFailure>>,
    limiter: Mutex<Limiter>,
    /// The random faults in force and their sequence of decisions.
    dice: Mutex<Option<FaultDice>>,
    /// The random faults injected.
    faulted: Mutex<Vec<InjectedFault>>,
    /// Where requests go; settable after the start (see [`Proxy::set_upstream`]).
    upstream: std::sync::atomic::AtomicU16,
}

impl State {
    fn record(&self, request: &RecordedRequest) {
        if let Ok(mut r) = self.requests.lock() {
            r.push(request.clone());
        }
    }

    /// Whether the request's action is within its quota, at the time read
    /// under the limiter's lock (so that the buckets see time in order).
    fn within_quota(&self, request: &RecordedRequest, started: Instant) -> bool {
        let action = request.action();
        match self.limiter.lock() {
            Ok(mut limiter) => limiter.admit(&action, started.elapsed()) == Verdict::Admit,
            Err(_) => true,
        }
    }

    /// Records the request and returns the failure to inject into it, if
    /// any (the first armed fault that matches; each use counts down).
    fn admit(&self, request: &RecordedRequest) -> Option<FailureMode> {
        self.record(request);
        let mut faults = self.faults.lock().ok()?;
        let fault = faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.matcher.matches(request))?;
        fault.remaining -= 1;
        let injected = InjectedFailure {
            request: request.clone(),
            mode: fault.mode,
            matcher: fault.matcher.description.clone(),
        };
        let mode = fault.mode;
        faults.retain(|f| f.remaining > 0);
        drop(faults);
        if let Ok(mut i) = self.injected.lock() {
            i.push(injected);
        }
        Some(mode)
    }

    /// The random fault to inject into an admitted request that no armed
    /// failure took, if any; counted and kept when there is one.
    fn roll_fault(&self, request: &RecordedRequest) -> Option<FaultKind> {
        let kind = {
            let mut dice = self.dice.lock().ok()?;
            let dice = dice.as_mut()?;
            if !dice.faults().applies_to(request) {
                return None;
            }
            dice.roll()?
        };
        if let Ok(mut limiter) = self.limiter.lock() {
            limiter.faulted(&request.action(), kind);
        }
        if let Ok(mut f) = self.faulted.lock() {
            f.push(InjectedFault {
                request: request.clone(),
                kind,
            });
        }
        Some(kind)
    }

    /// How long timeouts hold a call.
    fn hold(&self) -> Duration {
        self.dice
            .lock()
            .ok()
            .and_then(|d| d.as_ref().map(|d| d.faults().hold))
            .unwrap_or(Faults::DEFAULT_HOLD)
    }
}

/// How a proxy starts.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Added to every request before it is answered.
    pub latency: Duration,
    /// The quotas enforced; `None`: no limit (calls are still counted).
    pub quotas: Option<Quotas>,
    /// The random faults injected into the calls admitted; `None`: none.
    pub faults: Option<Faults>,
}

/// A running proxy.
pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:upstream_port` that delays each request by `latency`.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream_port: u16, latency: Duration) -> std::io::Result<Self> {
        Self::start_with(
            upstream_port,
            ProxyOptions {
                latency,
                ..ProxyOptions::default()
            },
        )
        .await
    }

    /// Starts a proxy to `127.0.0.1:upstream_port` with `options`: its
    /// latency, the quotas it enforces
    /// (`ProxyOptions { quotas: Some(Quotas::aws_defaults()), ..Default::default() }`)
    /// and the faults it injects (`faults: Some(Faults::new(0.05, seed))`).
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start_with(upstream_port: u16, options: ProxyOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            latency: Mutex::new(options.latency),
            limiter: Mutex::new(Limiter::new(options.quotas)),
            dice: Mutex::new(options.faults.map(FaultDice::new)),
            upstream: std::sync::atomic::AtomicU16::new(upstream_port),
            ..State::default()
        });
        let started = Instant::now();
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let upstream_port = state.upstream.load(std::sync::atomic::Ordering::Relaxed);
                    if let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        // Without this, Nagle's algorithm adds ~40 ms per request.
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        let _ = relay(client, upstream, upstream_port, state, started).await;
                    }
                });
            }
        });
        Ok(Self { port, state, accept })
    }

    /// Sends the connections accepted from now on to `127.0.0.1:port`: for
    /// an upstream that must know the proxy's address before it starts (an
    /// emulator whose Lambda functions call AWS through the proxy).
    pub fn set_upstream(&self, port: u16) {
        self.state.upstream.store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Changes the added latency for requests from now on.
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut l) = self.state.latency.lock() {
            *l = latency;
        }
    }

    /// Everything recorded so far (failed requests included).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Forgets what was recorded (requests, injected failures and faults).
    pub fn clear(&self) {
        if let Ok(mut r) = self.state.requests.lock() {
            r.clear();
        }
        if let Ok(mut i) = self.state.injected.lock() {
            i.clear();
        }
        if let Ok(mut f) = self.state.faulted.lock() {
            f.clear();
        }
    }

    /// Makes the next `times` requests that `matcher` selects fail with an
    /// HTTP 500 `InternalFailure`, without forwarding them
    /// ([`FailureMode::Refuse`]).
    pub fn fail(&self, matcher: impl Into<Matcher>, times: usize) {
        self.fail_with(matcher, times, FailureMode::Refuse);
    }

    /// Makes the next `times` requests that `matcher` selects fail as `mode`
    /// says. Armed failures are tried in the order they were armed.
    pub fn fail_with(&self, matcher: impl Into<Matcher>, times: usize, mode: FailureMode) {
        if times == 0 {
            return;
        }
        if let Ok(mut faults) = self.state.faults.lock() {
            faults.push(Fault {
                matcher: matcher.into(),
                mode,
                remaining: times,
            });
        }
    }

    /// Failures armed and not yet used.
    pub fn failures_pending(&self) -> usize {
        self.state
            .faults
            .lock()
            .map(|f| f.iter().map(|f| f.remaining).sum())
            .unwrap_or_default()
    }

    /// Disarms every failure not yet used.
    pub fn clear_failures(&self) {
        if let Ok(mut faults) = self.state.faults.lock() {
            faults.clear();
        }
    }

    /// The failures injected so far, oldest first.
    pub fn injected(&self) -> Vec<InjectedFailure> {
        self.state.injected.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Enforces `quotas` from now on (`None`: none). Every bucket starts
    /// again full; the counters are kept.
    pub fn set_quotas(&self, quotas: Option<Quotas>) {
        if let Ok(mut limiter) = self.state.limiter.lock() {
            limiter.set_quotas(quotas);
        }
    }

    /// Injects `faults` into the calls admitted from now on (`None`: none).
    /// The sequence of decisions starts again from `faults.seed`; the
    /// counters are kept. Failures armed with [`Proxy::fail`] come first: a
    /// call one of them takes draws no decision.
    pub fn set_faults(&self, faults: Option<Faults>) {
        if let Ok(mut dice) = self.state.dice.lock() {
            *dice = faults.map(FaultDice::new);
        }
    }

    /// The random faults injected so far, oldest first (by the time each
    /// was decided).
    pub fn faults_injected(&self) -> Vec<InjectedFault> {
        self.state.faulted.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// For every action called so far: its quota, the calls admitted, the
    /// throttling errors returned, the peak calls in one second and the
    /// faults injected by kind (`Display` prints it as a Markdown table).
    pub fn quota_report(&self) -> QuotaReport {
        self.state.limiter.lock().map(|l| l.report()).unwrap_or_default()
    }

    /// Forgets the counters of [`Proxy::quota_report`].
    pub fn clear_quota_report(&self) {
        if let Ok(mut limiter) = self.state.limiter.lock() {
            limiter.clear_counters();
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
    upstream_port: u16,
    state: Arc<State>,
    started: Instant,
) -> std::io::Result<()> {
    let (mut client_read, client_write) = client.into_split();
    // Shared: injected answers are written by the request loop. SDK clients
    // wait for each answer before sending the next request on a connection,
    // so the two writers never interleave.
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let writer = client_write.clone();
    let responses = tokio::spawn(async move {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match upstream_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.lock().await.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = writer.lock().await.shutdown().await;
    });
    let mut buffer = Vec::new();
    loop {
        let Some((raw, request)) = read_request(&mut client_read, &mut buffer, started).await? else {
            break;
        };
        let delay = state.latency.lock().map(|l| *l).unwrap_or_default();
        if !state.within_quota(&request, started) {
            // Throttled: recorded, never forwarded, no armed failure used.
            state.record(&request);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let service = request.service().unwrap_or_default();
            let answer = throttle_response(service, &request.method, request.json_protocol());
            client_write.lock().await.write_all(&answer).await?;
            continue;
        }
        let arrived = Instant::now();
        let failure = state.admit(&request);
        let fault = if failure.is_none() {
            state.roll_fault(&request)
        } else {
            None
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(kind) = fault {
            match kind {
                FaultKind::InternalError | FaultKind::Unavailable => {
                    let status = if kind == FaultKind::Unavailable { 503 } else { 500 };
                    let answer = server_error_response(&request, status);
                    client_write.lock().await.write_all(&answer).await?;
                    continue;
                }
                FaultKind::TimeoutBeforeForward | FaultKind::TimeoutAfterForward => {
                    if kind.forwards() {
                        let _ = forward_and_drop(upstream_port, &raw, &request.method).await;
                    }
                    tokio::time::sleep(state.hold().saturating_sub(arrived.elapsed())).await;
                    close(client_read, client_write, responses, false).await;
                    return Ok(());
                }
                FaultKind::ResetBeforeForward | FaultKind::ResetAfterForward => {
                    if kind.forwards() {
                        let _ = forward_and_drop(upstream_port, &raw, &request.method).await;
                    }
                    close(client_read, client_write, responses, true).await;
                    return Ok(());
                }
            }
        }
        match failure {
            None => upstream_write.write_all(&raw).await?,
            Some(FailureMode::Refuse) => answer_failure(&client_write, &request).await?,
            Some(FailureMode::LoseAnswer) => {
                // On a connection of its own, so that the emulator's answer
                // can be read whole and dropped.
                let _ = forward_and_drop(upstream_port, &raw, &request.method).await;
                answer_failure(&client_write, &request).await?;
            }
            Some(FailureMode::Disconnect) => {
                responses.abort();
                let _ = client_write.lock().await.shutdown().await;
                return Ok(());
            }
        }
    }
    let _ = upstream_write.shutdown().await;
    let _ = responses.await;
    Ok(())
}

/// Ends a client connection without an answer: closed (FIN), or reset
/// (`SO_LINGER` 0, so that closing sends an RST) when `reset`.
async fn close(
    client_read: OwnedReadHalf,
    client_write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    responses: JoinHandle<()>,
    reset: bool,
) {
    responses.abort();
    // Once the copying task is gone, the write half is ours alone.
    let _ = responses.await;
    match Arc::try_unwrap(client_write) {
        Ok(write) if reset => {
            if let Ok(stream) = client_read.reunite(write.into_inner()) {
                let _ = stream.set_zero_linger();
            }
        }
        Ok(write) => {
            let _ = write.into_inner().shutdown().await;
        }
        Err(write) => {
            let _ = write.lock().await.shutdown().await;
        }
    }
}

async fn answer_failure(client: &tokio::sync::Mutex<OwnedWriteHalf>, request: &RecordedRequest) -> std::io::Result<()> {
    client.lock().await.write_all(&failure_response(request)).await
}

/// An HTTP 500 `InternalFailure` in the request's protocol: JSON with
/// `__type` (JSON protocols), XML (S3), or JSON with the
/// `x-amzn-ErrorType` header (REST JSON: IoT, IoT data).
fn failure_response(request: &RecordedRequest) -> Vec<u8> {
    const MESSAGE: &str = "failure injected by the test proxy";
    let (content_type, body) = if request.header("x-amz-target").is_some() {
        (
            request.header("content-type").unwrap_or("application/x-amz-json-1.0"),
            serde_json::json!({"__type": "InternalFailure", "message": MESSAGE}).to_string(),
        )
    } else if request.service() == Some("s3") {
        (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
                 <Message>{MESSAGE}</Message><RequestId>proxy-injected</RequestId></Error>"
            ),
        )
    } else {
        ("application/json", serde_json::json!({"message": MESSAGE}).to_string())
    };
    let body = if request.method == "HEAD" { String::new() } else { body };
    format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         x-amzn-errortype: InternalFailure\r\nx-amzn-requestid: proxy-injected\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends one request to the emulator on a new connection and reads the
/// whole answer, which is then dropped.
async fn forward_and_drop(upstream_port: u16, raw: &[u8], method: &str) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    let _ = upstream.set_nodelay(true);
    upstream.write_all(raw).await?;
    match tokio::time::timeout(Duration::from_secs(30), read_response(&mut upstream, method)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer")),
    }
}

/// Reads one response: its head and its body (`Content-Length`, chunked, or
/// up to the end of the stream).
async fn read_response(stream: &mut (impl AsyncRead + Unpin), method: &str) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
            continue;
        };
        let (status, headers) = parse_head(&buffer[..head_end]);
        if status / 100 == 1 {
            // `100 Continue` and the like: the real answer follows.
            buffer.drain(..head_end);
            continue;
        }
        if method == "HEAD" || status == 204 || status == 304 {
            return Ok(());
        }
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
        let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        loop {
            let body = &buffer[head_end..];
            let complete = match length {
                Some(length) => body.len() >= length,
                None if chunked => body.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if complete {
                return Ok(());
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The status code (0 when unreadable) and the lowercase headers of a response head.
fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A keep-alive HTTP server answering every request `200 {"n":<count>}`,
    /// counting what it received.
    async fn upstream() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let mut buffer = Vec::new();
                    while let Ok(Some(_)) = read_request(&mut read, &mut buffer, Instant::now()).await {
                        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("{{\"n\":{n}}}");
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if write.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (port, count)
    }

    /// Sends requests on one keep-alive connection; each answer's status
    /// (`None` when the connection closed first).
    async fn send(port: u16, requests: &[(&str, &str, &str)]) -> Vec<Option<u16>> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut statuses = Vec::new();
        for (method, target, target_header) in requests {
            let body = "{}";
            let request = format!(
                "{method} {target} HTTP/1.1\r\nhost: x\r\nx-amz-target: {target_header}\r\n\
                 content-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(request.as_bytes()).await.is_err() {
                statuses.push(None);
                continue;
            }
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            let status = loop {
                if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let (status, headers) = parse_head(&buffer[..end + 4]);
                    let length: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    if buffer.len() >= end + 4 + length {
                        break Some(status);
                    }
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            };
            statuses.push(status);
        }
        statuses
    }

    #[tokio::test]
    async fn refused_requests_never_reach_the_upstream() {
        let (upstream_port, count) = upstream().await;
        let proxy = Proxy::start(upstream_port, Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        proxy.fail("PutItem", 2);
        let statuses = send(
            proxy.port,
            &[
                ("POST", "/", "DynamoDB_20120810.GetItem"),
                ("POST", "/", "DynamoDB_20120810.PutItem"),
                ("POST", "/", "DynamoDB_20120810.PutItem"),
                ("POST", "/", "DynamoDB_20120810.PutItem"),
            ],
        )
        .await;
        assert_eq!(statuses, vec![Some(200), Some(500), Some(500), Some(200)]);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(proxy.requests().len(), 4);
        assert_eq!(proxy.injected().len(), 2);
        assert_eq!(proxy.failures_pending(), 0);
    }

    #[tokio::test]
    async fn a_lost_answer_reaches_the_upstream_and_fails_the_caller() {
        let (upstream_port, count) = upstream().await;
        let proxy = Proxy::start(upstream_port, Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        proxy.fail_with(
            Matcher::predicate("PUT on a job", |r| r.line().starts_with("PUT /jobs/")),
            1,
            FailureMode::LoseAnswer,
        );
        let statuses = send(
            proxy.port,
            &[("PUT", "/jobs/j1", "x.CreateJob"), ("PUT", "/jobs/j1", "x.CreateJob")],
        )
        .await;
        assert_eq!(statuses, vec![Some(500), Some(200)]);
        assert_eq!(count.load(Ordering::SeqCst), 2, "both reached the upstream");
        assert_eq!(proxy.injected()[0].mode, FailureMode::LoseAnswer);
    }

    #[tokio::test]
    async fn a_disconnect_closes_the_connection_unanswered() {
        let (upstream_port, count) = upstream().await;
        let proxy = Proxy::start(upstream_port, Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        proxy.fail_with("newStatus=ACTIVE", 1, FailureMode::Disconnect);
        proxy.fail("never-matches?", 3);
        let statuses = send(
            proxy.port,
            &[("PUT", "/certificates/c?newStatus=INACTIVE", "x.UpdateCertificate")],
        )
        .await;
        assert_eq!(statuses, vec![Some(200)], "INACTIVE is not ACTIVE");
        let statuses = send(
            proxy.port,
            &[("PUT", "/certificates/c?newStatus=ACTIVE", "x.UpdateCertificate")],
        )
        .await;
        assert_eq!(statuses, vec![None]);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(proxy.failures_pending(), 3);
        proxy.clear_failures();
        assert_eq!(proxy.failures_pending(), 0);
    }

    async fn faulty(upstream_port: u16, faults: Faults) -> Proxy {
        Proxy::start_with(
            upstream_port,
            ProxyOptions {
                faults: Some(faults),
                ..ProxyOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn each_fault_kind_fails_the_call_and_forwards_only_after_kinds() {
        let hold = Duration::from_millis(300);
        for kind in FaultKind::ALL {
            let (upstream_port, count) = upstream().await;
            let proxy = faulty(upstream_port, Faults::of_kind(kind, 1.0, 1).hold(hold)).await;
            let started = Instant::now();
            let statuses = send(proxy.port, &[("POST", "/", "DynamoDB_20120810.PutItem")]).await;
            let took = started.elapsed();
            let expected = match kind {
                FaultKind::InternalError => Some(500),
                FaultKind::Unavailable => Some(503),
                _ => None,
            };
            assert_eq!(statuses, vec![expected], "{kind}");
            let forwarded = usize::from(kind.forwards());
            assert_eq!(count.load(Ordering::SeqCst), forwarded, "{kind}");
            let timeout = matches!(kind, FaultKind::TimeoutBeforeForward | FaultKind::TimeoutAfterForward);
            assert_eq!(took >= hold, timeout, "{kind}: {took:?}");
            let report = proxy.quota_report();
            let put = report.get("unsigned", "PutItem").map(|a| (a.calls, a.faults.get(kind)));
            assert_eq!(put, Some((1, 1)), "{kind}: {report}");
            assert_eq!(report.total_faults().total(), 1, "{kind}: {report}");
            let injected = proxy.faults_injected();
            assert_eq!(injected.len(), 1);
            assert_eq!(injected[0].kind, kind);
        }
    }

    #[tokio::test]
    async fn a_reset_is_an_rst_and_a_timeout_a_close() {
        let (upstream_port, _) = upstream().await;
        let request = b"POST / HTTP/1.1\r\nhost: x\r\nx-amz-target: x.PutItem\r\ncontent-length: 0\r\n\r\n";
        for (kind, reset) in [
            (FaultKind::ResetBeforeForward, true),
            (FaultKind::ResetAfterForward, true),
            (FaultKind::TimeoutBeforeForward, false),
        ] {
            let faults = Faults::of_kind(kind, 1.0, 1).hold(Duration::from_millis(50));
            let proxy = faulty(upstream_port, faults).await;
            let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            stream.write_all(request).await.unwrap_or_else(|e| panic!("{e}"));
            let mut chunk = [0u8; 64];
            let read = stream.read(&mut chunk).await;
            if reset {
                let kind_of = read.as_ref().map_err(std::io::Error::kind);
                assert_eq!(
                    kind_of.err(),
                    Some(std::io::ErrorKind::ConnectionReset),
                    "{kind}: {read:?}"
                );
            } else {
                assert_eq!(read.ok(), Some(0), "{kind}: closed, not reset");
            }
        }
    }

    #[tokio::test]
    async fn random_faults_follow_the_seed_and_spare_armed_failures() {
        let (upstream_port, count) = upstream().await;
        let faults = Faults::new(0.3, 11)
            .kinds(&[(FaultKind::InternalError, 1), (FaultKind::Unavailable, 1)])
            .only("PutItem");
        let proxy = faulty(upstream_port, faults.clone()).await;
        proxy.fail("PutItem", 1);
        let mut requests = vec![("POST", "/", "x.PutItem"); 101];
        requests.extend([("POST", "/", "x.GetItem"); 20]);
        let statuses = send(proxy.port, &requests).await;
        // The armed failure takes the first call without a draw; the next
        // 100 follow the seed's decisions; GetItem is out of scope.
        let decisions = faults.decisions(100);
        let mut expected = vec![Some(500)];
        expected.extend(decisions.iter().map(|d| match d {
            None => Some(200),
            Some(FaultKind::Unavailable) => Some(503),
            Some(_) => Some(500),
        }));
        expected.extend([Some(200); 20]);
        assert_eq!(statuses, expected);
        let faulted = decisions.iter().flatten().count();
        assert!((15..=45).contains(&faulted), "{faulted} of 100 at 0.3");
        assert_eq!(count.load(Ordering::SeqCst), 100 - faulted + 20);
        let report = proxy.quota_report();
        assert_eq!(report.total_faults(), crate::faults::FaultCounts::of(&decisions));
        assert_eq!(report.get("unsigned", "GetItem").map(|a| a.faults.total()), Some(0));
        assert!(
            report
                .to_string()
                .contains("| unsigned:GetItem | - | 20 | 0 | 20 | 0 |"),
            "{report}"
        );
        // Turned off: nothing more is injected; turned on again: the same sequence.
        proxy.set_faults(None);
        let statuses = send(proxy.port, &[("POST", "/", "x.PutItem"); 50]).await;
        assert!(statuses.iter().all(|s| *s == Some(200)));
        assert_eq!(proxy.faults_injected().len(), faulted);
        proxy.set_faults(Some(faults));
        let statuses = send(proxy.port, &[("POST", "/", "x.PutItem"); 100]).await;
        assert_eq!(statuses[..], expected[1..101]);
        proxy.clear();
        assert!(proxy.faults_injected().is_empty());
    }

    #[test]
    fn the_signing_service_comes_from_the_credential_scope() {
        let request = RecordedRequest {
            method: "PUT".into(),
            target: "/bucket/key?x=1".into(),
            headers: vec![(
                "authorization".into(),
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, \
                 Signature=abc"
                    .into(),
            )],
            body: Vec::new(),
            received: Duration::ZERO,
        };
        assert_eq!(request.service(), Some("s3"));
        assert_eq!(request.operation(), "PUT /bucket/key");
        assert_eq!(request.line(), "PUT /bucket/key?x=1");
        let response = String::from_utf8(failure_response(&request)).unwrap_or_default();
        assert!(response.starts_with("HTTP/1.1 500 "), "{response}");
        assert!(response.contains("<Code>InternalError</Code>"), "{response}");
    }
}
