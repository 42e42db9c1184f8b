//! `rotation-issuer`: a CSR for a rotation the rotator requested, with a
//! crash at each of its steps (certificate made, `issued` recorded, attached,
//! policy attached, record written, `ACTIVE`, answer published, `delivered`
//! recorded); the same message handled again converges.

use onboarding_domain::RotationState;
use onboarding_test_support::world::POLICY;
use rotation_issuer::{Handler, InvocationError};
use serde_json::Value;

use crate::common::{Device, Rig, Step, TestResult, iot, put_rotation, update_certificate, update_record};

/// The Lambda's handler on one event.
pub async fn invoke(issuer: &Handler, event: &Value) -> Result<Value, InvocationError> {
    issuer.handle(event.clone()).await
}

/// Onboards a device and lets the rotator request its rotation; the job id.
pub async fn requested(rig: &Rig, name: &str) -> Result<(Device, String), crate::common::Error> {
    let device = rig.onboard(name).await?;
    let report = rig.run_rotator(&rig.rotator().await?).await?;
    assert_eq!(report["started"], 1, "{name}: {report}");
    let rotation = rig.rotation(&device.certificate_id).await?;
    assert_eq!(rotation.state, RotationState::Requested, "{name}: {rotation:?}");
    assert!(!rotation.is_starting(), "{name}: the job is out: {rotation:?}");
    Ok((device, rotation.job_id))
}

fn steps() -> Vec<Step> {
    vec![
        Step::refuse(
            "CreateCertificateFromCsr",
            iot("CreateCertificateFromCsr", "POST", &["certificates"]),
        ),
        Step::lose_answer(
            "CreateCertificateFromCsr",
            iot("CreateCertificateFromCsr", "POST", &["certificates"]),
        )
        .leaving_an_orphan(),
        Step::refuse(
            "PutItem ISSUED",
            put_rotation("PutItem ISSUED", "ISSUED", "#state", |_| true),
        )
        .leaving_an_orphan(),
        Step::lose_answer(
            "PutItem ISSUED",
            put_rotation("PutItem ISSUED", "ISSUED", "#state", |_| true),
        ),
        Step::refuse(
            "AttachThingPrincipal",
            iot("AttachThingPrincipal", "PUT", &["things", "*", "principals"]),
        ),
        Step::lose_answer(
            "AttachThingPrincipal",
            iot("AttachThingPrincipal", "PUT", &["things", "*", "principals"]),
        ),
        Step::refuse("AttachPolicy", iot("AttachPolicy", "PUT", &["target-policies", "*"])),
        Step::disconnect("AttachPolicy", iot("AttachPolicy", "PUT", &["target-policies", "*"])),
        Step::refuse(
            "UpdateItem record of the new certificate",
            update_record("UpdateItem CERT#new"),
        ),
        Step::refuse(
            "UpdateCertificate ACTIVE",
            update_certificate("UpdateCertificate ACTIVE", "ACTIVE"),
        ),
        Step::lose_answer(
            "UpdateCertificate ACTIVE",
            update_certificate("UpdateCertificate ACTIVE", "ACTIVE"),
        ),
        Step::refuse("Publish", iot("Publish", "POST", &["topics", "*"])),
        Step::lose_answer("Publish", iot("Publish", "POST", &["topics", "*"])),
        Step::refuse(
            "PutItem DELIVERED",
            put_rotation("PutItem DELIVERED", "DELIVERED", "#state", |_| true),
        ),
        Step::lose_answer(
            "PutItem DELIVERED",
            put_rotation("PutItem DELIVERED", "DELIVERED", "#state", |_| true),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_the_issuer_converges_when_the_csr_is_handled_again() -> TestResult {
    let rig = Rig::new("csr").await?;
    for (i, step) in steps().iter().enumerate() {
        let label = format!("{} ({})", step.label, step.mode_label());
        let (device, job_id) = requested(&rig, &format!("iss-{i}")).await?;
        let event = rig.csr_event(&device, &job_id)?;
        let before = rig.certificates().await?;
        // One container for both deliveries, as Lambda would reuse it.
        let issuer = rig.issuer().await?;

        rig.arm(step);
        let error = invoke(&issuer, &event)
            .await
            .err()
            .ok_or_else(|| format!("{label}: the first delivery should fail"))?;
        rig.check_injected(step);
        assert!(
            matches!(&error, InvocationError::Rotation(e) if e.is_transient()),
            "{label}: a transient failure, retried: {error}"
        );

        let answer = invoke(&issuer, &event)
            .await
            .map_err(|e| format!("{label}: retry: {e}"))?;
        assert!(
            answer["outcome"] == "issued" || answer["outcome"] == "resent",
            "{label}: {answer}"
        );
        let new = answer["newCertificateId"]
            .as_str()
            .ok_or_else(|| format!("{label}: no new certificate: {answer}"))?
            .to_string();

        // The rotation: delivered, with that certificate.
        let rotation = rig.rotation(&device.certificate_id).await?;
        assert_eq!(rotation.state, RotationState::Delivered, "{label}: {rotation:?}");
        assert_eq!(rotation.new_certificate_id.as_deref(), Some(new.as_str()), "{label}");
        assert!(
            rotation.issued_at.is_some() && rotation.delivered_at.is_some(),
            "{label}"
        );
        // The new certificate: ACTIVE, attached to the thing with the policy, recorded.
        assert_eq!(rig.status(&new).await?, "ACTIVE", "{label}");
        let new_arn = rig.arn(&new).await?;
        let principals = rig.principals(&device.name).await?;
        assert_eq!(
            principals,
            [device.certificate_arn.clone(), new_arn.clone()].into_iter().collect(),
            "{label}: the old and the new certificate, nothing else"
        );
        assert_eq!(rig.policies(&new_arn).await?, vec![POLICY.to_string()], "{label}");
        let record = rig.record(&new).await?;
        assert_eq!(record.thing_name.as_deref(), Some(device.name.as_str()), "{label}");
        assert_eq!(record.status.as_str(), "PROVISIONED", "{label}");
        // The old one untouched until the device confirms.
        assert_eq!(rig.status(&device.certificate_id).await?, "ACTIVE", "{label}");
        // Nothing else of this rotation ACTIVE or attached.
        let orphans = rig
            .check_orphans(&before, &new, usize::from(step.orphan), &label)
            .await?;
        println!(
            "issuer, crash at {label}: retry {}, left over {orphans:?}",
            answer["outcome"]
        );
    }
    Ok(())
}
