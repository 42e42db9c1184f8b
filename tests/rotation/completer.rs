//! `rotation-completer`: the device confirmed its new certificate (a
//! SUCCEEDED job execution naming it), with a crash at each step
//! (`confirmed` recorded, claim moved, old certificate `INACTIVE`, detached
//! from the thing and its policy, its record rotated out, `retired`
//! recorded); the message redelivered converges on `RETIRED`, and so does
//! the rotator's next run when the message is lost. A FAILED job execution,
//! with a crash at each step of the clean-up (new certificate revoked,
//! detached, job canceled, `failed` recorded), converges on `FAILED`.

use onboarding_domain::RecordStatus;
use onboarding_domain::RotationState;
use onboarding_test_support::proxy::Matcher;
use serde_json::{Value, json};

use crate::common::{
    Device, Error, Rig, Step, TestResult, iot, put_rotation, update_certificate, update_claim, update_record,
};
use crate::issuer;

/// The Lambda's handler on one SQS batch; the failed message ids.
async fn invoke(completer: &rotation_completer::Handler, batch: &Value) -> Vec<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let answer = completer.handle_at(batch.clone(), now).await;
    answer["batchItemFailures"]
        .as_array()
        .map(|failures| {
            failures
                .iter()
                .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Onboards a device, lets the rotator request its rotation and the issuer
/// deliver its new certificate: the device, the job id and the new certificate id.
async fn delivered(rig: &Rig, name: &str) -> Result<(Device, String, String), Error> {
    let (device, job_id) = issuer::requested(rig, name).await?;
    let answer = issuer::invoke(&rig.issuer().await?, &rig.csr_event(&device, &job_id)?).await?;
    let new = answer["newCertificateId"]
        .as_str()
        .ok_or_else(|| format!("{name}: not issued: {answer}"))?
        .to_string();
    let state = rig.rotation(&device.certificate_id).await?.state;
    assert_eq!(state, RotationState::Delivered, "{name}");
    Ok((device, job_id, new))
}

/// The end state of a completed rotation.
async fn check_retired(rig: &Rig, device: &Device, new: &str, label: &str) -> TestResult {
    let rotation = rig.rotation(&device.certificate_id).await?;
    assert_eq!(rotation.state, RotationState::Retired, "{label}: {rotation:?}");
    assert_eq!(rotation.new_certificate_id.as_deref(), Some(new), "{label}");
    assert!(rotation.confirmed_at.is_some(), "{label}: {rotation:?}");
    assert!(rotation.retired_at.is_some(), "{label}: {rotation:?}");
    // The old certificate: INACTIVE, attached to nothing, its record rotated out.
    let old = &device.certificate_id;
    assert_eq!(rig.status(old).await?, "INACTIVE", "{label}");
    let things = rig.things_of(&device.certificate_arn).await?;
    assert!(things.is_empty(), "{label}: old certificate attached to {things:?}");
    let policies = rig.policies(&device.certificate_arn).await?;
    assert!(policies.is_empty(), "{label}: old certificate has {policies:?}");
    assert_eq!(rig.record(old).await?.status, RecordStatus::Rotated, "{label}");
    // The new one: ACTIVE, the thing's only principal, holding the name.
    assert_eq!(rig.status(new).await?, "ACTIVE", "{label}");
    let new_arn = rig.arn(new).await?;
    let principals = rig.principals(&device.name).await?;
    assert_eq!(
        principals,
        [new_arn].into_iter().collect(),
        "{label}: the only principal"
    );
    assert_eq!(rig.claim(&device.name).await?.as_deref(), Some(new), "{label}");
    assert_eq!(rig.record(new).await?.status, RecordStatus::Provisioned, "{label}");
    Ok(())
}

fn detach_thing() -> Matcher {
    iot("DetachThingPrincipal", "DELETE", &["things", "*", "principals"])
}

fn detach_policy() -> Matcher {
    iot("DetachPolicy", "POST", &["target-policies", "*"])
}

fn success_steps() -> Vec<Step> {
    let confirmed = || put_rotation("PutItem CONFIRMED", "CONFIRMED", "#state", |_| true);
    let transfer = || update_claim("UpdateItem claim transfer");
    let inactive = || update_certificate("UpdateCertificate INACTIVE", "INACTIVE");
    let rotated_out = || update_record("UpdateItem record rotated out");
    let retired = || put_rotation("PutItem RETIRED", "RETIRED", "#state", |_| true);
    vec![
        Step::refuse("PutItem CONFIRMED", confirmed()),
        Step::lose_answer("PutItem CONFIRMED", confirmed()),
        Step::refuse("UpdateItem claim transfer", transfer()),
        Step::lose_answer("UpdateItem claim transfer", transfer()),
        Step::refuse("UpdateCertificate INACTIVE", inactive()),
        Step::lose_answer("UpdateCertificate INACTIVE", inactive()),
        Step::refuse("DetachThingPrincipal", detach_thing()),
        Step::lose_answer("DetachThingPrincipal", detach_thing()),
        Step::refuse("DetachPolicy", detach_policy()),
        Step::lose_answer("DetachPolicy", detach_policy()),
        Step::refuse("UpdateItem record rotated out", rotated_out()),
        Step::lose_answer("UpdateItem record rotated out", rotated_out()),
        Step::refuse("PutItem RETIRED", retired()),
        Step::lose_answer("PutItem RETIRED", retired()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_the_completer_converges_when_the_event_is_redelivered() -> TestResult {
    let rig = Rig::new("csr").await?;
    for (i, step) in success_steps().iter().enumerate() {
        let label = format!("{} ({})", step.label, step.mode_label());
        let (device, job_id, new) = delivered(&rig, &format!("cmp-{i}")).await?;
        let batch = rig.device_reports(&device, &job_id, "SUCCEEDED", &new).await?;
        let message_id = batch["Records"][0]["messageId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // One container for every delivery, as Lambda would reuse it.
        let completer = rig.completer().await?;

        rig.arm(step);
        let failed = invoke(&completer, &batch).await;
        rig.check_injected(step);
        assert_eq!(failed, vec![message_id], "{label}: given back for a retry");

        let failed = invoke(&completer, &batch).await;
        assert!(failed.is_empty(), "{label}: the redelivery converges");
        // Once more, as SQS may deliver it again: a duplicate, nothing changes.
        let body: Value = serde_json::from_str(batch["Records"][0]["body"].as_str().unwrap_or_default())?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let direct = completer.handle_at(body, now).await;
        assert_eq!(direct["outcome"], json!("duplicate"), "{label}: {direct}");

        check_retired(&rig, &device, &new, &label).await?;
        println!("completer, SUCCEEDED, crash at {label}: redelivery converged on RETIRED");
    }

    // A crash after `confirmed` whose message is never redelivered (dead-
    // lettered): `confirmed` is due at once, and the next rotator run retires.
    let label = "DetachThingPrincipal (refused), message lost";
    let (device, job_id, new) = delivered(&rig, "cmp-lost").await?;
    let batch = rig.device_reports(&device, &job_id, "SUCCEEDED", &new).await?;
    let step = Step::refuse("DetachThingPrincipal", detach_thing());
    rig.arm(&step);
    assert_eq!(invoke(&rig.completer().await?, &batch).await.len(), 1, "{label}");
    rig.check_injected(&step);
    let state = rig.rotation(&device.certificate_id).await?.state;
    assert_eq!(state, RotationState::Confirmed, "{label}");
    let later = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
    let report = rig.run_rotator_at(&rig.rotator().await?, later).await?;
    assert_eq!(report["completed"], 1, "{label}: {report}");
    assert_eq!(report["errors"], 0, "{label}: {report}");
    check_retired(&rig, &device, &new, label).await?;
    println!("completer, SUCCEEDED, crash at {label}: the rotator's next run converged on RETIRED");
    Ok(())
}

fn failure_steps() -> Vec<Step> {
    let revoke = || update_certificate("UpdateCertificate REVOKED", "REVOKED");
    let cancel = || iot("CancelJob", "PUT", &["jobs", "*", "cancel"]);
    let failed = || put_rotation("PutItem FAILED", "FAILED", "#state", |_| true);
    vec![
        Step::refuse("UpdateCertificate REVOKED", revoke()),
        Step::lose_answer("UpdateCertificate REVOKED", revoke()),
        Step::refuse("DetachThingPrincipal", detach_thing()),
        Step::lose_answer("DetachThingPrincipal", detach_thing()),
        Step::refuse("DetachPolicy", detach_policy()),
        Step::lose_answer("DetachPolicy", detach_policy()),
        Step::refuse("CancelJob", cancel()),
        Step::lose_answer("CancelJob", cancel()),
        Step::refuse("PutItem FAILED", failed()),
        Step::lose_answer("PutItem FAILED", failed()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_failed_job_is_cleaned_up_converges_when_the_event_is_redelivered() -> TestResult {
    let rig = Rig::new("csr").await?;
    for (i, step) in failure_steps().iter().enumerate() {
        let label = format!("{} ({})", step.label, step.mode_label());
        let (device, job_id, new) = delivered(&rig, &format!("cmp-fail-{i}")).await?;
        // The device gave up on its job.
        let batch = rig.device_reports(&device, &job_id, "FAILED", &new).await?;
        let completer = rig.completer().await?;

        rig.arm(step);
        let failed = invoke(&completer, &batch).await;
        rig.check_injected(step);
        assert_eq!(failed.len(), 1, "{label}: given back for a retry");
        let failed = invoke(&completer, &batch).await;
        assert!(failed.is_empty(), "{label}: the redelivery converges");

        let rotation = rig.rotation(&device.certificate_id).await?;
        assert_eq!(rotation.state, RotationState::Failed, "{label}: {rotation:?}");
        assert_eq!(rotation.reason.map(|r| r.code()), Some("JOB_FAILED"), "{label}");
        let retry_later = rotation.due_at.is_some_and(|due| due > rig.now + 3_600);
        assert!(retry_later, "{label}: retried later: {rotation:?}");
        // The new certificate: REVOKED, attached to nothing.
        assert_eq!(rig.status(&new).await?, "REVOKED", "{label}");
        let new_arn = rig.arn(&new).await?;
        let things = rig.things_of(&new_arn).await?;
        assert!(things.is_empty(), "{label}: new certificate attached to {things:?}");
        let policies = rig.policies(&new_arn).await?;
        assert!(policies.is_empty(), "{label}: new certificate has {policies:?}");
        // The old one untouched: ACTIVE, the thing's only principal, holding the name.
        assert_eq!(rig.status(&device.certificate_id).await?, "ACTIVE", "{label}");
        let principals = rig.principals(&device.name).await?;
        let only_old = [device.certificate_arn.clone()].into_iter().collect();
        assert_eq!(principals, only_old, "{label}");
        let claim = rig.claim(&device.name).await?;
        assert_eq!(claim.as_deref(), Some(device.certificate_id.as_str()), "{label}");
        // The job ended: its one execution is the device's FAILED (the fail
        // path's CancelJob finds it ended), so IoT reports it COMPLETED.
        let job = rig.world.iot.describe_job().job_id(&job_id).send().await?;
        let status = job.job.and_then(|j| j.status).map(|s| s.as_str().to_string());
        assert_eq!(status.as_deref(), Some("COMPLETED"), "{label}");
        let execution = rig
            .world
            .iot
            .describe_job_execution()
            .job_id(&job_id)
            .thing_name(&device.name)
            .send()
            .await?;
        let status = execution
            .execution
            .and_then(|e| e.status)
            .map(|s| s.as_str().to_string());
        assert_eq!(status.as_deref(), Some("FAILED"), "{label}");
        println!("completer, FAILED, crash at {label}: redelivery converged on FAILED, new certificate revoked");
    }
    Ok(())
}
