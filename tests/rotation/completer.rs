//! `rotation-completer`: the device confirmed its new certificate (a
//! SUCCEEDED job execution naming it), with a crash at each step
//! (`confirmed` recorded, claim moved, old certificate `INACTIVE`, detached
//! from the thing and its policy, its record rotated out, `retired`
//! recorded); the message redelivered converges on `RETIRED`.

use onboarding_domain::RecordStatus;
use onboarding_domain::rotation::RotationState;
use rotation_completer::AwsCompleter;
use serde_json::{Value, json};

use crate::common::{
    NAMESPACE, Rig, Step, TestResult, iot, put_rotation, update_certificate, update_claim, update_record,
};
use crate::issuer;

/// What the Lambda's handler does with one SQS batch; the failed message ids.
async fn invoke(completer: &AwsCompleter, batch: &Value) -> Vec<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let answer = rotation_completer::handle(completer, NAMESPACE, batch.clone(), now).await;
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

fn steps() -> Vec<Step> {
    let confirmed = || put_rotation("PutItem CONFIRMED", "CONFIRMED", "#state", |_| true);
    let transfer = || update_claim("UpdateItem claim transfer");
    let inactive = || update_certificate("UpdateCertificate INACTIVE", "INACTIVE");
    let detach = || iot("DetachThingPrincipal", "DELETE", &["things", "*", "principals"]);
    let rotated_out = || update_record("UpdateItem record rotated out");
    let retired = || put_rotation("PutItem RETIRED", "RETIRED", "#state", |_| true);
    vec![
        Step::refuse("PutItem CONFIRMED", confirmed()),
        Step::lose_answer("PutItem CONFIRMED", confirmed()),
        Step::refuse("UpdateItem claim transfer", transfer()),
        Step::lose_answer("UpdateItem claim transfer", transfer()),
        Step::refuse("UpdateCertificate INACTIVE", inactive()),
        Step::lose_answer("UpdateCertificate INACTIVE", inactive()),
        Step::refuse("DetachThingPrincipal", detach()),
        Step::lose_answer("DetachThingPrincipal", detach()),
        Step::refuse("DetachPolicy", iot("DetachPolicy", "POST", &["target-policies", "*"])),
        Step::refuse("UpdateItem record rotated out", rotated_out()),
        Step::lose_answer("UpdateItem record rotated out", rotated_out()),
        Step::refuse("PutItem RETIRED", retired()),
        Step::lose_answer("PutItem RETIRED", retired()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_the_completer_converges_when_the_event_is_redelivered() -> TestResult {
    let rig = Rig::new("csr").await?;
    for (i, step) in steps().iter().enumerate() {
        let label = format!("{} ({})", step.label, step.mode_label());
        let (device, job_id) = issuer::requested(&rig, &format!("cmp-{i}")).await?;
        let answer = issuer::invoke(&rig.issuer().await?, &rig.csr_event(&device, &job_id)?).await?;
        let new = answer["newCertificateId"]
            .as_str()
            .ok_or_else(|| format!("{label}: not issued: {answer}"))?
            .to_string();
        assert_eq!(
            rig.rotation(&device.certificate_id).await?.state,
            RotationState::Delivered
        );
        let batch = rig.job_execution_event(&device, &job_id, "SUCCEEDED", &new)?;
        let message_id = batch["Records"][0]["messageId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let completer = rig.completer().await?;

        rig.arm(step);
        let failed = invoke(&completer, &batch).await;
        rig.check_injected(step);
        assert_eq!(
            failed,
            vec![message_id],
            "{label}: the message is given back for a retry"
        );

        let failed = invoke(&completer, &batch).await;
        assert_eq!(failed, Vec::<String>::new(), "{label}: the redelivery converges");
        // And once more, as SQS may deliver it again: a duplicate, nothing changes.
        let direct = rotation_completer::handle(
            &completer,
            NAMESPACE,
            serde_json::from_str(batch["Records"][0]["body"].as_str().unwrap_or_default())?,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .await;
        assert_eq!(direct["outcome"], json!("duplicate"), "{label}: {direct}");

        let rotation = rig.rotation(&device.certificate_id).await?;
        assert_eq!(rotation.state, RotationState::Retired, "{label}: {rotation:?}");
        assert_eq!(rotation.new_certificate_id.as_deref(), Some(new.as_str()), "{label}");
        assert!(
            rotation.confirmed_at.is_some() && rotation.retired_at.is_some(),
            "{label}"
        );
        // The old certificate: INACTIVE, attached to nothing.
        let old = &device.certificate_id;
        assert_eq!(rig.status(old).await?, "INACTIVE", "{label}");
        assert_eq!(
            rig.things_of(&device.certificate_arn).await?,
            Vec::<String>::new(),
            "{label}"
        );
        assert_eq!(
            rig.policies(&device.certificate_arn).await?,
            Vec::<String>::new(),
            "{label}"
        );
        assert_eq!(rig.record(old).await?.status, RecordStatus::Rotated, "{label}");
        // The new one: ACTIVE, the thing's only principal, holding the name.
        assert_eq!(rig.status(&new).await?, "ACTIVE", "{label}");
        let new_arn = rig.arn(&new).await?;
        assert_eq!(
            rig.principals(&device.name).await?,
            [new_arn].into_iter().collect(),
            "{label}: the new certificate is the thing's only principal"
        );
        assert_eq!(rig.claim(&device.name).await?.as_deref(), Some(new.as_str()), "{label}");
        assert_eq!(rig.record(&new).await?.status, RecordStatus::Provisioned, "{label}");
        println!("completer, crash at {label}: converged on RETIRED");
    }
    Ok(())
}
