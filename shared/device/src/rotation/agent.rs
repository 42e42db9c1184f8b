//! The agent's run: the Jobs MQTT API, the two strategies, the switch to
//! the new credentials and the rollback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use onboarding_domain::{
    CONFIRMATION_FIELD, CsrAnswer, CsrMessage, JOB_OPERATION, JobDocument, Strategy, answer_topic, csr_topic,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::csr::{check_pair, key_name, make_csr};
use super::download::{download, http_agent};
use super::store::{self, CERT, CERT_NEW, CERT_OLD, KEY_NEW, KEY_OLD};
use super::{Agent, Misbehave, Outcome, Report};
use crate::mqtt::Conn;

/// One run of an [`Agent`]: what it has found out so far.
pub(super) struct Run<'a> {
    agent: &'a Agent,
    progress: &'a dyn Fn(&str),
    thing: String,
    job_id: Option<String>,
    strategy: Option<Strategy>,
    old_certificate_id: String,
    new_certificate_id: Option<String>,
    deadline: Instant,
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

impl<'a> Run<'a> {
    pub(super) fn new(agent: &'a Agent, progress: &'a dyn Fn(&str)) -> Self {
        Self {
            agent,
            progress,
            thing: agent.device.name.clone(),
            job_id: None,
            strategy: None,
            old_certificate_id: agent.certificate.fingerprint.clone(),
            new_certificate_id: None,
            deadline: Instant::now() + agent.patience,
        }
    }

    /// Carries out the next rotation job.
    pub(super) async fn rotate(mut self, config: Arc<rustls::ClientConfig>) -> Report {
        let outcome = self.take_and_rotate(config).await;
        Report {
            outcome,
            thing: self.thing,
            job_id: self.job_id,
            strategy: self.strategy,
            old_certificate_id: self.old_certificate_id,
            new_certificate_id: self.new_certificate_id,
        }
    }

    /// One human line per step.
    fn step(&self, line: impl AsRef<str>) {
        (self.progress)(line.as_ref());
    }

    /// Reports (FAILED, SUCCEEDED) get a little time even after the deadline.
    fn report_deadline(&self) -> Instant {
        self.deadline.max(Instant::now() + Duration::from_secs(10))
    }

    fn thing(&self) -> &str {
        &self.thing
    }

    fn jobs_topic(&self, rest: &str) -> String {
        format!("$aws/things/{}/jobs/{rest}", self.thing)
    }

    async fn take_and_rotate(&mut self, config: Arc<rustls::ClientConfig>) -> Outcome {
        let mut conn = match Conn::open(&self.agent.broker, config, self.thing(), self.deadline).await {
            Ok(conn) => conn,
            Err(e) => {
                return Outcome::Aws(format!(
                    "cannot connect to {}:{} as {} with the current certificate: {e}",
                    self.agent.broker.host,
                    self.agent.broker.port,
                    self.thing()
                ));
            }
        };
        self.step(format!(
            "connected to {}:{} as {} (certificate {})",
            self.agent.broker.host,
            self.agent.broker.port,
            self.thing(),
            short(&self.old_certificate_id)
        ));
        let taken = match self.take_job(&mut conn).await {
            Ok(taken) => taken,
            Err(outcome) => return outcome,
        };
        self.job_id = Some(taken.job_id.clone());
        let document = match serde_json::from_value::<JobDocument>(taken.document.clone()) {
            Ok(document) if document.version == "1" => document,
            // The protocol says to ignore versions one does not know: left as it is.
            Ok(document) => {
                return Outcome::NoJob(format!(
                    "job {} is a rotation of version {:?}, which this agent does not know (1): left alone",
                    taken.job_id, document.version
                ));
            }
            Err(e) => {
                let detail = format!("the job document does not parse: {e}");
                return self.fail(&mut conn, "DOCUMENT_INVALID", &detail).await;
            }
        };
        self.strategy = Some(document.strategy);
        self.step(format!(
            "job {} IN_PROGRESS: replace certificate {} ({})",
            taken.job_id,
            short(&document.old_certificate_id),
            document.strategy.as_str()
        ));
        match &self.agent.misbehave {
            Some(Misbehave::Fail) => {
                let end = self
                    .fail(&mut conn, "DEVICE_FAILED", "told to fail (--misbehave fail)")
                    .await;
                return match end {
                    Outcome::Failed(_) => Outcome::Failed(format!(
                        "job {} reported FAILED as told (--misbehave fail); credentials unchanged",
                        taken.job_id
                    )),
                    other => other,
                };
            }
            Some(Misbehave::NeverAnswer) => {
                self.step("misbehaving (never-answer): holding the job IN_PROGRESS without a word");
                return match conn.next_on(&[], self.deadline).await {
                    Err(e) => Outcome::Aws(format!("the connection was lost while idle: {e}")),
                    Ok(_) => Outcome::TimedOut(format!(
                        "held job {} IN_PROGRESS until the deadline without answering (--misbehave never-answer)",
                        taken.job_id
                    )),
                };
            }
            _ => {}
        }
        if document.old_certificate_id != self.old_certificate_id {
            return self.already_rotated(conn, &taken.job_id, &document).await;
        }
        let credentials = match document.strategy {
            Strategy::Csr => self.by_csr(&mut conn, &taken.job_id, &document).await,
            Strategy::ServerKeygen => self.by_server_keygen(&mut conn, &document).await,
        };
        let credentials = match credentials {
            Ok(credentials) => credentials,
            Err(outcome) => return outcome,
        };
        self.new_certificate_id = Some(credentials.certificate_id.clone());
        self.switch(conn, &taken.job_id, credentials).await
    }

    /// StartNextPendingJobExecution until a rotation job is IN_PROGRESS, waiting
    /// on notify-next while nothing is pending.
    async fn take_job(&mut self, conn: &mut Conn) -> Result<Taken, Outcome> {
        let (notify, accepted, rejected) = (
            self.jobs_topic("notify-next"),
            self.jobs_topic("start-next/accepted"),
            self.jobs_topic("start-next/rejected"),
        );
        conn.subscribe(&[notify.clone(), accepted.clone(), rejected.clone()], self.deadline)
            .await
            .map_err(|e| Outcome::Aws(e.to_string()))?;
        let mut announced = false;
        loop {
            let token = client_token();
            let request = json!({"clientToken": token, "statusDetails": {"agent": "onboard rotate-agent"}});
            let start = self.jobs_topic("start-next");
            conn.publish(&start, request.to_string().into_bytes(), self.deadline)
                .await
                .map_err(|e| Outcome::Aws(format!("publishing on {start}: {e}")))?;
            let answer = loop {
                match conn.next_on(&[&accepted, &rejected], self.deadline).await {
                    Err(e) => return Err(Outcome::Aws(format!("waiting for the answer to start-next: {e}"))),
                    Ok(None) => return Err(Outcome::TimedOut("no answer to StartNextPendingJobExecution".into())),
                    Ok(Some((topic, payload))) => {
                        let body: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                        if body["clientToken"] == token.as_str() {
                            break (topic, body);
                        }
                    }
                }
            };
            if answer.0 == rejected {
                return Err(Outcome::Aws(format!(
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
                    return Err(Outcome::NoJob(format!(
                        "the next pending job {job_id} is not a certificate rotation (operation {}): left to whatever handles it",
                        document["operation"]
                    )));
                }
                return Ok(Taken { job_id, document });
            }
            if !announced {
                self.step("no job pending; waiting for one (notify-next)");
                announced = true;
            }
            // Wait until notify-next names an execution, then take it.
            loop {
                match conn.next_on(&[&notify], self.deadline).await {
                    Err(e) => return Err(Outcome::Aws(format!("waiting for a job: {e}"))),
                    Ok(None) => {
                        return Err(Outcome::NoJob(format!(
                            "no rotation job for {} within {} s",
                            self.thing,
                            self.agent.patience.as_secs()
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
    async fn fail(&mut self, conn: &mut Conn, reason_code: &str, detail: &str) -> Outcome {
        let job_id = self.job_id.clone().unwrap_or_default();
        let mut details = serde_json::Map::new();
        details.insert("reasonCode".into(), detail_value(reason_code).into());
        if !detail.trim().is_empty() {
            details.insert("detail".into(), detail_value(detail).into());
        }
        match self.update(conn, &job_id, "FAILED", Value::Object(details)).await {
            Ok(()) => {
                self.step(format!("job {job_id} reported FAILED ({reason_code}: {detail})"));
                Outcome::Failed(format!(
                    "{reason_code}: {detail}; job {job_id} reported FAILED, credentials unchanged"
                ))
            }
            // The backend may end the job itself first (it cancels the job
            // of a refused CSR): there is nothing left to report.
            Err(e) if e.contains("InvalidStateTransition") || e.contains("already finished") => {
                self.step(format!(
                    "job {job_id} already ended by the backend ({reason_code}: {detail})"
                ));
                Outcome::Failed(format!(
                    "{reason_code}: {detail}; job {job_id} already ended by the backend, credentials unchanged"
                ))
            }
            Err(e) => Outcome::Aws(format!(
                "{reason_code}: {detail}; and reporting job {job_id} FAILED failed too: {e}"
            )),
        }
    }

    /// UpdateJobExecution and its `update/accepted`.
    async fn update(&self, conn: &mut Conn, job_id: &str, status: &str, details: Value) -> Result<(), String> {
        let deadline = self.report_deadline();
        let (accepted, rejected) = (
            self.jobs_topic(&format!("{job_id}/update/accepted")),
            self.jobs_topic(&format!("{job_id}/update/rejected")),
        );
        conn.subscribe(&[accepted.clone(), rejected.clone()], deadline)
            .await
            .map_err(|e| e.to_string())?;
        let token = client_token();
        let request = json!({"status": status, "statusDetails": details, "clientToken": token});
        let topic = self.jobs_topic(&format!("{job_id}/update"));
        conn.publish(&topic, request.to_string().into_bytes(), deadline)
            .await
            .map_err(|e| format!("publishing on {topic}: {e}"))?;
        loop {
            let Some((answer, payload)) = conn
                .next_on(&[&accepted, &rejected], deadline)
                .await
                .map_err(|e| e.to_string())?
            else {
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
    async fn by_csr(&mut self, conn: &mut Conn, job_id: &str, document: &JobDocument) -> Result<Credentials, Outcome> {
        let (request_topic, answer_topic) = match &document.csr {
            Some(csr) => (csr.request_topic.clone(), csr.answer_topic.clone()),
            None => (csr_topic(self.thing()), answer_topic(self.thing())),
        };
        let foreign = match &self.agent.misbehave {
            Some(Misbehave::ForeignCsr(name)) => Some(name.as_str()),
            _ => None,
        };
        let (key, csr_pem, subject) = match make_csr(&self.agent.device.cert_pem, &self.agent.certificate.key, foreign)
        {
            Ok(made) => made,
            Err(e) => return Err(self.fail(conn, "CSR_FAILED", &e).await),
        };
        if let Err(e) = conn.subscribe(std::slice::from_ref(&answer_topic), self.deadline).await {
            return Err(Outcome::Aws(e.to_string()));
        }
        let message = CsrMessage {
            job_id: job_id.to_string(),
            csr: csr_pem,
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        if let Err(e) = conn.publish(&request_topic, payload, self.deadline).await {
            return Err(Outcome::Aws(format!("publishing the CSR on {request_topic}: {e}")));
        }
        self.step(format!(
            "CSR sent on {request_topic} ({subject}, {} key); waiting on {answer_topic}",
            key_name(&self.agent.certificate.key)
        ));
        let answer = loop {
            match conn.next_on(&[&answer_topic], self.deadline).await {
                Err(e) => return Err(Outcome::Aws(format!("waiting for the answer to the CSR: {e}"))),
                Ok(None) => {
                    return Err(Outcome::TimedOut(format!(
                        "no answer to the CSR on {answer_topic} within {} s; job {job_id} left IN_PROGRESS",
                        self.agent.patience.as_secs()
                    )));
                }
                Ok(Some((_, payload))) => match serde_json::from_slice::<CsrAnswer>(&payload) {
                    Ok(answer) if answer_job(&answer) == job_id => break answer,
                    Ok(_) => {}
                    Err(e) => self.step(format!("ignoring an unreadable answer on {answer_topic}: {e}")),
                },
            }
        };
        match answer {
            CsrAnswer::Refused {
                reason_code, detail, ..
            } => {
                self.step(format!("CSR refused: {reason_code}: {detail}"));
                let end = self.fail(conn, &reason_code, &detail).await;
                Err(match end {
                    Outcome::Failed(_) => Outcome::Refused(format!(
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
                    self.step(format!(
                        "note: the answer names certificate {certificate_id}, its SHA-256 is {id}"
                    ));
                }
                self.step(format!("certificate {} issued", short(&id)));
                Ok(Credentials {
                    cert_pem: certificate_pem,
                    key_pem,
                    certificate_id: id,
                })
            }
        }
    }

    /// The server-keygen strategy: both files through their presigned URLs.
    async fn by_server_keygen(&mut self, conn: &mut Conn, document: &JobDocument) -> Result<Credentials, Outcome> {
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
                    Outcome::Failed(m) => Outcome::Aws(m),
                    other => other,
                });
            }
        };
        let id = match check_pair(&cert_pem, &key_pem) {
            Ok(id) => id,
            Err(e) => return Err(self.fail(conn, "CERTIFICATE_UNUSABLE", &e).await),
        };
        if id != instructions.new_certificate_id {
            self.step(format!(
                "note: the job names certificate {}, the downloaded one is {id}",
                instructions.new_certificate_id
            ));
        }
        self.step(format!("certificate {} and its key downloaded", short(&id)));
        Ok(Credentials {
            cert_pem,
            key_pem,
            certificate_id: id,
        })
    }

    /// Stage, prove with a new connection, swap, confirm, publish.
    async fn switch(&mut self, mut old: Conn, job_id: &str, new: Credentials) -> Outcome {
        let dir = &self.agent.dir;
        if let Err(e) = store::stage(dir, &new.cert_pem, &new.key_pem) {
            return self.fail(&mut old, "STORAGE_FAILED", &e).await;
        }
        self.step(format!(
            "new credentials staged as {CERT_NEW} and {KEY_NEW} in {}",
            dir.display()
        ));
        let config = match crate::client_config(&self.agent.broker.server_ca_pem, &new.cert_pem, &new.key_pem) {
            Ok(config) => config,
            Err(e) => {
                store::discard(dir);
                return self.fail(&mut old, "CERTIFICATE_UNUSABLE", &e.to_string()).await;
            }
        };
        let mut conn = match self.connect_new(config).await {
            Ok(conn) => conn,
            Err(e) => {
                store::discard(dir);
                self.step(format!(
                    "the new certificate was not accepted: {e}; keeping the old one"
                ));
                if old.closed().is_some() {
                    match self.reconnect_old().await {
                        Ok(conn) => old = conn,
                        Err(outcome) => return outcome,
                    }
                }
                return self.fail(&mut old, "NEW_CERTIFICATE_REFUSED", &e).await;
            }
        };
        self.step("connected with the new certificate (same client id)");
        // The broker drops the old session for the new one (same client id).
        drop(old);
        if let Err(e) = store::swap(dir) {
            return self
                .fail(
                    &mut conn,
                    "STORAGE_FAILED",
                    &format!("swapping the credential files: {e}"),
                )
                .await;
        }
        self.step(format!(
            "credentials swapped: {CERT} is {}, the previous pair is {CERT_OLD} / {KEY_OLD}",
            short(&new.certificate_id)
        ));
        self.confirm(conn, job_id, &new.certificate_id).await
    }

    /// A job whose old certificate is not the one in `cert.pem`: a rotation
    /// that got as far as the swap before the agent stopped is confirmed,
    /// anything else is refused.
    async fn already_rotated(&mut self, mut conn: Conn, job_id: &str, document: &JobDocument) -> Outcome {
        let previous = store::previous_certificate_id(&self.agent.dir);
        if previous.as_deref() != Some(document.old_certificate_id.as_str()) {
            let detail = format!(
                "the job replaces certificate {}, but the device uses {}",
                document.old_certificate_id, self.old_certificate_id
            );
            return self.fail(&mut conn, "WRONG_OLD_CERTIFICATE", &detail).await;
        }
        let current = self.old_certificate_id.clone();
        self.step(format!(
            "already rotated: {CERT} is {} and {CERT_OLD} is the job's old certificate; confirming",
            short(&current)
        ));
        self.old_certificate_id = document.old_certificate_id.clone();
        self.new_certificate_id = Some(current.clone());
        self.confirm(conn, job_id, &current).await
    }

    /// Over the new connection: the job SUCCEEDED naming the new certificate,
    /// then one telemetry message with its PUBACK.
    async fn confirm(&mut self, mut conn: Conn, job_id: &str, certificate_id: &str) -> Outcome {
        let details = json!({ CONFIRMATION_FIELD: certificate_id });
        if let Err(e) = self.update(&mut conn, job_id, "SUCCEEDED", details).await {
            return Outcome::Aws(format!(
                "the device uses certificate {certificate_id} now, but confirming job {job_id} failed: {e}"
            ));
        }
        self.step(format!(
            "job {job_id} SUCCEEDED ({CONFIRMATION_FIELD} {})",
            short(certificate_id)
        ));
        let topic = format!("devices/{}/telemetry", self.thing);
        let payload = json!({"rotated": true, "certificateId": certificate_id}).to_string();
        if let Err(e) = conn.publish(&topic, payload.into_bytes(), self.report_deadline()).await {
            return Outcome::Failed(format!(
                "job {job_id} SUCCEEDED, but publishing on {topic} with the new certificate failed: {e}"
            ));
        }
        self.step(format!("published on {topic} with the new certificate (PUBACK)"));
        conn.close().await;
        Outcome::Rotated
    }

    /// The new credentials' first connection, retried briefly (up to 15 s,
    /// within the deadline): AWS IoT may take a moment before a just-activated
    /// certificate is accepted.
    async fn connect_new(&self, config: Arc<rustls::ClientConfig>) -> Result<Conn, String> {
        let until = self.deadline.min(Instant::now() + Duration::from_secs(15));
        let mut delay = Duration::from_millis(300);
        loop {
            let error = match Conn::open(&self.agent.broker, config.clone(), self.thing(), self.report_deadline()).await
            {
                Ok(conn) => return Ok(conn),
                Err(e) => e.to_string(),
            };
            if Instant::now() + delay >= until {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(3));
        }
    }

    /// The old credentials again, after their connection was lost.
    async fn reconnect_old(&self) -> Result<Conn, Outcome> {
        let config = crate::client_config(
            &self.agent.broker.server_ca_pem,
            &self.agent.device.cert_pem,
            &self.agent.device.key_pem,
        )
        .map_err(|e| Outcome::Failed(e.to_string()))?;
        Conn::open(&self.agent.broker, config, self.thing(), self.report_deadline())
            .await
            .map_err(|e| {
                Outcome::Aws(format!(
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

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::cell::RefCell;

    use onboarding_domain::Certificate;

    use super::*;
    use crate::{Broker, Device};

    #[test]
    fn status_details_values_are_clean() {
        assert_eq!(detail_value("a\nb"), "a b");
        assert_eq!(detail_value(""), "-");
        assert_eq!(detail_value(&"x".repeat(2000)).len(), 512);
    }

    #[test]
    fn client_tokens_are_unique_and_short_enough() {
        let (a, b) = (client_token(), client_token());
        assert_ne!(a, b);
        assert!(a.len() <= 64, "{a}");
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }

    /// No broker at all: the current credentials cannot connect, nothing is
    /// taken or touched, and the report says so as an AWS-side failure.
    #[tokio::test]
    async fn without_a_broker_nothing_is_taken_and_nothing_changes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "sensor-9");
        let cert = params.self_signed(&key)?;
        std::fs::write(dir.path().join(CERT), cert.pem())?;
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let agent = Agent {
            dir: dir.path().to_path_buf(),
            broker: Broker {
                host: "127.0.0.1".into(),
                port,
                server_ca_pem: ca.pem(),
            },
            device: Device {
                name: "sensor-9".into(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            },
            certificate: Certificate::from_pem(&cert.pem())?,
            patience: Duration::from_secs(2),
            misbehave: None,
        };
        let config = crate::client_config(&ca.pem(), &cert.pem(), &key.serialize_pem())?;
        let lines = RefCell::new(Vec::new());
        let report = agent
            .run(config, &|line| lines.borrow_mut().push(line.to_string()))
            .await;
        let Outcome::Aws(message) = &report.outcome else {
            panic!("{report:?}");
        };
        assert!(
            message.starts_with(&format!(
                "cannot connect to 127.0.0.1:{port} as sensor-9 with the current certificate: "
            )),
            "{message}"
        );
        assert_eq!(report.outcome.as_str(), "failed");
        assert_eq!(report.thing, "sensor-9");
        assert_eq!(report.job_id, None);
        assert_eq!(report.old_certificate_id, agent.certificate.fingerprint);
        assert!(lines.borrow().is_empty(), "{:?}", lines.borrow());
        assert_eq!(std::fs::read_to_string(dir.path().join(CERT))?, cert.pem());
        assert!(!dir.path().join(CERT_NEW).exists() && !dir.path().join(CERT_OLD).exists());
        Ok(())
    }
}
