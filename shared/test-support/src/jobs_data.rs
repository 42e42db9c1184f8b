//! The IoT Jobs data plane as a device calls it over HTTPS:
//! `UpdateJobExecution`, SigV4-signed for `iot-jobs-data` with the
//! emulator's keys, straight to the emulator.

use serde_json::Value;

use crate::emulator::{ACCESS_KEY, REGION, SECRET_KEY};
use crate::world::WorldError;

/// Reports a job execution's status (`IN_PROGRESS`, `SUCCEEDED`, `FAILED`…)
/// for `thing` to the emulator on `gateway_port`, as the device would.
///
/// # Errors
/// A refused signature, an unreachable emulator, or a non-2xx answer (with
/// its body).
pub async fn update_job_execution(
    gateway_port: u16,
    thing: &str,
    job_id: &str,
    status: &str,
    details: Value,
) -> Result<(), WorldError> {
    let url = format!("http://127.0.0.1:{gateway_port}/things/{thing}/jobs/{job_id}");
    let body = serde_json::json!({"status": status, "statusDetails": details}).to_string();
    tokio::task::spawn_blocking(move || signed_post(&url, &body)).await?
}

/// A POST to the IoT Jobs data plane, signed as the account's keys sign it.
fn signed_post(url: &str, body: &str) -> Result<(), WorldError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;

    let identity = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("iot-jobs-data")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let headers = [("content-type", "application/json")];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    let mut request = ureq::http::Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/json");
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let request = request.body(body.to_string())?;
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.run(request)?;
    let status = response.status();
    if !status.is_success() {
        let text = response.body_mut().read_to_string().unwrap_or_default();
        return Err(format!("UpdateJobExecution: {status}: {text}").into());
    }
    Ok(())
}
