//! The IoT calls of a retirement ([`RetirementIot`]): a thing's groups and
//! billing group, leaving them, and deleting the thing. Each call waits for
//! its action's turn when the adapter is paced.

use aws_sdk_iot::error::ProvideErrorMetadata;
use onboarding_domain::{PortError, PortErrorKind, PortResult, RetirementIot, ThingMembership};

use crate::error::{classify, is_not_found, service_code};
use crate::iot::{IotAdapter, list_thing_principals};

impl RetirementIot for IotAdapter {
    async fn thing_membership(&self, thing_name: &str) -> PortResult<Option<ThingMembership>> {
        self.ready("DescribeThing").await;
        let billing_group = match self.client().describe_thing().thing_name(thing_name).send().await {
            Ok(output) => output.billing_group_name.filter(|g| !g.is_empty()),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(classify("DescribeThing", e)),
        };
        self.ready("ListThingGroupsForThing").await;
        let mut pages = self
            .client()
            .list_thing_groups_for_thing()
            .thing_name(thing_name)
            .into_paginator()
            .items()
            .send();
        let mut thing_groups = Vec::new();
        while let Some(group) = pages.next().await {
            match group {
                Ok(group) => thing_groups.extend(group.group_name),
                // Deleted between the two calls.
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(classify("ListThingGroupsForThing", e)),
            }
        }
        Ok(Some(ThingMembership {
            thing_groups,
            billing_group,
        }))
    }

    async fn attached_principals(&self, thing_name: &str) -> PortResult<Option<Vec<String>>> {
        self.ready("ListThingPrincipals").await;
        match list_thing_principals(self.client(), thing_name).await {
            Ok(principals) => Ok(Some(principals)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify("ListThingPrincipals", e)),
        }
    }

    async fn principal_things(&self, principal_arn: &str) -> PortResult<Vec<String>> {
        self.ready("ListPrincipalThings").await;
        let mut pages = self
            .client()
            .list_principal_things()
            .principal(principal_arn)
            .into_paginator()
            .items()
            .send();
        let mut things = Vec::new();
        while let Some(thing) = pages.next().await {
            match thing {
                Ok(thing) => things.push(thing),
                Err(e) if is_not_found(&e) => return Ok(Vec::new()),
                Err(e) => return Err(classify("ListPrincipalThings", e)),
            }
        }
        Ok(things)
    }

    async fn leave_thing_group(&self, thing_name: &str, group: &str) -> PortResult<()> {
        self.ready("RemoveThingFromThingGroup").await;
        match self
            .client()
            .remove_thing_from_thing_group()
            .thing_name(thing_name)
            .thing_group_name(group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify("RemoveThingFromThingGroup", e)),
        }
    }

    async fn leave_billing_group(&self, thing_name: &str, group: &str) -> PortResult<()> {
        self.ready("RemoveThingFromBillingGroup").await;
        match self
            .client()
            .remove_thing_from_billing_group()
            .thing_name(thing_name)
            .billing_group_name(group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify("RemoveThingFromBillingGroup", e)),
        }
    }

    async fn delete_thing(&self, thing_name: &str) -> PortResult<()> {
        const OP: &str = "DeleteThing";
        self.ready(OP).await;
        match self.client().delete_thing().thing_name(thing_name).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if still_attached(service_code(&e), e.message()) => Err(PortError::new(
                OP,
                PortErrorKind::Conflict,
                format!(
                    "thing {thing_name} is still attached to principals: {}",
                    e.message().unwrap_or_default()
                ),
            )),
            Err(e) => Err(classify(OP, e)),
        }
    }
}

/// `DeleteThing`'s refusal while principals are attached (an
/// `InvalidRequestException`, "… still attached to one or more
/// principals"): a state that passes once IoT sees the detachments, not an
/// invalid request.
fn still_attached(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("InvalidRequestException") && message.is_some_and(|m| m.contains("attached"))
}
