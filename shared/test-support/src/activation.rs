//! Whether any certificate was activated before its provisioning: read from
//! the requests a recording proxy saw between the functions and AWS.
//!
//! Each request of the registrar's provisioning is tied to its certificate:
//! `UpdateCertificate(ACTIVE)` by path, `AttachThingPrincipal` by its
//! principal header, `AttachPolicy` by its target, the inventory record's
//! `UpdateItem` by its key (only the write that sets `PROVISIONED`), the
//! credentials record's `PutObject` by its key (`<thing>/<certificateId>.json`).

use std::collections::HashMap;
use std::time::Duration;

use crate::proxy::RecordedRequest;

/// A step of provisioning one certificate, as the proxy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Activate,
    AttachThing,
    AttachPolicy,
    InventoryRecord,
    CredentialsRecord,
}

impl Step {
    /// The steps that must come before [`Step::Activate`].
    pub const BEFORE_ACTIVATION: [Step; 4] = [
        Step::AttachThing,
        Step::AttachPolicy,
        Step::InventoryRecord,
        Step::CredentialsRecord,
    ];
}

/// The step a request is, and its certificate id; `None` for other requests.
pub fn provisioning_step(r: &RecordedRequest) -> Option<(Step, String)> {
    let path = r.target.split('?').next().unwrap_or_default();
    let cert_of_arn = |arn: &str| arn.rsplit('/').next().map(str::to_string);
    if r.method == "PUT" && path.starts_with("/certificates/") && r.target.contains("newStatus=ACTIVE") {
        return Some((Step::Activate, path.trim_start_matches("/certificates/").to_string()));
    }
    if r.method == "PUT" && path.starts_with("/things/") && path.ends_with("/principals") {
        return Some((Step::AttachThing, cert_of_arn(r.header("x-amzn-principal")?)?));
    }
    if r.method == "PUT" && path.starts_with("/target-policies/") {
        return Some((Step::AttachPolicy, cert_of_arn(r.json()["target"].as_str()?)?));
    }
    if r.operation() == "UpdateItem" {
        // The record write sets the status (the activation mark does not).
        let body = r.json();
        if body["ExpressionAttributeValues"][":status"]["S"].as_str() != Some("PROVISIONED") {
            return None;
        }
        let pk = body["Key"]["pk"]["S"].as_str()?;
        return Some((Step::InventoryRecord, pk.strip_prefix("CERT#")?.to_string()));
    }
    if r.service() == Some("s3") && r.method == "PUT" && path.contains("/credentials/") {
        let file = path.rsplit('/').next()?;
        return Some((Step::CredentialsRecord, file.strip_suffix(".json")?.to_string()));
    }
    None
}

/// What [`activation_order`] found.
#[derive(Debug, Clone, Default)]
pub struct ActivationOrder {
    /// Certificates with an activation request.
    pub activated: usize,
    /// `<certificateId>: activated before its <step>` for every activation
    /// that no request of a step preceded.
    pub early: Vec<String>,
}

/// For every certificate activated, whether a request of each provisioning
/// step arrived before its first activation request (the registrar sends the
/// activation only once that round's answers came back, so arrival order is
/// the order the steps were taken in).
pub fn activation_order(requests: &[RecordedRequest]) -> ActivationOrder {
    let mut first: HashMap<(String, Step), Duration> = HashMap::new();
    for r in requests {
        if let Some((step, id)) = provisioning_step(r) {
            let at = first.entry((id, step)).or_insert(r.received);
            *at = (*at).min(r.received);
        }
    }
    let mut order = ActivationOrder::default();
    for ((id, step), at) in &first {
        if *step != Step::Activate {
            continue;
        }
        order.activated += 1;
        for before in Step::BEFORE_ACTIVATION {
            match first.get(&(id.clone(), before)) {
                Some(done) if done < at => {}
                _ => order.early.push(format!("{id}: activated before its {before:?}")),
            }
        }
    }
    order.early.sort();
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &str, at_ms: u64) -> RecordedRequest {
        RecordedRequest {
            method: method.into(),
            target: target.into(),
            headers: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            body: body.as_bytes().to_vec(),
            received: Duration::from_millis(at_ms),
        }
    }

    fn provisioning(id: &str, at_ms: u64) -> Vec<RecordedRequest> {
        let arn = format!("arn:aws:iot:us-east-1:000000000000:cert/{id}");
        vec![
            request("PUT", "/things/t1/principals", &[("x-amzn-principal", &arn)], "", at_ms),
            request(
                "PUT",
                "/target-policies/p",
                &[],
                &format!(r#"{{"target":"{arn}"}}"#),
                at_ms,
            ),
            request(
                "POST",
                "/",
                &[("x-amz-target", "DynamoDB_20120810.UpdateItem")],
                &format!(
                    r#"{{"Key":{{"pk":{{"S":"CERT#{id}"}}}},"ExpressionAttributeValues":{{":status":{{"S":"PROVISIONED"}}}}}}"#
                ),
                at_ms,
            ),
            request(
                "PUT",
                &format!("/bucket/credentials/t1/{id}.json"),
                &[(
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20261206/us-east-1/s3/aws4_request, ...",
                )],
                "",
                at_ms,
            ),
        ]
    }

    #[test]
    fn an_activation_after_every_step_passes_and_one_before_a_step_is_caught() {
        let mut requests = provisioning("good", 10);
        requests.push(request("PUT", "/certificates/good?newStatus=ACTIVE", &[], "", 20));
        let order = activation_order(&requests);
        assert_eq!((order.activated, order.early.len()), (1, 0), "{:?}", order.early);

        // Activated before its policy was attached, and with no credentials at all.
        let mut requests = provisioning("bad", 10);
        requests.retain(|r| !r.target.contains("credentials"));
        requests
            .iter_mut()
            .filter(|r| r.target.contains("target-policies"))
            .for_each(|r| r.received = Duration::from_millis(30));
        requests.push(request("PUT", "/certificates/bad?newStatus=ACTIVE", &[], "", 20));
        let order = activation_order(&requests);
        assert_eq!(order.activated, 1);
        assert_eq!(
            order.early,
            vec![
                "bad: activated before its AttachPolicy".to_string(),
                "bad: activated before its CredentialsRecord".to_string()
            ]
        );
    }
}
