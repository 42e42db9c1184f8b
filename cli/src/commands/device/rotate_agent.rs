//! `onboard device rotate-agent`: a simulated device that follows the
//! certificate-rotation protocol over MQTT, through `onboarding_device`'s
//! rotation agent; this module reads the arguments and the device's files,
//! prints the steps and the summary, and chooses the exit code.
//!
//! The agent takes the next pending job through the AWS IoT Jobs MQTT API, obtains
//! new credentials (a CSR answered on the device's answer topic, or the
//! presigned URLs of a server-keygen job), stages them beside the current
//! ones, proves them with a new connection under the same client id, and only
//! then swaps the files and confirms the job over the new connection. Any
//! failure leaves `cert.pem` / `key.pem` as they were.
//!
//! Exit codes: 0 rotated; 1 refused, failed, no job or timed out (and bad
//! input); 3 AWS refused a Jobs request, a download or the broker refused the
//! current credentials.

use std::path::PathBuf;
use std::time::Duration;

use onboarding_device::files::{CERT, KEY};
use onboarding_device::{Agent, Device, Misbehave, Outcome, Report};
use onboarding_domain::{Certificate, Strategy, SubjectField};
use serde_json::json;

use crate::Cli;
use crate::error::CliError;
use crate::files::read;

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
    pub broker: crate::commands::device::connect::BrokerArgs,
    /// Give up after this many seconds: waiting for a job, or for the answer to the CSR.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub deadline: u64,
    /// Misbehave, for tests of the backend: `never-answer` (take the job and
    /// stay silent), `fail` (report the job FAILED at once), `foreign-csr=NAME`
    /// (a CSR whose CN is NAME).
    #[arg(long, value_parser = parse_misbehave, value_name = "never-answer|fail|foreign-csr=NAME")]
    pub misbehave: Option<Misbehave>,
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
    let config = onboarding_device::client_config(&broker.server_ca_pem, &cert_pem, &key_pem)
        .map_err(|e| CliError::Input(format!("the credentials in {} are unusable: {e}", args.dir.display())))?;
    let started = std::time::Instant::now();
    let agent = Agent {
        dir: args.dir.clone(),
        broker,
        device: Device {
            name: thing,
            cert_pem,
            key_pem,
        },
        certificate,
        patience: Duration::from_secs(args.deadline),
        misbehave: args.misbehave.clone(),
    };
    let json = cli.json;
    // One human line per step (on stderr under `--json`, so stdout stays JSON).
    let step = |line: &str| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let report = agent.run(config, &step).await;
    finish(json, &report, started.elapsed().as_secs_f64())
}

/// The summary, and the exit code: 0 rotated, 3 when AWS refused a request,
/// 1 otherwise.
fn finish(json: bool, report: &Report, seconds: f64) -> Result<(), CliError> {
    if json {
        let mut summary = json!({
            "thing": report.thing,
            "jobId": report.job_id,
            "strategy": report.strategy.map(Strategy::as_str),
            "outcome": report.outcome.as_str(),
            "oldCertificateId": report.old_certificate_id,
            "newCertificateId": report.new_certificate_id,
            "seconds": seconds,
        });
        if let Some(m) = report.outcome.error() {
            summary["error"] = m.into();
        }
        println!("{summary}");
    } else if matches!(report.outcome, Outcome::Rotated) {
        println!("{}: rotated in {seconds:.1} s", report.thing);
    }
    match &report.outcome {
        Outcome::Rotated => Ok(()),
        Outcome::Refused(m) | Outcome::Failed(m) | Outcome::NoJob(m) | Outcome::TimedOut(m) => {
            Err(CliError::Input(m.clone()))
        }
        Outcome::Aws(m) => Err(CliError::Aws(m.clone())),
    }
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
    fn outcomes_choose_the_exit_code() {
        let report = |outcome| Report {
            outcome,
            thing: "sensor-1".into(),
            job_id: None,
            strategy: None,
            old_certificate_id: "old".into(),
            new_certificate_id: None,
        };
        assert!(finish(true, &report(Outcome::Rotated), 1.0).is_ok());
        for outcome in [
            Outcome::Refused("r".into()),
            Outcome::Failed("f".into()),
            Outcome::NoJob("n".into()),
            Outcome::TimedOut("t".into()),
        ] {
            assert_eq!(finish(true, &report(outcome), 1.0).map_err(|e| e.exit_code()), Err(1));
        }
        let aws = finish(true, &report(Outcome::Aws("a".into())), 1.0);
        assert_eq!(
            aws.map_err(|e| (e.exit_code(), e.to_string())),
            Err((3, "a".to_string()))
        );
    }
}
