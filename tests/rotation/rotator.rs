//! `cert-rotator`: a crash while a rotation starts (CSR: the rotation
//! recorded, the job put out, its deadline recorded; server-keygen: keys and
//! certificate made, stored, recorded, attached, activated, the job put out,
//! `issued` recorded); the next scheduled run converges.

use onboarding_domain::credential_keys;
use onboarding_domain::{RotationPolicy, RotationState, Strategy};
use onboarding_test_support::world::{BUCKET, POLICY};
use serde_json::Value;

use crate::common::{
    Error, Rig, Step, TestResult, iot, put_job_pointer, put_object, put_rotation, update_certificate, update_record,
};

/// The rotation's job deadline when it started at the rig's "now".
fn deadline(rig: &Rig) -> i64 {
    RotationPolicy {
        job_timeout_minutes: 1,
        ..RotationPolicy::default()
    }
    .job_deadline(rig.now)
}

/// Runs the rotator with `step`'s failure armed: the run reports the item's
/// error (or fails); then a second run.
async fn crash_then_run_again(rig: &Rig, step: &Step, label: &str) -> Result<Value, Error> {
    rig.arm(step);
    let first = rig.run_rotator(&rig.rotator().await?).await;
    rig.check_injected(step);
    match &first {
        Ok(report) => {
            assert_eq!(report["errors"], 1, "{label}: {report}");
            assert_eq!(
                report["interrupted"], true,
                "{label}: a transient error stops the run: {report}"
            );
        }
        Err(e) => println!("{label}: the run failed: {e}"),
    }
    // The next scheduled run, in a new container.
    let second = rig.run_rotator(&rig.rotator().await?).await?;
    assert_eq!(second["errors"], 0, "{label}: {second}");
    Ok(second)
}

fn csr_steps() -> Vec<Step> {
    let first_write = || put_rotation("PutItem REQUESTED (new)", "REQUESTED", "attribute_not_exists", |_| true);
    let create_job = || iot("CreateJob", "PUT", &["jobs", "*"]);
    let started = || put_rotation("PutItem REQUESTED (started)", "REQUESTED", "#state", |_| true);
    vec![
        Step::refuse("PutItem job pointer", put_job_pointer("PutItem JOB#")),
        Step::refuse("PutItem REQUESTED (new)", first_write()),
        Step::lose_answer("PutItem REQUESTED (new)", first_write()),
        Step::refuse("DescribeThing", iot("DescribeThing", "GET", &["things", "*"])),
        Step::refuse("CreateJob", create_job()),
        Step::lose_answer("CreateJob", create_job()),
        Step::refuse("PutItem REQUESTED (started)", started()),
        Step::lose_answer("PutItem REQUESTED (started)", started()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_csr_rotation_starts_converges_on_the_next_run() -> TestResult {
    let rig = Rig::new("csr").await?;
    for (i, step) in csr_steps().iter().enumerate() {
        let label = format!("{} ({})", step.label, step.mode_label());
        let device = rig.onboard(&format!("rot-csr-{i}")).await?;
        let second = crash_then_run_again(&rig, step, &label).await?;

        let rotation = rig.rotation(&device.certificate_id).await?;
        assert_eq!(rotation.state, RotationState::Requested, "{label}: {rotation:?}");
        assert_eq!(rotation.attempt, 1, "{label}");
        assert_eq!(rotation.strategy, Strategy::Csr, "{label}");
        assert_eq!(rotation.requested_at, rig.now, "{label}");
        assert_eq!(
            rotation.due_at,
            Some(deadline(&rig)),
            "{label}: due at the job deadline"
        );
        assert_eq!(rotation.new_certificate_id, None, "{label}");
        assert_eq!(
            rig.jobs_of(&device.name).await?,
            vec![rotation.job_id.clone()],
            "{label}: exactly one job for the thing"
        );
        // Nothing else changed for the device.
        assert_eq!(rig.status(&device.certificate_id).await?, "ACTIVE", "{label}");
        assert_eq!(rig.principals(&device.name).await?.len(), 1, "{label}");
        println!(
            "rotator (csr), crash at {label}: next run started {} resumed {}; REQUESTED with one job",
            second["started"], second["resumed"]
        );
    }
    Ok(())
}

fn server_keygen_steps() -> Vec<Step> {
    let keys = || iot("CreateKeysAndCertificate", "POST", &["keys-and-certificate"]);
    let recorded = || {
        put_rotation(
            "PutItem REQUESTED with the new certificate",
            "REQUESTED",
            "#state",
            |b| b.pointer("/Item/newCertificateId").is_some(),
        )
    };
    let attach = || iot("AttachThingPrincipal", "PUT", &["things", "*", "principals"]);
    let active = || update_certificate("UpdateCertificate ACTIVE", "ACTIVE");
    let create_job = || iot("CreateJob", "PUT", &["jobs", "*"]);
    let issued = || put_rotation("PutItem ISSUED", "ISSUED", "#state", |_| true);
    vec![
        Step::refuse("CreateKeysAndCertificate", keys()),
        Step::lose_answer("CreateKeysAndCertificate", keys()).leaving_an_orphan(),
        Step::refuse("S3 PutObject", put_object("S3 PutObject")).leaving_an_orphan(),
        Step::refuse("PutItem REQUESTED with the new certificate", recorded()).leaving_an_orphan(),
        Step::lose_answer("PutItem REQUESTED with the new certificate", recorded()),
        Step::refuse("AttachThingPrincipal", attach()),
        Step::lose_answer("AttachThingPrincipal", attach()),
        Step::refuse("AttachPolicy", iot("AttachPolicy", "PUT", &["target-policies", "*"])),
        Step::refuse(
            "UpdateItem record of the new certificate",
            update_record("UpdateItem CERT#new"),
        ),
        Step::refuse("UpdateCertificate ACTIVE", active()),
        Step::lose_answer("UpdateCertificate ACTIVE", active()),
        Step::refuse("CreateJob", create_job()),
        Step::lose_answer("CreateJob", create_job()),
        Step::refuse("PutItem ISSUED", issued()),
        Step::lose_answer("PutItem ISSUED", issued()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_server_keygen_rotation_starts_converges_on_the_next_run() -> TestResult {
    let rig = Rig::new("serverKeygen").await?;
    for (i, step) in server_keygen_steps().iter().enumerate() {
        let label = format!("{} ({})", step.label, step.mode_label());
        let device = rig.onboard(&format!("rot-keygen-{i}")).await?;
        let before = rig.certificates().await?;
        let second = crash_then_run_again(&rig, step, &label).await?;

        let rotation = rig.rotation(&device.certificate_id).await?;
        assert_eq!(rotation.state, RotationState::Issued, "{label}: {rotation:?}");
        assert_eq!(rotation.strategy, Strategy::ServerKeygen, "{label}");
        assert_eq!(
            rotation.due_at,
            Some(deadline(&rig)),
            "{label}: due at the job deadline"
        );
        let new = rotation
            .new_certificate_id
            .clone()
            .ok_or_else(|| format!("{label}: no new certificate: {rotation:?}"))?;
        // The new certificate: ACTIVE, attached with the policy, recorded.
        assert_eq!(rig.status(&new).await?, "ACTIVE", "{label}");
        let new_arn = rig.arn(&new).await?;
        assert_eq!(
            rig.principals(&device.name).await?,
            [device.certificate_arn.clone(), new_arn.clone()].into_iter().collect(),
            "{label}: the old and the new certificate, nothing else"
        );
        assert_eq!(rig.policies(&new_arn).await?, vec![POLICY.to_string()], "{label}");
        assert_eq!(
            rig.record(&new).await?.thing_name.as_deref(),
            Some(device.name.as_str()),
            "{label}"
        );
        // Its credentials stored where the job document points.
        let (certificate_key, private_key_key) = credential_keys(&device.name, &new);
        assert_eq!(
            rotation.object_keys,
            vec![certificate_key.clone(), private_key_key.clone()],
            "{label}"
        );
        for key in [&certificate_key, &private_key_key] {
            rig.world
                .s3
                .head_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .map_err(|e| format!("{label}: {key}: {e}"))?;
        }
        // One job, naming that certificate.
        assert_eq!(
            rig.jobs_of(&device.name).await?,
            vec![rotation.job_id.clone()],
            "{label}: exactly one job for the thing"
        );
        let document = rig
            .world
            .iot
            .get_job_document()
            .job_id(&rotation.job_id)
            .send()
            .await?
            .document
            .unwrap_or_default();
        assert!(document.contains(&new), "{label}: {document}");
        assert_eq!(rig.status(&device.certificate_id).await?, "ACTIVE", "{label}");
        let orphans = rig
            .check_orphans(&before, &new, usize::from(step.orphan), &label)
            .await?;
        let left: Vec<String> = list_keys(&rig, &format!("rotation/{}/", device.name)).await?;
        println!(
            "rotator (serverKeygen), crash at {label}: next run resumed {} started {}; ISSUED; left over \
             certificates {orphans:?}, objects {left:?}",
            second["resumed"], second["started"]
        );
    }
    Ok(())
}

/// The credentials objects under a prefix.
async fn list_keys(rig: &Rig, prefix: &str) -> Result<Vec<String>, Error> {
    let out = rig
        .world
        .s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .send()
        .await?;
    Ok(out
        .contents
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| o.key)
        .collect())
}
