//! `onboard fleet import`: existing device certificates registered with AWS
//! IoT and provisioned by the registrar, in bulk (a migration, a batch bought
//! in advance). The decisions are the domain's (`Importer`, the registrar's
//! checks and provisioning); this module reads the manifest and the
//! certificate files, keeps the state file, shows progress and writes the
//! report. See docs/import.md.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use onboarding_aws::{ApiPacer, ApiQuotas, DynamoInventory, IotAdapter, S3CredentialsStore};
use onboarding_domain::{
    CERTIFICATE_UNREADABLE, DEFAULT_CLOCK_SKEW_SECS, ImportError, ImportJournal, ImportMode, ImportNaming,
    ImportReport, ImportRow, ImportSettings, ImportState, Importer, MANIFEST_INVALID, ManifestFormat, PortError,
    PortErrorKind, PortResult, Registrar, RegistrarSettings, RowInput, RowOutcome, RowProblem, RowReport,
    parse_manifest,
};
use serde_json::json;

use crate::Cli;
use crate::error::CliError;

/// The largest certificate file read (AWS IoT takes PEMs up to 65,536 bytes).
const MAX_CERTIFICATE_BYTES: u64 = 65_536;
/// The largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

/// `onboard fleet import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The manifest: CSV with a header (`certificate`, `thingName`,
    /// `profile`, `attributes`) or JSON lines; paths relative to its directory.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "certs",
        required_unless_present = "certs"
    )]
    pub manifest: Option<PathBuf>,
    /// Every `*.pem` and `*.crt` file in this directory, one certificate each.
    #[arg(long, value_name = "DIR", requires = "profile")]
    pub certs: Option<PathBuf>,
    /// The device profile of rows that name none (required with --certs;
    /// without it, a manifest row without a profile takes its CA's binding).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Register with RegisterCertificateWithoutCA (multi-account, SNI): every
    /// certificate must be signed by this CA, bound to a profile here.
    #[arg(long, value_name = "CA_ID")]
    pub without_ca: Option<String>,
    /// The state file (default: next to the manifest or directory,
    /// `<name>.import-state.jsonl`). Running again skips the rows it says
    /// are finished.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// The failures report, CSV (default: `<name>.import-failures.csv`
    /// beside the state file's default place).
    #[arg(long, value_name = "FILE")]
    pub failures: Option<PathBuf>,
    /// Rows in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// The credentials bucket (the stack's CredentialsBucketName output).
    #[arg(long, env = "ONBOARD_BUCKET", value_name = "NAME")]
    pub bucket: String,
    /// The KMS key requested on every credentials record (the stack's CredentialsKeyArn output).
    #[arg(long, env = "ONBOARD_KMS_KEY", value_name = "ID")]
    pub kms_key: String,
    /// Key prefix of credentials records, as the registrar's CREDENTIALS_PREFIX.
    #[arg(long, default_value = "credentials/")]
    pub credentials_prefix: String,
    /// IoT quotas above AWS's defaults (`Action=PerSecond,...`), as the
    /// functions' IOT_API_QUOTAS; the import paces every IoT call to them.
    #[arg(long, default_value = "", value_name = "QUOTAS")]
    pub iot_quotas: String,
    /// How many callers share the quotas (the import takes 1/N of each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub iot_share: u32,
}

/// The state file: one JSON line per step of a row, appended, flushed and
/// synced before the call it announces (or after the step it records).
struct FileJournal(Mutex<File>);

impl FileJournal {
    fn open(path: &Path) -> Result<Self, CliError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| CliError::Input(format!("cannot open the state file {}: {e}", path.display())))?;
        Ok(Self(Mutex::new(file)))
    }
}

impl ImportJournal for FileJournal {
    async fn append(&self, line: &str) -> PortResult<()> {
        let mut file = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        file.write_all(&bytes)
            .and_then(|()| file.flush())
            .and_then(|()| file.sync_data())
            .map_err(|e| PortError::new("StateFile", PortErrorKind::Transient, e.to_string()))
    }
}

pub async fn run(args: &ImportArgs, cli: &Cli) -> Result<(), CliError> {
    let (rows, base) = match (&args.manifest, &args.certs) {
        (Some(manifest), _) => (manifest_rows(manifest)?, manifest.clone()),
        (None, Some(dir)) => (directory_rows(dir)?, dir.clone()),
        (None, None) => return Err(CliError::Input("pass --manifest FILE or --certs DIR".into())),
    };
    let base = base.to_string_lossy().trim_end_matches('/').to_string();
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{base}.import-state.jsonl")));
    let failures_path = args
        .failures
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{base}.import-failures.csv")));
    let state = match std::fs::read_to_string(&state_path) {
        Ok(text) => ImportState::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ImportState::default(),
        Err(e) => {
            return Err(CliError::Input(format!(
                "cannot read the state file {}: {e}",
                state_path.display()
            )));
        }
    };
    if state.unreadable_lines > 0 {
        eprintln!(
            "state file {}: {} line(s) unreadable (a write cut short); their rows are redone",
            state_path.display(),
            state.unreadable_lines
        );
    }
    let journal = FileJournal::open(&state_path)?;
    let quotas = ApiQuotas::parse(&args.iot_quotas).map_err(|e| CliError::Input(e.to_string()))?;

    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.paced_sdk_config().await;
    // Built as the functions build the registrar (jitr-registrar `build`),
    // over the same adapters, paced to the account's quotas.
    let iot = IotAdapter::paced(aws_sdk_iot::Client::new(&sdk), ApiPacer::new(&quotas, args.iot_share));
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), &table);
    let store = S3CredentialsStore::new(
        onboarding_aws::s3_client(&sdk, cli.aws.endpoint_url.is_some()),
        &args.bucket,
        &args.kms_key,
    );
    let registrar = Registrar::new(
        iot.clone(),
        iot.clone(),
        store,
        inventory.clone(),
        RegistrarSettings {
            credentials_prefix: args.credentials_prefix.clone(),
            ..RegistrarSettings::default()
        },
    );
    let settings = ImportSettings {
        mode: match &args.without_ca {
            Some(ca) => ImportMode::WithoutCa {
                ca_certificate_id: ca.clone(),
            },
            None => ImportMode::UnderCa,
        },
        default_profile: args.profile.clone(),
        concurrency: usize::from(args.concurrency),
        clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
    };
    let importer = Importer::new(iot, inventory, &registrar, journal, settings);

    let total = rows.len() as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let counts = Mutex::new((0usize, 0usize, 0usize, 0usize));
    let plain = !console_is_terminal();
    let progress = |row: &RowReport| {
        let mut c = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match row.outcome {
            RowOutcome::Provisioned { .. } => c.0 += 1,
            RowOutcome::AlreadyDone { .. } => c.1 += 1,
            RowOutcome::Rejected { .. } => c.2 += 1,
            RowOutcome::Failed { .. } => c.3 += 1,
        }
        let message = format!("provisioned {} already {} rejected {} failed {}", c.0, c.1, c.2, c.3);
        if let Some((code, detail)) = row.outcome.reason() {
            let line = format!(
                "line {} {}: {} {code}: {detail}",
                row.line,
                row.source,
                row.outcome.label()
            );
            // A hidden bar (stderr not a terminal) prints nothing.
            match plain {
                true => eprintln!("{line}"),
                false => bar.println(line),
            }
        }
        bar.set_message(message.clone());
        bar.inc(1);
        let done = c.0 + c.1 + c.2 + c.3;
        if plain && (done.is_multiple_of(500) || done as u64 == total) {
            eprintln!("{done}/{total} rows: {message}");
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let report = importer.run(rows, &state, now, &progress).await.map_err(|e| match e {
        ImportError::Config(e) | ImportError::Ca { error: e, .. } => CliError::Aws(e.to_string()),
        other => CliError::Input(other.to_string()),
    })?;
    bar.finish_and_clear();
    write_failures(&failures_path, &report)?;
    print_report(&report, &failures_path, &state_path, cli.json);
    let counts = report.counts();
    let failed = counts.get("failed").copied().unwrap_or_default();
    let rejected = counts.get("rejected").copied().unwrap_or_default();
    match (failed, rejected) {
        (0, 0) => Ok(()),
        (0, r) => Err(CliError::Input(format!(
            "{r} row(s) rejected; see {}",
            failures_path.display()
        ))),
        (f, _) => Err(CliError::Aws(format!(
            "{f} row(s) failed (AWS calls); run the same command again to continue; see {}",
            failures_path.display()
        ))),
    }
}

fn console_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Reads at most `limit` bytes of a file.
fn read_limited(path: &Path, limit: u64) -> Result<String, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(text)
}

fn certificate_input(path: &Path) -> Result<String, RowProblem> {
    read_limited(path, MAX_CERTIFICATE_BYTES).map_err(|problem| RowProblem {
        code: CERTIFICATE_UNREADABLE,
        detail: format!("{}: {problem}", path.display()),
    })
}

fn manifest_rows(manifest: &Path) -> Result<Vec<ImportRow>, CliError> {
    let text = read_limited(manifest, MAX_MANIFEST_BYTES)
        .map_err(|e| CliError::Input(format!("cannot read the manifest {}: {e}", manifest.display())))?;
    let name = manifest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let format = ManifestFormat::detect(&name, &text);
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let parsed =
        parse_manifest(&text, format).map_err(|e| CliError::Input(format!("manifest {}: {e}", manifest.display())))?;
    Ok(parsed
        .into_iter()
        .map(|row| match row {
            Ok(row) => {
                let path = dir.join(&row.certificate);
                ImportRow {
                    line: row.line,
                    source: row.certificate.clone(),
                    input: certificate_input(&path).map(|pem| RowInput {
                        pem,
                        profile: row.profile,
                        naming: ImportNaming {
                            thing_name: row.thing_name,
                            attributes: row.attributes,
                        },
                    }),
                }
            }
            Err(e) => ImportRow {
                line: e.line,
                source: String::new(),
                input: Err(RowProblem {
                    code: MANIFEST_INVALID,
                    detail: e.to_string(),
                }),
            },
        })
        .collect())
}

fn directory_rows(dir: &Path) -> Result<Vec<ImportRow>, CliError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::Input(format!("cannot read the directory {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext.eq_ignore_ascii_case("pem") || ext.eq_ignore_ascii_case("crt"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(CliError::Input(format!("no *.pem or *.crt file in {}", dir.display())));
    }
    Ok(paths
        .iter()
        .enumerate()
        .map(|(i, path)| ImportRow {
            line: i + 1,
            source: path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            input: certificate_input(path).map(|pem| RowInput {
                pem,
                profile: None,
                naming: ImportNaming::default(),
            }),
        })
        .collect())
}

/// One CSV field, quoted when it needs to be.
fn csv_field(value: &str) -> String {
    // Newlines would split a row; nothing an operator needs is lost.
    let value = value.replace(['\r', '\n'], " ");
    if value.contains([',', '"']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn write_failures(path: &Path, report: &ImportReport) -> Result<(), CliError> {
    let mut text = String::from("row,certificate,reason,detail\n");
    for row in report.failures() {
        if let Some((code, detail)) = row.outcome.reason() {
            text.push_str(&format!(
                "{},{},{},{}\n",
                row.line,
                csv_field(&row.source),
                csv_field(code),
                csv_field(detail)
            ));
        }
    }
    std::fs::write(path, text)
        .map_err(|e| CliError::Input(format!("cannot write the failures report {}: {e}", path.display())))
}

fn print_report(report: &ImportReport, failures: &Path, state: &Path, json: bool) {
    let counts = report.counts();
    let get = |label: &str| counts.get(label).copied().unwrap_or_default();
    if json {
        println!(
            "{}",
            json!({
                "rows": report.rows.len(),
                "provisioned": get("provisioned"),
                "alreadyDone": get("already_done"),
                "rejected": get("rejected"),
                "rejectedByReason": report.rejections(),
                "failed": get("failed"),
                "failuresFile": failures.display().to_string(),
                "stateFile": state.display().to_string(),
            })
        );
        return;
    }
    println!("rows                {:>8}", report.rows.len());
    println!("provisioned         {:>8}", get("provisioned"));
    println!("already done        {:>8}", get("already_done"));
    println!("rejected            {:>8}", get("rejected"));
    for (code, n) in report.rejections() {
        println!("  {code:<34} {n:>8}");
    }
    println!("failed              {:>8}", get("failed"));
    println!("failures: {}", failures.display());
    println!("state:    {}", state.display());
}
