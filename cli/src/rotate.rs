//! `onboard device rotate-agent`: a simulated device that follows the
//! certificate-rotation protocol (`onboarding_domain::rotation`) over MQTT.
//!
//! It takes the next pending job through the AWS IoT Jobs MQTT API, obtains
//! new credentials (a CSR answered on the device's answer topic, or the
//! presigned URLs of a server-keygen job), stages them beside the current
//! ones, proves them with a new connection under the same client id, and only
//! then swaps the files and confirms the job over the new connection. Any
//! failure leaves `cert.pem` / `key.pem` as they were.
//!
//! Exit codes: 0 rotated; 1 refused, failed, no job or timed out (and bad
//! input); 3 AWS refused a Jobs request, a download or the broker refused the
//! current credentials.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use onboarding_domain::{
    CONFIRMATION_FIELD, CsrAnswer, CsrMessage, JOB_OPERATION, JobDocument, Strategy, answer_topic, csr_topic,
};
use onboarding_domain::{Certificate, KeyKind, SubjectField};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Cli;
use crate::connect::{Broker, Device};
use crate::error::CliError;
use crate::files::{read, write_all_new};
use crate::mqtt::Conn;

/// Options of `onboard device rotate-agent`.
#[derive(Debug, clap::Args)]
pub struct RotateAgentArgs {
    /// The device directory: `cert.pem` and `key.pem` (replaced on success;
    /// the previous pair is kept as `cert.old.pem` / `key.old.pem`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Thing name and MQTT client id (default: the certificate's CN).
    #[arg(long)]
    pub thing: Option<String>,
    #[command(flatten)]
    pub broker: crate::connect::BrokerArgs,
    /// Give up after this many seconds: waiting for a job, or for the answer to the CSR.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub deadline: u64,
    /// Misbehave, for tests of the backend: `never-answer` (take the job and
    /// stay silent), `fail` (report the job FAILED at once), `foreign-csr=NAME`
    /// (a CSR whose CN is NAME).
    #[arg(long, value_parser = parse_misbehave, value_name = "never-answer|fail|foreign-csr=NAME")]
    pub misbehave: Option<Misbehave>,
}

/// Deliberate misbehaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehave {
    NeverAnswer,
    Fail,
    ForeignCsr(String),
}

fn parse_misbehave(s: &str) -> Result<Misbehave, String> {
    match s {
        "never-answer" => Ok(Misbehave::NeverAnswer),
        "fail" => Ok(Misbehave::Fail),
        _ => match s.strip_prefix("foreign-csr=") {
            Some(name) if !name.is_empty() => Ok(Misbehave::ForeignCsr(name.to_string())),
            _ => Err("expected never-answer, fail or foreign-csr=NAME".into()),
        },
    }
}

/// How the agent ended, with what to tell the operator.
#[derive(Debug)]
enum End {
    Rotated,
    /// The backend refused the CSR.
    Refused(String),
    /// The rotation failed on the device's side (reported FAILED where possible).
    Failed(String),
    /// No rotation job came before the deadline.
    NoJob(String),
    TimedOut(String),
    /// AWS refused a request (Jobs API, download, broker): outcome `failed`, exit 3.
    Aws(String),
}

impl End {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Refused(_) => "refused",
            Self::Failed(_) | Self::Aws(_) => "failed",
            Self::NoJob(_) => "no_job",
            Self::TimedOut(_) => "timed_out",
        }
    }
}

/// What the run found out, for the summary.
struct Run {
    json: bool,
    thing: String,
    job_id: Option<String>,
    strategy: Option<Strategy>,
    old_certificate_id: String,
    new_certificate_id: Option<String>,
    started: std::time::Instant,
    deadline: Instant,
}

impl Run {
    /// One human line per step (on stderr under `--json`, so stdout stays JSON).
    fn step(&self, line: impl AsRef<str>) {
        if self.json {
            eprintln!("{}", line.as_ref());
        } else {
            println!("{}", line.as_ref());
        }
    }

    /// Reports (FAILED, SUCCEEDED) get a little time even after the deadline.
    fn report_deadline(&self) -> Instant {
        self.deadline.max(Instant::now() + Duration::from_secs(10))
    }

    fn finish(&self, end: End) -> Result<(), CliError> {
        let seconds = self.started.elapsed().as_secs_f64();
        if self.json {
            let mut summary = json!({
                "thing": self.thing,
                "jobId": self.job_id,
                "strategy": self.strategy.map(Strategy::as_str),
                "outcome": end.outcome(),
                "oldCertificateId": self.old_certificate_id,
                "newCertificateId": self.new_certificate_id,
                "seconds": seconds,
            });
            if let End::Refused(m) | End::Failed(m) | End::NoJob(m) | End::TimedOut(m) | End::Aws(m) = &end {
                summary["error"] = m.as_str().into();
            }
            println!("{summary}");
        } else if matches!(end, End::Rotated) {
            println!("{}: rotated in {seconds:.1} s", self.thing);
        }
        match end {
            End::Rotated => Ok(()),
            End::Refused(m) | End::Failed(m) | End::NoJob(m) | End::TimedOut(m) => Err(CliError::Input(m)),
            End::Aws(m) => Err(CliError::Aws(m)),
        }
    }
}

/// File names inside the device directory.
const CERT: &str = "cert.pem";
const KEY: &str = "key.pem";
const CERT_NEW: &str = "cert.new.pem";
const KEY_NEW: &str = "key.new.pem";
const CERT_OLD: &str = "cert.old.pem";
const KEY_OLD: &str = "key.old.pem";

pub async fn run(args: &RotateAgentArgs, cli: &Cli) -> Result<(), CliError> {
    let cert_pem = read(&args.dir.join(CERT), "device certificate")?;
    let key_pem = read(&args.dir.join(KEY), "device key")?;
    let broker = args.broker.broker()?;
    let certificate = Certificate::from_pem(&cert_pem)
        .map_err(|e| CliError::Input(format!("{}: {e}", args.dir.join(CERT).display())))?;
    let thing = match (&args.thing, certificate.subject.get(SubjectField::CommonName)) {
        (Some(thing), _) => thing.clone(),
        (None, Some(cn)) => cn.to_string(),
        (None, None) => {
            return Err(CliError::Input(format!(
                "{} has no CN to take the thing name from: pass --thing NAME",
                args.dir.join(CERT).display()
            )));
        }
    };
    let config = onboarding_emulator::tls::client_config(&broker.server_ca_pem, &cert_pem, &key_pem)
        .map_err(|e| CliError::Input(format!("the credentials in {} are unusable: {e}", args.dir.display())))?;
    let device = Device {
        name: thing.clone(),
        cert_pem,
        key_pem,
    };
    let run = Run {
        json: cli.json,
        thing,
        job_id: None,
        strategy: None,
        old_certificate_id: certificate.fingerprint.clone(),
        new_certificate_id: None,
        started: std::time::Instant::now(),
        deadline: Instant::now() + Duration::from_secs(args.deadline),
    };
    let mut agent = Agent {
        args,
        broker,
        device,
        certificate,
        run,
    };
    let end = agent.rotate(config).await;
    agent.run.finish(end)
}

struct Agent<'a> {
    args: &'a RotateAgentArgs,
    broker: Broker,
    device: Device,
    certificate: Certificate,
    run: Run,
}

/// A job execution taken by start-next.
struct Taken {
    job_id: String,
    document: Value,
}

/// New credentials, not yet proven.
struct Credentials {
    cert_pem: String,
    key_pem: String,
    certificate_id: String,
}

impl Agent<'_> {
    fn thing(&self) -> &str {
        &self.run.thing
    }

    fn jobs_topic(&self, rest: &str) -> String {
        format!("$aws/things/{}/jobs/{rest}", self.run.thing)
    }

    async fn rotate(&mut self, config: Arc<rustls::ClientConfig>) -> End {
        let mut conn = match Conn::open(&self.broker, config, self.thing(), self.run.deadline).await {
            Ok(conn) => conn,
            Err(e) => {
                return End::Aws(format!(
                    "cannot connect to {}:{} as {} with the current certificate: {e}",
                    self.broker.host,
                    self.broker.port,
                    self.thing()
                ));
            }
        };
        self.run.step(format!(
            "connected to {}:{} as {} (certificate {})",
            self.broker.host,
            self.broker.port,
            self.thing(),
            short(&self.run.old_certificate_id)
        ));
        let taken = match self.take_job(&mut conn).await {
            Ok(taken) => taken,
            Err(end) => return end,
        };
        self.run.job_id = Some(taken.job_id.clone());
        let document = match serde_json::from_value::<JobDocument>(taken.document.clone()) {
            Ok(document) if document.version == "1" => document,
            // The protocol says to ignore versions one does not know: left as it is.
            Ok(document) => {
                return End::NoJob(format!(
                    "job {} is a rotation of version {:?}, which this agent does not know (1): left alone",
                    taken.job_id, document.version
                ));
            }
            Err(e) => {
                let detail = format!("the job document does not parse: {e}");
                return self.fail(&mut conn, "DOCUMENT_INVALID", &detail).await;
            }
        };
        self.run.strategy = Some(document.strategy);
        self.run.step(format!(
            "job {} IN_PROGRESS: replace certificate {} ({})",
            taken.job_id,
            short(&document.old_certificate_id),
            document.strategy.as_str()
        ));
        match &self.args.misbehave {
            Some(Misbehave::Fail) => {
                let end = self
                    .fail(&mut conn, "DEVICE_FAILED", "told to fail (--misbehave fail)")
                    .await;
                return match end {
                    End::Failed(_) => End::Failed(format!(
                        "job {} reported FAILED as told (--misbehave fail); credentials unchanged",
                        taken.job_id
                    )),
                    other => other,
                };
            }
            Some(Misbehave::NeverAnswer) => {
                self.run
                    .step("misbehaving (never-answer): holding the job IN_PROGRESS without a word");
                return match conn.next_on(&[], self.run.deadline).await {
                    Err(e) => End::Aws(format!("the connection was lost while idle: {e}")),
                    Ok(_) => End::TimedOut(format!(
                        "held job {} IN_PROGRESS until the deadline without answering (--misbehave never-answer)",
                        taken.job_id
                    )),
                };
            }
            _ => {}
        }
        if document.old_certificate_id != self.run.old_certificate_id {
            return self.already_rotated(conn, &taken.job_id, &document).await;
        }
        let credentials = match document.strategy {
            Strategy::Csr => self.by_csr(&mut conn, &taken.job_id, &document).await,
            Strategy::ServerKeygen => self.by_server_keygen(&mut conn, &document).await,
        };
        let credentials = match credentials {
            Ok(credentials) => credentials,
            Err(end) => return end,
        };
        self.run.new_certificate_id = Some(credentials.certificate_id.clone());
        self.switch(conn, &taken.job_id, credentials).await
    }

    /// StartNextPendingJobExecution until a rotation job is IN_PROGRESS, waiting
    /// on notify-next while nothing is pending.
    async fn take_job(&mut self, conn: &mut Conn) -> Result<Taken, End> {
        let (notify, accepted, rejected) = (
            self.jobs_topic("notify-next"),
            self.jobs_topic("start-next/accepted"),
            self.jobs_topic("start-next/rejected"),
        );
        conn.subscribe(&[notify.clone(), accepted.clone(), rejected.clone()], self.run.deadline)
            .await
            .map_err(End::Aws)?;
        let mut announced = false;
        loop {
            let token = client_token();
            let request = json!({"clientToken": token, "statusDetails": {"agent": "onboard rotate-agent"}});
            let start = self.jobs_topic("start-next");
            conn.publish(&start, request.to_string().into_bytes(), self.run.deadline)
                .await
                .map_err(|e| End::Aws(format!("publishing on {start}: {e}")))?;
            let answer = loop {
                match conn.next_on(&[&accepted, &rejected], self.run.deadline).await {
                    Err(e) => return Err(End::Aws(format!("waiting for the answer to start-next: {e}"))),
                    Ok(None) => return Err(End::TimedOut("no answer to StartNextPendingJobExecution".into())),
                    Ok(Some((topic, payload))) => {
                        let body: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                        if body["clientToken"] == token.as_str() {
                            break (topic, body);
                        }
                    }
                }
            };
            if answer.0 == rejected {
                return Err(End::Aws(format!(
                    "StartNextPendingJobExecution rejected: {} {}",
                    answer.1["code"].as_str().unwrap_or("?"),
                    answer.1["message"].as_str().unwrap_or("")
                )));
            }
            if let Some(execution) = answer.1.get("execution") {
                let job_id = execution["jobId"].as_str().unwrap_or_default().to_string();
                let document = match &execution["jobDocument"] {
                    Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                    other => other.clone(),
                };
                if document["operation"] != JOB_OPERATION {
                    return Err(End::NoJob(format!(
                        "the next pending job {job_id} is not a certificate rotation (operation {}): left to whatever handles it",
                        document["operation"]
                    )));
                }
                return Ok(Taken { job_id, document });
            }
            if !announced {
                self.run.step("no job pending; waiting for one (notify-next)");
                announced = true;
            }
            // Wait until notify-next names an execution, then take it.
            loop {
                match conn.next_on(&[&notify], self.run.deadline).await {
                    Err(e) => return Err(End::Aws(format!("waiting for a job: {e}"))),
                    Ok(None) => {
                        return Err(End::NoJob(format!(
                            "no rotation job for {} within {} s",
                            self.run.thing, self.args.deadline
                        )));
                    }
                    Ok(Some((_, payload))) => {
                        let body: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                        if body.get("execution").is_some() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// UpdateJobExecution FAILED with `{reasonCode, detail}`; the credentials stay as they are.
    async fn fail(&mut self, conn: &mut Conn, reason_code: &str, detail: &str) -> End {
        let job_id = self.run.job_id.clone().unwrap_or_default();
        let mut details = serde_json::Map::new();
        details.insert("reasonCode".into(), detail_value(reason_code).into());
        if !detail.trim().is_empty() {
            details.insert("detail".into(), detail_value(detail).into());
        }
        match self.update(conn, &job_id, "FAILED", Value::Object(details)).await {
            Ok(()) => {
                self.run
                    .step(format!("job {job_id} reported FAILED ({reason_code}: {detail})"));
                End::Failed(format!(
                    "{reason_code}: {detail}; job {job_id} reported FAILED, credentials unchanged"
                ))
            }
            // The backend may end the job itself first (it cancels the job
            // of a refused CSR): there is nothing left to report.
            Err(e) if e.contains("InvalidStateTransition") || e.contains("already finished") => {
                self.run.step(format!(
                    "job {job_id} already ended by the backend ({reason_code}: {detail})"
                ));
                End::Failed(format!(
                    "{reason_code}: {detail}; job {job_id} already ended by the backend, credentials unchanged"
                ))
            }
            Err(e) => End::Aws(format!(
                "{reason_code}: {detail}; and reporting job {job_id} FAILED failed too: {e}"
            )),
        }
    }

    /// UpdateJobExecution and its `update/accepted`.
    async fn update(&self, conn: &mut Conn, job_id: &str, status: &str, details: Value) -> Result<(), String> {
        let deadline = self.run.report_deadline();
        let (accepted, rejected) = (
            self.jobs_topic(&format!("{job_id}/update/accepted")),
            self.jobs_topic(&format!("{job_id}/update/rejected")),
        );
        conn.subscribe(&[accepted.clone(), rejected.clone()], deadline).await?;
        let token = client_token();
        let request = json!({"status": status, "statusDetails": details, "clientToken": token});
        let topic = self.jobs_topic(&format!("{job_id}/update"));
        conn.publish(&topic, request.to_string().into_bytes(), deadline)
            .await
            .map_err(|e| format!("publishing on {topic}: {e}"))?;
        loop {
            let Some((answer, payload)) = conn.next_on(&[&accepted, &rejected], deadline).await? else {
                return Err(format!("no answer on {accepted}"));
            };
            let body: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            if body["clientToken"] != token.as_str() {
                continue;
            }
            if answer == rejected {
                return Err(format!(
                    "UpdateJobExecution {status} rejected: {} {}",
                    body["code"].as_str().unwrap_or("?"),
                    body["message"].as_str().unwrap_or("")
                ));
            }
            return Ok(());
        }
    }

    /// The CSR strategy: a new key of the same kind, a CSR with the same
    /// subject, and the backend's answer.
    async fn by_csr(&mut self, conn: &mut Conn, job_id: &str, document: &JobDocument) -> Result<Credentials, End> {
        let (request_topic, answer_topic) = match &document.csr {
            Some(csr) => (csr.request_topic.clone(), csr.answer_topic.clone()),
            None => (csr_topic(self.thing()), answer_topic(self.thing())),
        };
        let foreign = match &self.args.misbehave {
            Some(Misbehave::ForeignCsr(name)) => Some(name.as_str()),
            _ => None,
        };
        let (key, csr_pem, subject) = match make_csr(&self.device.cert_pem, &self.certificate.key, foreign) {
            Ok(made) => made,
            Err(e) => return Err(self.fail(conn, "CSR_FAILED", &e).await),
        };
        if let Err(e) = conn
            .subscribe(std::slice::from_ref(&answer_topic), self.run.deadline)
            .await
        {
            return Err(End::Aws(e));
        }
        let message = CsrMessage {
            job_id: job_id.to_string(),
            csr: csr_pem,
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        if let Err(e) = conn.publish(&request_topic, payload, self.run.deadline).await {
            return Err(End::Aws(format!("publishing the CSR on {request_topic}: {e}")));
        }
        self.run.step(format!(
            "CSR sent on {request_topic} ({subject}, {} key); waiting on {answer_topic}",
            key_name(&self.certificate.key)
        ));
        let answer = loop {
            match conn.next_on(&[&answer_topic], self.run.deadline).await {
                Err(e) => return Err(End::Aws(format!("waiting for the answer to the CSR: {e}"))),
                Ok(None) => {
                    return Err(End::TimedOut(format!(
                        "no answer to the CSR on {answer_topic} within {} s; job {job_id} left IN_PROGRESS",
                        self.args.deadline
                    )));
                }
                Ok(Some((_, payload))) => match serde_json::from_slice::<CsrAnswer>(&payload) {
                    Ok(answer) if answer_job(&answer) == job_id => break answer,
                    Ok(_) => {}
                    Err(e) => self
                        .run
                        .step(format!("ignoring an unreadable answer on {answer_topic}: {e}")),
                },
            }
        };
        match answer {
            CsrAnswer::Refused {
                reason_code, detail, ..
            } => {
                self.run.step(format!("CSR refused: {reason_code}: {detail}"));
                let end = self.fail(conn, &reason_code, &detail).await;
                Err(match end {
                    End::Failed(_) => End::Refused(format!(
                        "the backend refused the CSR: {reason_code}: {detail}; job {job_id} ended, credentials unchanged"
                    )),
                    other => other,
                })
            }
            CsrAnswer::Issued {
                certificate_id,
                certificate_pem,
                ..
            } => {
                let key_pem = key.serialize_pem();
                let id = match check_pair(&certificate_pem, &key_pem) {
                    Ok(id) => id,
                    Err(e) => return Err(self.fail(conn, "CERTIFICATE_UNUSABLE", &e).await),
                };
                if id != certificate_id {
                    self.run.step(format!(
                        "note: the answer names certificate {certificate_id}, its SHA-256 is {id}"
                    ));
                }
                self.run.step(format!("certificate {} issued", short(&id)));
                Ok(Credentials {
                    cert_pem: certificate_pem,
                    key_pem,
                    certificate_id: id,
                })
            }
        }
    }

    /// The server-keygen strategy: both files through their presigned URLs.
    async fn by_server_keygen(&mut self, conn: &mut Conn, document: &JobDocument) -> Result<Credentials, End> {
        let Some(instructions) = &document.server_keygen else {
            return Err(self
                .fail(
                    conn,
                    "DOCUMENT_INVALID",
                    "a serverKeygen job without serverKeygen instructions",
                )
                .await);
        };
        let urls = (
            instructions.certificate_url.clone(),
            instructions.private_key_url.clone(),
        );
        let downloaded = tokio::task::spawn_blocking(move || -> Result<(String, String), String> {
            let agent = http_agent();
            Ok((download(&agent, &urls.0)?, download(&agent, &urls.1)?))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let (cert_pem, key_pem) = match downloaded {
            Ok(pair) => pair,
            Err(e) => {
                return Err(match self.fail(conn, "DOWNLOAD_FAILED", &e).await {
                    End::Failed(m) => End::Aws(m),
                    other => other,
                });
            }
        };
        let id = match check_pair(&cert_pem, &key_pem) {
            Ok(id) => id,
            Err(e) => return Err(self.fail(conn, "CERTIFICATE_UNUSABLE", &e).await),
        };
        if id != instructions.new_certificate_id {
            self.run.step(format!(
                "note: the job names certificate {}, the downloaded one is {id}",
                instructions.new_certificate_id
            ));
        }
        self.run
            .step(format!("certificate {} and its key downloaded", short(&id)));
        Ok(Credentials {
            cert_pem,
            key_pem,
            certificate_id: id,
        })
    }

    /// Stage, prove with a new connection, swap, confirm, publish.
    async fn switch(&mut self, mut old: Conn, job_id: &str, new: Credentials) -> End {
        let dir = self.args.dir.clone();
        let (cert_new, key_new) = (dir.join(CERT_NEW), dir.join(KEY_NEW));
        let _ = std::fs::remove_file(&cert_new);
        let _ = std::fs::remove_file(&key_new);
        if let Err(e) = write_all_new(&[
            (key_new.clone(), new.key_pem.clone(), 0o600),
            (cert_new.clone(), new.cert_pem.clone(), 0o644),
        ]) {
            return self.fail(&mut old, "STORAGE_FAILED", &e.to_string()).await;
        }
        self.run.step(format!(
            "new credentials staged as {CERT_NEW} and {KEY_NEW} in {}",
            dir.display()
        ));
        let discard = || {
            let _ = std::fs::remove_file(&cert_new);
            let _ = std::fs::remove_file(&key_new);
        };
        let config =
            match onboarding_emulator::tls::client_config(&self.broker.server_ca_pem, &new.cert_pem, &new.key_pem) {
                Ok(config) => config,
                Err(e) => {
                    discard();
                    return self.fail(&mut old, "CERTIFICATE_UNUSABLE", &e.to_string()).await;
                }
            };
        let mut conn = match self.connect_new(config).await {
            Ok(conn) => conn,
            Err(e) => {
                discard();
                self.run.step(format!(
                    "the new certificate was not accepted: {e}; keeping the old one"
                ));
                if old.closed().is_some() {
                    match self.reconnect_old().await {
                        Ok(conn) => old = conn,
                        Err(end) => return end,
                    }
                }
                return self.fail(&mut old, "NEW_CERTIFICATE_REFUSED", &e).await;
            }
        };
        self.run.step("connected with the new certificate (same client id)");
        // The broker drops the old session for the new one (same client id).
        drop(old);
        if let Err(e) = swap(&dir) {
            return self
                .fail(
                    &mut conn,
                    "STORAGE_FAILED",
                    &format!("swapping the credential files: {e}"),
                )
                .await;
        }
        self.run.step(format!(
            "credentials swapped: {CERT} is {}, the previous pair is {CERT_OLD} / {KEY_OLD}",
            short(&new.certificate_id)
        ));
        self.confirm(conn, job_id, &new.certificate_id).await
    }

    /// A job whose old certificate is not the one in `cert.pem`: a rotation
    /// that got as far as the swap before the agent stopped is confirmed,
    /// anything else is refused.
    async fn already_rotated(&mut self, mut conn: Conn, job_id: &str, document: &JobDocument) -> End {
        let previous = std::fs::read_to_string(self.args.dir.join(CERT_OLD))
            .ok()
            .and_then(|pem| Certificate::from_pem(&pem).ok())
            .map(|c| c.fingerprint);
        if previous.as_deref() != Some(document.old_certificate_id.as_str()) {
            let detail = format!(
                "the job replaces certificate {}, but the device uses {}",
                document.old_certificate_id, self.run.old_certificate_id
            );
            return self.fail(&mut conn, "WRONG_OLD_CERTIFICATE", &detail).await;
        }
        let current = self.run.old_certificate_id.clone();
        self.run.step(format!(
            "already rotated: {CERT} is {} and {CERT_OLD} is the job's old certificate; confirming",
            short(&current)
        ));
        self.run.old_certificate_id = document.old_certificate_id.clone();
        self.run.new_certificate_id = Some(current.clone());
        self.confirm(conn, job_id, &current).await
    }

    /// Over the new connection: the job SUCCEEDED naming the new certificate,
    /// then one telemetry message with its PUBACK.
    async fn confirm(&mut self, mut conn: Conn, job_id: &str, certificate_id: &str) -> End {
        let details = json!({ CONFIRMATION_FIELD: certificate_id });
        if let Err(e) = self.update(&mut conn, job_id, "SUCCEEDED", details).await {
            return End::Aws(format!(
                "the device uses certificate {certificate_id} now, but confirming job {job_id} failed: {e}"
            ));
        }
        self.run.step(format!(
            "job {job_id} SUCCEEDED ({CONFIRMATION_FIELD} {})",
            short(certificate_id)
        ));
        let topic = format!("devices/{}/telemetry", self.run.thing);
        let payload = json!({"rotated": true, "certificateId": certificate_id}).to_string();
        if let Err(e) = conn
            .publish(&topic, payload.into_bytes(), self.run.report_deadline())
            .await
        {
            return End::Failed(format!(
                "job {job_id} SUCCEEDED, but publishing on {topic} with the new certificate failed: {e}"
            ));
        }
        self.run
            .step(format!("published on {topic} with the new certificate (PUBACK)"));
        conn.close().await;
        End::Rotated
    }

    /// The new credentials' first connection, retried briefly (up to 15 s,
    /// within the deadline): AWS IoT may take a moment before a just-activated
    /// certificate is accepted.
    async fn connect_new(&self, config: Arc<rustls::ClientConfig>) -> Result<Conn, String> {
        let until = self.run.deadline.min(Instant::now() + Duration::from_secs(15));
        let mut delay = Duration::from_millis(300);
        loop {
            let error = match Conn::open(&self.broker, config.clone(), self.thing(), self.run.report_deadline()).await {
                Ok(conn) => return Ok(conn),
                Err(e) => e,
            };
            if Instant::now() + delay >= until {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(3));
        }
    }

    /// The old credentials again, after their connection was lost.
    async fn reconnect_old(&self) -> Result<Conn, End> {
        let config = onboarding_emulator::tls::client_config(
            &self.broker.server_ca_pem,
            &self.device.cert_pem,
            &self.device.key_pem,
        )
        .map_err(|e| End::Failed(e.to_string()))?;
        Conn::open(&self.broker, config, self.thing(), self.run.report_deadline())
            .await
            .map_err(|e| {
                End::Aws(format!(
                    "reconnecting with the old certificate to report the failure: {e}"
                ))
            })
    }
}

fn answer_job(answer: &CsrAnswer) -> &str {
    match answer {
        CsrAnswer::Issued { job_id, .. } | CsrAnswer::Refused { job_id, .. } => job_id,
    }
}

/// A clientToken unique within this process (AWS: up to 64 characters).
fn client_token() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "rotate-agent-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A statusDetails value as AWS takes it: no control characters, not empty, bounded.
fn detail_value(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(512)
        .collect();
    if clean.trim().is_empty() {
        "-".to_string()
    } else {
        clean
    }
}

/// The first 12 hex of a certificate id, for human lines.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn key_name(kind: &KeyKind) -> String {
    match kind {
        KeyKind::EcP256 | KeyKind::EcP384 | KeyKind::Ed25519 => kind.to_string(),
        KeyKind::Rsa { bits } => format!("RSA-{}", rsa_size(*bits).1),
        _ => "P-256".to_string(),
    }
}

fn rsa_size(bits: usize) -> (RsaKeySize, usize) {
    match bits {
        4096.. => (RsaKeySize::_4096, 4096),
        3072.. => (RsaKeySize::_3072, 3072),
        // Never below 2048, whatever the old key was.
        _ => (RsaKeySize::_2048, 2048),
    }
}

/// A key of the same kind as the current one (P-256 when it is unknown).
fn new_key(kind: &KeyKind) -> Result<KeyPair, rcgen::Error> {
    match kind {
        KeyKind::EcP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyKind::Ed25519 => KeyPair::generate_for(&PKCS_ED25519),
        KeyKind::Rsa { bits } => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, rsa_size(*bits).0),
        _ => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
    }
}

/// A new key and a CSR whose subject copies the current certificate's (CN
/// replaced by `foreign`, if given); also the subject in words.
fn make_csr(cert_pem: &str, kind: &KeyKind, foreign: Option<&str>) -> Result<(KeyPair, String, String), String> {
    let mut subject = subject_of(cert_pem)?;
    if let Some(name) = foreign {
        subject.push(DnType::CommonName, name);
    }
    let words = subject
        .iter()
        .map(|(ty, value)| format!("{}={}", dn_name(ty), dn_text(value)))
        .collect::<Vec<_>>()
        .join(", ");
    let key = new_key(kind).map_err(|e| format!("key generation: {e}"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = subject;
    let csr = params.serialize_request(&key).map_err(|e| format!("CSR: {e}"))?;
    let pem = csr.pem().map_err(|e| format!("CSR: {e}"))?;
    Ok((key, pem, words))
}

/// A certificate's subject as rcgen writes it: same attributes, same order,
/// PrintableString kept where it was used.
fn subject_of(cert_pem: &str) -> Result<DistinguishedName, String> {
    use x509_parser::asn1_rs::Tag;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| format!("certificate: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| format!("certificate: {e}"))?;
    let mut dn = DistinguishedName::new();
    for attribute in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or("a subject attribute with an unreadable type")?
            .collect();
        let ty = match oid.as_slice() {
            [2, 5, 4, 3] => DnType::CommonName,
            [2, 5, 4, 6] => DnType::CountryName,
            [2, 5, 4, 7] => DnType::LocalityName,
            [2, 5, 4, 8] => DnType::StateOrProvinceName,
            [2, 5, 4, 10] => DnType::OrganizationName,
            [2, 5, 4, 11] => DnType::OrganizationalUnitName,
            _ => DnType::CustomDnType(oid),
        };
        let text = attribute
            .as_str()
            .map_err(|e| format!("subject attribute {}: {e}", attribute.attr_type()))?;
        let value = match attribute.attr_value().tag() {
            Tag::PrintableString => DnValue::PrintableString(text.try_into().map_err(|e| format!("{e}"))?),
            _ => DnValue::Utf8String(text.to_string()),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

fn dn_name(ty: &DnType) -> String {
    match ty {
        DnType::CommonName => "CN".into(),
        DnType::CountryName => "C".into(),
        DnType::LocalityName => "L".into(),
        DnType::StateOrProvinceName => "ST".into(),
        DnType::OrganizationName => "O".into(),
        DnType::OrganizationalUnitName => "OU".into(),
        DnType::CustomDnType(oid) if oid.as_slice() == [2, 5, 4, 5] => "serialNumber".into(),
        DnType::CustomDnType(oid) => oid.iter().map(u64::to_string).collect::<Vec<_>>().join("."),
        other => format!("{other:?}"),
    }
}

fn dn_text(value: &DnValue) -> String {
    match value {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

/// Checks that the key belongs to the certificate; returns the certificate id
/// (SHA-256 of the DER, hex, as AWS IoT names certificates).
fn check_pair(cert_pem: &str, key_pem: &str) -> Result<String, String> {
    use x509_parser::prelude::FromDer;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| format!("certificate PEM: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("private key PEM: {e}"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    let spki = signing.public_key().ok_or("the private key's public half is unknown")?;
    let (_, public) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).map_err(|e| format!("public key: {e}"))?;
    if public.subject_public_key.data != cert.public_key().subject_public_key.data {
        return Err("the certificate is not for this private key".into());
    }
    Ok(hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)))
}

/// An HTTP client for presigned URLs (https on AWS, http on the emulator).
fn http_agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::WebPki)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// GET a small text object; the URL is left out of errors (it carries a signature).
fn download(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let what = url.split('?').next().unwrap_or_default();
    if url.starts_with("${") {
        return Err(format!(
            "{what}: the URL is still a placeholder (the job has no usable presignedUrlConfig)"
        ));
    }
    let mut response = agent.get(url).call().map_err(|e| format!("GET {what}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {what}: HTTP {}", response.status()));
    }
    response
        .body_mut()
        .with_config()
        .limit(256 * 1024)
        .read_to_string()
        .map_err(|e| format!("GET {what}: {e}"))
}

/// Keeps the old pair as `*.old.pem` (hard links, so `cert.pem` never goes
/// missing), then renames the new pair over `cert.pem` / `key.pem`.
fn swap(dir: &Path) -> std::io::Result<()> {
    for (live, old) in [(KEY, KEY_OLD), (CERT, CERT_OLD)] {
        let staging = dir.join(format!("{old}.tmp"));
        let _ = std::fs::remove_file(&staging);
        std::fs::hard_link(dir.join(live), &staging)?;
        std::fs::rename(&staging, dir.join(old))?;
    }
    std::fs::rename(dir.join(KEY_NEW), dir.join(KEY))?;
    std::fs::rename(dir.join(CERT_NEW), dir.join(CERT))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misbehaviours_parse() {
        assert_eq!(parse_misbehave("fail"), Ok(Misbehave::Fail));
        assert_eq!(parse_misbehave("never-answer"), Ok(Misbehave::NeverAnswer));
        assert_eq!(
            parse_misbehave("foreign-csr=other-1"),
            Ok(Misbehave::ForeignCsr("other-1".into()))
        );
        assert!(parse_misbehave("foreign-csr=").is_err());
        assert!(parse_misbehave("sulk").is_err());
    }

    #[test]
    fn a_csr_copies_the_subject_and_keeps_the_key_kind() -> Result<(), Box<dyn std::error::Error>> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "dev-7");
        params.distinguished_name.push(DnType::OrganizationName, "Acme");
        params
            .distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-7");
        let cert = params.self_signed(&key)?;
        let old = Certificate::from_pem(&cert.pem())?;
        let (new_key, csr, words) = make_csr(&cert.pem(), &old.key, None)?;
        assert_eq!(words, "CN=dev-7, O=Acme, serialNumber=SN-7");
        let parsed = onboarding_domain::CertificateRequest::from_pem(&csr)?;
        assert!(parsed.signature_valid);
        assert_eq!(parsed.key, KeyKind::EcP384);
        assert_eq!(parsed.subject.get(SubjectField::SerialNumber), Some("SN-7"));
        assert_ne!(new_key.serialize_pem(), key.serialize_pem());

        let (_, csr, words) = make_csr(&cert.pem(), &old.key, Some("someone-else"))?;
        assert!(words.starts_with("CN=someone-else"), "{words}");
        let parsed = onboarding_domain::CertificateRequest::from_pem(&csr)?;
        assert_eq!(parsed.subject.get(SubjectField::CommonName), Some("someone-else"));
        assert_eq!(parsed.subject.get(SubjectField::Organization), Some("Acme"));
        Ok(())
    }

    #[test]
    fn a_certificate_is_checked_against_its_key() -> Result<(), Box<dyn std::error::Error>> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = CertificateParams::new(vec!["x".to_string()])?.self_signed(&key)?;
        let id = check_pair(&cert.pem(), &key.serialize_pem())?;
        assert_eq!(id, Certificate::from_pem(&cert.pem())?.fingerprint);
        assert!(check_pair(&cert.pem(), &other.serialize_pem()).is_err());
        Ok(())
    }

    #[test]
    fn status_details_values_are_clean() {
        assert_eq!(detail_value("a\nb"), "a b");
        assert_eq!(detail_value(""), "-");
        assert_eq!(detail_value(&"x".repeat(2000)).len(), 512);
    }
}
