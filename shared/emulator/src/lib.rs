//! The pinned local AWS emulator (ministack), for tests and `onboard demo`.
//!
//! Each [`Emulator`] gets its own free loopback ports for the HTTP gateway and
//! the MQTT-over-mTLS listener, runs with `AUTH=true` (SigV4, IAM and IoT
//! policies enforced), is started through `python/launch_ministack.py`
//! (embedded in this crate) so that every listener binds 127.0.0.1 only, is
//! waited for until ready, and is stopped (with its whole process group) when
//! dropped, even on panic — unless [`Emulator::keep`] hands it over.
//!
//! The Python interpreter is `$ONBOARDING_PYTHON`, else `.venv/bin/python` at
//! the workspace root, where `scripts/setup-python.sh` installs the pinned
//! emulator.
//!
//! [`stack`] deploys `infra/template.yaml` into an emulator as `sam deploy`
//! would. The device side of mutual TLS is `onboarding_device`'s.

pub mod stack;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The account root credentials the emulator accepts under `AUTH=true`.
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";
/// The account id the emulator uses for `test` credentials.
pub const ACCOUNT_ID: &str = "000000000000";

const READY_TIMEOUT: Duration = Duration::from_secs(45);

/// The launcher that forces loopback binds and corrects the emulator's IAM
/// resource mapping (see the script's docstring).
const LAUNCHER: &str = include_str!("../python/launch_ministack.py");

/// Why the emulator could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("the emulator's Python environment is missing ({0}); run scripts/setup-python.sh or set ONBOARDING_PYTHON")]
    PythonMissing(PathBuf),
    #[error("could not start the emulator: {0}")]
    Spawn(std::io::Error),
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("the emulator exited during start-up ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("the emulator was not ready after {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
    #[error("request to the emulator failed: {0}")]
    Http(String),
}

/// A running emulator. Dropping it stops it.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub gateway_port: u16,
    pub mqtt_port: u16,
    log_path: PathBuf,
    /// The emulator's working directory (its log, its temporary files);
    /// `None` once [`Emulator::keep`] has handed it over.
    dir: Option<tempfile::TempDir>,
}

/// An emulator left running on purpose (`onboard demo --keep`).
#[derive(Debug, Clone)]
pub struct KeptEmulator {
    /// Leader of the emulator's process group: `kill -- -<pid>` stops it.
    pub pid: u32,
    pub endpoint: String,
    pub gateway_port: u16,
    pub mqtt_port: u16,
    /// The emulator's log, kept with its working directory.
    pub log_path: PathBuf,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// The Python interpreter that has the pinned emulator installed.
pub fn python() -> PathBuf {
    std::env::var_os("ONBOARDING_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

/// A port that was free on 127.0.0.1 a moment ago.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16, EmulatorError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(EmulatorError::Port)?;
    Ok(listener.local_addr().map_err(EmulatorError::Port)?.port())
}

impl Emulator {
    /// Starts an emulator and waits until it is ready.
    ///
    /// # Errors
    /// [`EmulatorError`] with the emulator's log when it does not come up.
    pub async fn start() -> Result<Self, EmulatorError> {
        Self::start_with(&[]).await
    }

    /// Starts an emulator with extra environment variables.
    ///
    /// # Errors
    /// As [`Emulator::start`].
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Result<Self, EmulatorError> {
        let python = python();
        if !python.exists() {
            return Err(EmulatorError::PythonMissing(python));
        }
        // A port taken between probing and binding fails the start: try again.
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&python, extra_env).await {
                Ok(emulator) => return Ok(emulator),
                Err(e @ EmulatorError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| EmulatorError::NotReady(READY_TIMEOUT, String::new())))
    }

    async fn try_start(python: &Path, extra_env: &[(&str, &str)]) -> Result<Self, EmulatorError> {
        let gateway_port = free_port()?;
        let mqtt_port = free_port()?;
        let dir = tempfile::tempdir().map_err(EmulatorError::Spawn)?;
        let log_path = dir.path().join("ministack.log");
        let log = std::fs::File::create(&log_path).map_err(EmulatorError::Spawn)?;
        let log_err = log.try_clone().map_err(EmulatorError::Spawn)?;
        let endpoint = format!("http://127.0.0.1:{gateway_port}");
        let launcher = dir.path().join("launch_ministack.py");
        std::fs::write(&launcher, LAUNCHER).map_err(EmulatorError::Spawn)?;
        let mut command = Command::new(python);
        command
            .arg(launcher)
            .current_dir(dir.path())
            .env("GATEWAY_PORT", gateway_port.to_string())
            .env("IOT_MTLS_PORT", mqtt_port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .env("AUTH", "true")
            .env("SFTP_ENABLED", "0")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("LOG_LEVEL", "WARNING")
            .env("TMPDIR", dir.path())
            .env("MINISTACK_REGION", REGION)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        for (k, v) in extra_env {
            command.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(EmulatorError::Spawn)?;
        let mut emulator = Self {
            child,
            endpoint,
            gateway_port,
            mqtt_port,
            log_path,
            dir: Some(dir),
        };
        emulator.wait_ready().await?;
        Ok(emulator)
    }

    async fn wait_ready(&mut self) -> Result<(), EmulatorError> {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EmulatorError::Exited {
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            if let Ok(body) = self.get("/_ministack/ready").await
                && body.contains("\"iot_mtls\": \"listening\"")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EmulatorError::NotReady(READY_TIMEOUT, self.log_tail()))
    }

    /// The last 4 KiB of the emulator's log.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(4096);
        text.get(start..).unwrap_or_default().to_string()
    }

    /// A plain HTTP GET on the gateway (emulator-internal endpoints).
    ///
    /// # Errors
    /// [`EmulatorError::Http`] on connection or status failures.
    pub async fn get(&self, path: &str) -> Result<String, EmulatorError> {
        http_get(self.gateway_port, path).await
    }

    /// The emulator's server CA, which devices must trust.
    ///
    /// # Errors
    /// [`EmulatorError::Http`].
    pub async fn server_ca_pem(&self) -> Result<String, EmulatorError> {
        self.get(SERVER_CA_PATH).await
    }

    /// Leaves the emulator running after this process exits, with its working
    /// directory and log; the caller tells the user how to stop it.
    pub fn keep(mut self) -> KeptEmulator {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        KeptEmulator {
            pid: self.child.id(),
            endpoint: self.endpoint.clone(),
            gateway_port: self.gateway_port,
            mqtt_port: self.mqtt_port,
            log_path: self.log_path.clone(),
        }
    }

    /// SDK configuration pointed at the emulator, with the account root keys.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }

    pub async fn iot(&self) -> aws_sdk_iot::Client {
        aws_sdk_iot::Client::new(&self.sdk_config().await)
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.sdk_config().await)
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config().await)
    }
}

/// Where the emulator serves the CA of its MQTT server certificate.
pub const SERVER_CA_PATH: &str = "/_ministack/iot/ca.pem";

/// The gateway port of an `http://127.0.0.1:<port>` (or `localhost`) endpoint.
///
/// # Errors
/// [`EmulatorError::Http`] for anything else: emulator-internal endpoints are
/// only ever reached on loopback.
pub fn loopback_port(endpoint: &str) -> Result<u16, EmulatorError> {
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| EmulatorError::Http(format!("{endpoint}: expected http://127.0.0.1:<port>")))?;
    let rest = rest.trim_end_matches('/');
    let port = rest
        .strip_prefix("127.0.0.1:")
        .or_else(|| rest.strip_prefix("localhost:"))
        .ok_or_else(|| EmulatorError::Http(format!("{endpoint}: the emulator must be on 127.0.0.1")))?;
    port.parse()
        .map_err(|_| EmulatorError::Http(format!("{endpoint}: {port:?} is not a port")))
}

/// A plain HTTP GET on an emulator's loopback gateway port (no proxy, no
/// redirects, 10 s at most); the body of a 200.
///
/// # Errors
/// [`EmulatorError::Http`] on connection or status failures.
pub async fn http_get(gateway_port: u16, path: &str) -> Result<String, EmulatorError> {
    let url = format!("http://127.0.0.1:{gateway_port}{path}");
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut response = agent
            .get(&url)
            .call()
            .map_err(|e| EmulatorError::Http(format!("GET {path}: {e}")))?;
        if response.status() != ureq::http::StatusCode::OK {
            let status = response.status();
            return Err(EmulatorError::Http(format!(
                "GET {path}: {:?} {} {}",
                response.version(),
                status.as_str(),
                status.canonical_reason().unwrap_or_default()
            )));
        }
        let body = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| EmulatorError::Http(format!("GET {path}: {e}")))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .map_err(|e| EmulatorError::Http(e.to_string()))?
}

/// SDK configuration for an emulator endpoint.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_iot::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "emulator",
        ))
        .load()
        .await
}

/// An S3 client with path-style addressing (the emulator has no DNS).
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(config).force_path_style(true).build())
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.dir.is_none() {
            // Kept on purpose.
            return;
        }
        // The emulator runs in its own process group; stop every process in it
        // (Lambda runtimes it spawned included).
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
