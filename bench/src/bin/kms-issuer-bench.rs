//! What the `kmsCa` rotation issuer adds per issued certificate over the
//! `amazon` issuer, and the KMS requests it makes (issue 15).
//!
//! One emulator (`AUTH=true`), a recording proxy in front of it (adding
//! `--latency-ms` to every request, 0 by default), a P-256 KMS key and the
//! fleet CA self-signed through it and registered with IoT. N device CSRs are
//! made and checked first (proof of possession). Each is then issued twice,
//! alternately, through the same adapters and in the same order as
//! `CsrIssuer` does:
//! - `amazon`: `CreateCertificateFromCsr` (`RotationIot::certificate_from_csr`);
//! - `kmsCa`: `DescribeCACertificate`, `issue_device_certificate` through
//!   `KmsSigner` (one `kms:Sign`; `kms:GetPublicKey` once per adapter, i.e.
//!   per warm container), `RegisterCertificate` under the CA,
//!   `DescribeCertificate` (`FleetCaAdapter`, `RotationIot::certificate`).
//!
//! Reports the time of each path per certificate (p50, p99, max, total), the
//! difference, the `kmsCa` time by step, and the requests the proxy saw by
//! operation, for one warm adapter serving every certificate and for a cold
//! adapter per certificate. Every `kmsCa` certificate is checked to chain to
//! the CA and to be registered under it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use onboarding_aws::{
    CaKeySpec, FleetCaAdapter, KmsSigner, RotationIotAdapter, create_ca_key, register_ca_certificate,
};
use onboarding_bench::{Args, BenchResult, Table, f, ms, operation_name, summarize};
use onboarding_domain::{
    CaName, CaSigners, Certificate, CertificateImport, CertificateRegistry, CertificateRequest, CertificateSigner,
    CertificateStatus, IssuanceSettings, PortError, PortErrorKind, PortResult, Registration, RotationIot,
    SignatureAlgorithm, SigningKey, issue_device_certificate, self_signed_ca_certificate,
};
use onboarding_test_support::emulator::{Emulator, sdk_config_for};
use onboarding_test_support::proxy::{Proxy, RecordedRequest};
use onboarding_test_support::rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

const USAGE: &str = "kms-issuer-bench: time added per certificate by the kmsCa issuer, and its KMS requests

usage: kms-issuer-bench [--certificates N] [--cold C] [--latency-ms L]

  --certificates N   certificates issued by each issuer, one warm adapter (default 200)
  --cold C           certificates issued by kmsCa with a new adapter each (cold containers; default 20)
  --latency-ms L     latency the proxy adds to every AWS request (default 0)";

/// The profile's `validityDays` in the benchmark.
const VALIDITY_DAYS: u32 = 365;
/// As the issuer backdates (`KMS_CA_BACKDATE_SECS`).
const BACKDATE_SECS: i64 = 3_600;

/// The time of one `kmsCa` issuance, by step.
#[derive(Default)]
struct KmsSteps {
    describe_ca: Vec<f64>,
    sign: Vec<f64>,
    register: Vec<f64>,
    describe: Vec<f64>,
    total: Vec<f64>,
}

/// The adapters one issuer function container holds.
struct Container {
    iot: RotationIotAdapter,
    fleet_ca: FleetCaAdapter,
}

impl Container {
    fn new(sdk: &aws_config::SdkConfig, key_arn: &str) -> Self {
        let iot = aws_sdk_iot::Client::new(sdk);
        Self {
            iot: RotationIotAdapter::new(iot.clone(), aws_sdk_iotdataplane::Client::new(sdk), None),
            fleet_ca: FleetCaAdapter::new(iot, aws_sdk_kms::Client::new(sdk), Some(key_arn.to_string())),
        }
    }
}

/// A P-256 key in this process: the local share of an issuance (DER build,
/// signature verification, parsing) without any KMS round trip.
struct LocalSigner {
    key: EcdsaKeyPair,
    public: SigningKey,
}

impl LocalSigner {
    fn generate() -> BenchResult<Self> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
            .map_err(|_| "no P-256 key")?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).map_err(|_| "PKCS#8")?;
        let public_key_der = AsDer::<PublicKeyX509Der>::as_der(key.public_key())
            .map_err(|_| "SPKI")?
            .as_ref()
            .to_vec();
        Ok(Self {
            key,
            public: SigningKey {
                algorithm: SignatureAlgorithm::EcdsaP256Sha256,
                public_key_der,
            },
        })
    }
}

impl CertificateSigner for LocalSigner {
    async fn signing_key(&self) -> PortResult<SigningKey> {
        Ok(self.public.clone())
    }

    async fn sign(&self, message: &[u8]) -> PortResult<Vec<u8>> {
        self.key
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| PortError::new("sign", PortErrorKind::Invalid, "aws-lc-rs refused"))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A device's CSR (P-256, as the device agents make them), checked.
fn csr(name: &str) -> BenchResult<(String, CertificateRequest)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let pem = params.serialize_request(&key)?.pem()?;
    let request = CertificateRequest::from_pem(&pem)?;
    if !request.signature_valid {
        return Err(format!("the CSR of {name} has no proof of possession").into());
    }
    Ok((pem, request))
}

/// The issuer's `kmsCa` sequence for one CSR; the issued certificate's id and PEM.
async fn issue_kms_ca(
    container: &Container,
    key_arn: &str,
    ca_id: &str,
    request: &CertificateRequest,
    steps: &mut KmsSteps,
) -> BenchResult<(String, String)> {
    let start = Instant::now();
    let signer = container.fleet_ca.signer(key_arn).ok_or("the key is not allowed")?;
    let ca = container
        .fleet_ca
        .describe_ca_certificate(ca_id)
        .await?
        .ok_or("the CA is not registered")?;
    if ca.status != CertificateStatus::Active {
        return Err("the CA is not ACTIVE".into());
    }
    let ca_certificate = Certificate::from_pem(&ca.pem)?;
    let described_ca = start.elapsed();
    let settings = IssuanceSettings {
        validity_days: VALIDITY_DAYS,
        backdate_secs: BACKDATE_SECS,
    };
    let certificate = issue_device_certificate(signer, &ca_certificate, request, now(), &settings).await?;
    let signed = start.elapsed();
    let pem = certificate.to_pem();
    let id = container
        .fleet_ca
        .register_certificate(&pem, Registration::UnderCa { ca_pem: &ca.pem })
        .await?;
    let registered = start.elapsed();
    container
        .iot
        .certificate(&id)
        .await?
        .ok_or("the registered certificate is not described")?;
    let total = start.elapsed();
    steps.describe_ca.push(ms(described_ca));
    steps.sign.push(ms(signed - described_ca));
    steps.register.push(ms(registered - signed));
    steps.describe.push(ms(total - registered));
    steps.total.push(ms(total));
    Ok((id, pem))
}

/// Requests by operation (`kms:Sign`, `iot:RegisterCertificate`...).
fn by_operation(requests: &[RecordedRequest]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        let kms = request
            .header("x-amz-target")
            .is_some_and(|t| t.starts_with("TrentService."));
        let name = match operation_name(request).as_str() {
            "POST /certificates" => "iot:CreateCertificateFromCsr".to_string(),
            "POST /certificate/register" => "iot:RegisterCertificate".to_string(),
            other if kms => format!("kms:{other}"),
            other => format!("iot:{other}"),
        };
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn counts_table(label: &str, counts: &BTreeMap<String, usize>, certificates: usize) -> String {
    let mut table = Table::new(&["operation", "requests", "per certificate"]);
    for (operation, count) in counts {
        table.row(vec![
            operation.clone(),
            count.to_string(),
            f(*count as f64 / certificates as f64, 3),
        ]);
    }
    format!("{label} ({certificates} certificates)\n\n{}", table.render())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    onboarding_bench::exit("kms-issuer-bench", run().await)
}

async fn run() -> BenchResult {
    let args = Args::parse(USAGE, &["certificates", "cold", "latency-ms"])?;
    let n: usize = args.number("certificates", 200)?;
    let cold: usize = args.number("cold", 20)?;
    let latency = Duration::from_millis(args.number("latency-ms", 0)?);
    if n == 0 {
        return Err("--certificates must be at least 1".into());
    }

    let emulator = Emulator::start().await?;
    let direct = emulator.sdk_config().await;
    // The fleet CA: a KMS key, the certificate self-signed through it, registered with IoT.
    let key_arn = create_ca_key(&direct, CaKeySpec::P256, "bench fleet CA key").await?;
    let setup_signer = KmsSigner::from_config(&direct, key_arn.clone());
    let name = CaName {
        common_name: "Bench Fleet CA".into(),
        organization: Some("Acme".into()),
    };
    let ca_settings = IssuanceSettings {
        validity_days: 3_650,
        backdate_secs: 300,
    };
    let ca = self_signed_ca_certificate(&setup_signer, &name, now(), &ca_settings).await?;
    let iot = aws_sdk_iot::Client::new(&direct);
    let code = iot
        .get_registration_code()
        .send()
        .await?
        .registration_code
        .ok_or("no registration code")?;
    let (_, verification_csr) = csr(&code)?;
    let verification = issue_device_certificate(&setup_signer, &ca, &verification_csr, now(), &ca_settings).await?;
    let ca_id = register_ca_certificate(&iot, &ca.to_pem(), &verification.to_pem(), None).await?;

    let started = Instant::now();
    let csrs = (0..n + cold)
        .map(|i| csr(&format!("bench-device-{i:05}")))
        .collect::<BenchResult<Vec<_>>>()?;
    println!(
        "kms-issuer-bench: {} CSRs made and checked in {:.1} s; latency added per request: {} ms",
        csrs.len(),
        started.elapsed().as_secs_f64(),
        latency.as_millis()
    );

    // The local share: the same issuance with a key in this process.
    let local = LocalSigner::generate()?;
    let local_ca = self_signed_ca_certificate(&local, &name, now(), &ca_settings).await?;
    let settings = IssuanceSettings {
        validity_days: VALIDITY_DAYS,
        backdate_secs: BACKDATE_SECS,
    };
    let mut local_times = Vec::with_capacity(n);
    for (_, request) in &csrs[..n] {
        let start = Instant::now();
        issue_device_certificate(&local, &local_ca, request, now(), &settings).await?;
        local_times.push(ms(start.elapsed()));
    }

    let proxy = Proxy::start(emulator.gateway_port, latency).await?;
    let sdk = sdk_config_for(&proxy.endpoint()).await;

    // Warm: one container (one adapter, one KmsSigner) for every certificate,
    // the two issuers alternating so that drift in the emulator hits both.
    let warm = Container::new(&sdk, &key_arn);
    let mut amazon = Vec::with_capacity(n);
    let mut steps = KmsSteps::default();
    let mut amazon_requests = Vec::new();
    let mut kms_requests = Vec::new();
    let mut issued = Vec::with_capacity(n);
    for (pem, request) in &csrs[..n] {
        proxy.clear();
        let start = Instant::now();
        let from_csr = warm.iot.certificate_from_csr(pem).await?;
        amazon.push(ms(start.elapsed()));
        amazon_requests.extend(proxy.requests());
        if from_csr.certificate_id.is_empty() {
            return Err("CreateCertificateFromCsr returned no id".into());
        }

        proxy.clear();
        issued.push(issue_kms_ca(&warm, &key_arn, &ca_id, request, &mut steps).await?);
        kms_requests.extend(proxy.requests());
    }

    // Cold: a new container per certificate (GetPublicKey again each time).
    let mut cold_steps = KmsSteps::default();
    let mut cold_requests = Vec::new();
    for (_, request) in &csrs[n..] {
        proxy.clear();
        let container = Container::new(&sdk, &key_arn);
        issue_kms_ca(&container, &key_arn, &ca_id, request, &mut cold_steps).await?;
        cold_requests.extend(proxy.requests());
    }

    // What was measured is real: each certificate chains to the CA and IoT
    // holds it under the CA.
    for (id, pem) in &issued {
        let certificate = Certificate::from_pem(pem)?;
        if !certificate.is_signed_by(&ca) || !certificate.issuer_matches_subject_of(&ca) {
            return Err(format!("certificate {id} does not chain to the fleet CA").into());
        }
    }
    let (_, last_pem) = issued.last().ok_or("nothing issued")?;
    let last = Certificate::from_pem(last_pem)?;
    let described = iot
        .describe_certificate()
        .certificate_id(&last.fingerprint)
        .send()
        .await?
        .certificate_description
        .ok_or("the last certificate is not described")?;
    if described.ca_certificate_id.as_deref() != Some(ca_id.as_str()) {
        return Err("the last certificate is not registered under the fleet CA".into());
    }

    let summary = |samples: &[f64]| summarize(samples).ok_or("no samples");
    let (a, k) = (summary(&amazon)?, summary(&steps.total)?);
    let mut table = Table::new(&["issuer", "certificates", "p50 ms", "p99 ms", "max ms", "total s"]);
    for (label, s, samples) in [
        ("amazon (CreateCertificateFromCsr)", a, &amazon),
        ("kmsCa (warm container)", k, &steps.total),
    ] {
        table.row(vec![
            label.into(),
            s.n.to_string(),
            f(s.p50, 2),
            f(s.p99, 2),
            f(s.max, 2),
            f(samples.iter().sum::<f64>() / 1000.0, 2),
        ]);
    }
    if let Ok(c) = summary(&cold_steps.total) {
        table.row(vec![
            "kmsCa (cold container each)".into(),
            c.n.to_string(),
            f(c.p50, 2),
            f(c.p99, 2),
            f(c.max, 2),
            f(cold_steps.total.iter().sum::<f64>() / 1000.0, 2),
        ]);
    }
    println!("\n{}", table.render());
    println!(
        "time added per certificate by kmsCa (warm): p50 {} ms, p99 {} ms, total over {n}: {} s",
        f(k.p50 - a.p50, 2),
        f(k.p99 - a.p99, 2),
        f(
            (steps.total.iter().sum::<f64>() - amazon.iter().sum::<f64>()) / 1000.0,
            2
        )
    );

    let mut by_step = Table::new(&["kmsCa step (warm)", "p50 ms", "p99 ms"]);
    for (label, samples) in [
        (
            "(local share: build + sign + verify + parse, key in process)",
            &local_times,
        ),
        ("DescribeCACertificate", &steps.describe_ca),
        ("build + kms:Sign + verify", &steps.sign),
        ("RegisterCertificate", &steps.register),
        ("DescribeCertificate", &steps.describe),
    ] {
        let s = summary(samples)?;
        by_step.row(vec![label.into(), f(s.p50, 2), f(s.p99, 2)]);
    }
    println!("\n{}", by_step.render());

    println!("\n{}", counts_table("amazon", &by_operation(&amazon_requests), n));
    println!(
        "\n{}",
        counts_table("kmsCa, one warm container", &by_operation(&kms_requests), n)
    );
    if cold > 0 {
        println!(
            "\n{}",
            counts_table("kmsCa, a cold container each", &by_operation(&cold_requests), cold)
        );
    }
    Ok(())
}
