//! The completer: acts on a job-execution event.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::policy::profile::DeviceProfile;
use crate::policy::rotation::Strategy;
use crate::policy::rotation::protocol::CONFIRMATION_FIELD;
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState};
use crate::ports::{DenyList, Inventory, RotationInventory, RotationIot, RotationObjects};
use crate::workflows::rotation::ops::{IgnoreReason, Ops, ProfileCache, RotationError, Settled};

// --- completer --------------------------------------------------------------

/// A job-execution event (`$aws/events/jobExecution/<jobId>/<status>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecutionEvent {
    pub job_id: String,
    /// `arn:aws:iot:<region>:<account>:thing/<thingName>`.
    #[serde(default)]
    pub thing_arn: String,
    /// `SUCCEEDED`, `FAILED`, `REJECTED`, `TIMED_OUT`, `CANCELED`, `REMOVED`, …
    pub status: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub status_details: BTreeMap<String, String>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

impl JobExecutionEvent {
    /// Parses the event's JSON (unknown fields ignored).
    ///
    /// # Errors
    /// The JSON error when a required field is missing or mistyped.
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The thing name from `thingArn`.
    pub fn thing_name(&self) -> Option<&str> {
        self.thing_arn.rsplit_once(":thing/").map(|(_, name)| name)
    }
}

/// Completer settings.
#[derive(Debug, Clone)]
pub struct CompleterSettings {
    /// How long the configuration is cached in the container.
    pub cache_ttl: Duration,
    /// A default profile and the CA ids bound to it, from the environment.
    pub default_profile: Option<(DeviceProfile, Vec<String>)>,
}

impl Default for CompleterSettings {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            default_profile: None,
        }
    }
}

/// What the completer did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompletionOutcome {
    /// Confirmed: the old certificate is INACTIVE and detached.
    Completed {
        thing_name: String,
        old_certificate_id: String,
        new_certificate_id: String,
    },
    /// The attempt failed (an alarm metric); `retry_at` is `None` when the
    /// attempts are used up.
    Failed {
        thing_name: String,
        old_certificate_id: String,
        reason: FailureReason,
        retry_at: Option<i64>,
    },
    /// A server-keygen device took up its job.
    Delivered {
        thing_name: String,
    },
    /// The attempt had already ended this way or another (a duplicate event,
    /// or the cancellation the fail path itself caused).
    Duplicate {
        thing_name: String,
        state: RotationState,
    },
    Ignored {
        reason: IgnoreReason,
    },
}

impl CompletionOutcome {
    /// `completed`, `failed`, `delivered`, `duplicate` or `ignored`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Delivered { .. } => "delivered",
            Self::Duplicate { .. } => "duplicate",
            Self::Ignored { .. } => "ignored",
        }
    }

    /// True for outcomes the function turns into an alarm metric.
    pub fn is_alarm(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }
}

/// Acts on job-execution events, generic over its ports.
pub struct Completer<R, T, O, I> {
    rotations: R,
    iot: T,
    objects: O,
    inventory: I,
    profiles: ProfileCache,
}

impl<R, T, O, I> Completer<R, T, O, I>
where
    R: RotationInventory,
    T: RotationIot,
    O: RotationObjects,
    I: Inventory + DenyList,
{
    pub fn new(rotations: R, iot: T, objects: O, inventory: I, settings: CompleterSettings) -> Self {
        Self {
            rotations,
            iot,
            objects,
            inventory,
            profiles: ProfileCache::new(settings.cache_ttl, settings.default_profile),
        }
    }

    fn ops(&self) -> Ops<'_, R, T, O, I> {
        Ops {
            rotations: &self.rotations,
            iot: &self.iot,
            objects: &self.objects,
            inventory: &self.inventory,
        }
    }

    /// Handles one event as of `now`. Idempotent: a duplicate finds the
    /// attempt ended and reports [`CompletionOutcome::Duplicate`].
    ///
    /// The event is a trigger only: before any certificate changes, the job
    /// execution is read again from IoT (`DescribeJobExecution`), and its
    /// status and `statusDetails` decide, never the message's.
    ///
    /// - `SUCCEEDED` naming the new certificate: `confirmed`; the thing-name
    ///   claim moved to the new certificate; the old one INACTIVE, detached
    ///   from the thing and its policies; its record rotated out; objects
    ///   deleted; `retired` (due for deletion after the grace period).
    ///   Naming anything else fails the attempt (`WRONG_CONFIRMATION`).
    /// - `FAILED`, `REJECTED`, `TIMED_OUT`, `CANCELED`, `REMOVED`: the new
    ///   certificate revoked and detached, the job canceled, then `failed`
    ///   with the retry time; the old certificate is untouched.
    /// - `IN_PROGRESS` of a server-keygen job: `delivered`. Others: ignored.
    ///
    /// # Errors
    /// [`RotationError`] when the event must be retried (transient) or an
    /// operator must look.
    pub async fn handle(&self, event: &JobExecutionEvent, now: i64) -> Result<CompletionOutcome, RotationError> {
        let ops = self.ops();
        let Some(r) = self.rotations.rotation_by_job(&event.job_id).await? else {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::UnknownJob,
            });
        };
        if r.job_id != event.job_id {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::UnknownJob,
            });
        }
        if event.thing_name() != Some(r.thing_name.as_str()) {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::OtherThing,
            });
        }
        // The event only says "look": the status and the confirmed
        // certificate are read from IoT itself, never from the message.
        let Some(execution) = self.iot.job_execution(&r.job_id, &r.thing_name).await? else {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::NothingToDo,
            });
        };
        let status = execution.status.as_str();
        let reported = event.status_details.get(CONFIRMATION_FIELD);
        if event.status != status
            || reported.is_some_and(|c| execution.status_details.get(CONFIRMATION_FIELD) != Some(c))
        {
            tracing::warn!(
                job = %r.job_id,
                thing = %r.thing_name,
                event_status = %event.status,
                iot_status = status,
                "the event disagrees with IoT's job execution; IoT's is used"
            );
        }
        let policy = self.profiles.policy(&self.inventory, &r).await?;
        let open = matches!(
            r.state,
            RotationState::Requested | RotationState::Issued | RotationState::Delivered
        );
        let settled = if status == "SUCCEEDED"
            && open
            && let Some(detail) = self.denied(&r).await?
        {
            // Denied (or revoked) since the certificate was issued: the
            // confirmation completes nothing; the new certificate is revoked.
            ops.fail(r, FailureReason::Denied, &detail, &policy, now).await?
        } else if status == "SUCCEEDED" || FailureReason::of_job_status(status).is_some() {
            ops.settle(r, Some(execution), &policy, now).await?
        } else if status == "IN_PROGRESS" && r.strategy == Strategy::ServerKeygen {
            return self.delivered(r, now).await;
        } else {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::NothingToDo,
            });
        };
        Ok(match settled {
            Settled::Completed(r) => CompletionOutcome::Completed {
                new_certificate_id: r.new_certificate_id.unwrap_or_default(),
                thing_name: r.thing_name,
                old_certificate_id: r.old_certificate_id,
            },
            Settled::Failed(r) => CompletionOutcome::Failed {
                thing_name: r.thing_name,
                old_certificate_id: r.old_certificate_id,
                reason: r.reason.unwrap_or(FailureReason::JobFailed),
                retry_at: r.due_at,
            },
            Settled::Ended(r) => CompletionOutcome::Duplicate {
                thing_name: r.thing_name,
                state: r.state,
            },
        })
    }

    /// Why the device may no longer complete a rotation: the old
    /// certificate's fingerprint or serial on the deny-list (looked up now,
    /// never cached). `None` when it is not denied (or has no record).
    async fn denied(&self, r: &Rotation) -> Result<Option<String>, RotationError> {
        let Some(record) = self.inventory.certificate_record(&r.old_certificate_id).await? else {
            return Ok(None);
        };
        let fingerprint = if record.fingerprint.is_empty() {
            record.certificate_id.as_str()
        } else {
            record.fingerprint.as_str()
        };
        let serial = record.serial.as_deref().unwrap_or_default();
        Ok(self
            .inventory
            .denial(record.serial_ca(), serial, fingerprint)
            .await?
            .map(|rejection| format!("{}: {}", rejection.reason.code(), rejection.detail)))
    }

    /// A server-keygen device took up its job: `delivered`.
    async fn delivered(&self, r: Rotation, now: i64) -> Result<CompletionOutcome, RotationError> {
        let thing_name = r.thing_name.clone();
        match r.state {
            RotationState::Issued => {
                let next = r.delivered(now)?;
                if self
                    .rotations
                    .put_rotation(&next, Some((RotationState::Issued, r.attempt)))
                    .await?
                {
                    return Ok(CompletionOutcome::Delivered { thing_name });
                }
                let current = self.ops().reread(&r).await?;
                Ok(CompletionOutcome::Duplicate {
                    thing_name,
                    state: current.state,
                })
            }
            // The rotator records `issued` when it resumes its start.
            RotationState::Requested => Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::NothingToDo,
            }),
            state => Ok(CompletionOutcome::Duplicate { thing_name, state }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    // --- events -----------------------------------------------------------------

    #[test]
    fn job_execution_events_parse_leniently() {
        let json = br#"{
            "eventType": "JOB_EXECUTION",
            "eventId": "1b2c",
            "timestamp": 1700000000,
            "operation": "succeeded",
            "jobId": "rotate-abc-1",
            "thingArn": "arn:aws:iot:eu-west-1:123456789012:thing/dev-0",
            "status": "SUCCEEDED",
            "statusDetails": {"newCertificateId": "n"}
        }"#;
        let e = JobExecutionEvent::parse(json).expect("parses");
        assert_eq!(
            (e.job_id.as_str(), e.thing_name(), e.status.as_str()),
            ("rotate-abc-1", Some("dev-0"), "SUCCEEDED")
        );
        assert_eq!(e.status_details.get(CONFIRMATION_FIELD).map(String::as_str), Some("n"));
        let e = JobExecutionEvent::parse(br#"{"jobId":"j","status":"FAILED","statusDetails":null}"#).expect("parses");
        assert!(e.status_details.is_empty());
        assert_eq!(e.thing_name(), None);
    }
}
