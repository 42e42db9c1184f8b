//! An in-memory fake of the ports the provisioning hook and the retirement
//! of superseded certificates use.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::model::record::CertificateRecord;
use crate::model::status::CertificateStatus;
use crate::policy::config::OnboardingConfig;
use crate::ports::{
    AllowEntry, Consumption, HookIdentity, HookInventory, NameClaim, PortError, PortErrorKind, PortResult,
    Supersession, SupersessionIot, SupersessionStore,
};

#[derive(Default)]
pub struct State {
    pub entries: BTreeMap<String, AllowEntry>,
    pub claims: BTreeMap<String, String>,
    /// Names held for a revoked device: no transfer moves them.
    pub held: std::collections::BTreeSet<String>,
    pub records: Vec<CertificateRecord>,
    pub supersessions: Vec<Supersession>,
    pub revoking: Vec<String>,
}

#[derive(Default)]
pub struct Inventory {
    pub config: OnboardingConfig,
    pub fail_reads: bool,
    pub fail_record: bool,
    pub state: Mutex<State>,
}

impl Inventory {
    pub fn with(entries: &[AllowEntry]) -> Self {
        let inventory = Self::default();
        inventory.state().entries = entries.iter().map(|e| (e.serial.clone(), e.clone())).collect();
        inventory
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub fn unavailable(operation: &'static str) -> PortError {
    PortError::new(operation, PortErrorKind::Transient, "throttled")
}

impl HookInventory for Inventory {
    async fn load_config(&self) -> PortResult<OnboardingConfig> {
        Ok(self.config.clone())
    }
    async fn allow_entry(&self, serial: &str) -> PortResult<Option<AllowEntry>> {
        if self.fail_reads {
            return Err(unavailable("GetItem"));
        }
        Ok(self.state().entries.get(serial).cloned())
    }
    // One lock: as atomic as DynamoDB's conditional write.
    async fn use_allow_entry(
        &self,
        serial: &str,
        certificate_id: &str,
        previous: Option<&str>,
        _now: i64,
    ) -> PortResult<Consumption> {
        let mut state = self.state();
        let Some(entry) = state.entries.get_mut(serial) else {
            return Ok(Consumption::Missing);
        };
        match entry.used_by.as_deref() {
            None => {}
            Some(holder) if holder == certificate_id || Some(holder) == previous => {}
            Some(holder) => return Ok(Consumption::UsedBy(holder.to_string())),
        }
        entry.used_by = Some(certificate_id.to_string());
        Ok(Consumption::Used)
    }
    async fn restore_allow_entry(&self, serial: &str, certificate_id: &str, previous: Option<&str>) -> PortResult<()> {
        if let Some(entry) = self.state().entries.get_mut(serial)
            && entry.used_by.as_deref() == Some(certificate_id)
        {
            entry.used_by = previous.map(str::to_string);
        }
        Ok(())
    }
    async fn record_allowed(&self, record: &CertificateRecord) -> PortResult<bool> {
        if self.fail_record {
            return Err(unavailable("PutItem"));
        }
        let mut state = self.state();
        if state.records.iter().any(|r| r.certificate_id == record.certificate_id) {
            return Ok(false);
        }
        state.records.push(record.clone());
        Ok(true)
    }
    async fn record_supersession(&self, supersession: &Supersession) -> PortResult<()> {
        let mut state = self.state();
        if !state.supersessions.contains(supersession) {
            state.supersessions.push(supersession.clone());
        }
        Ok(())
    }
}

impl crate::ports::NameClaims for Inventory {
    async fn claim_thing_name(&self, thing_name: &str, certificate_id: &str) -> PortResult<NameClaim> {
        let mut state = self.state();
        match state.claims.get(thing_name) {
            Some(holder) if holder != certificate_id => Ok(NameClaim::HeldBy(holder.clone())),
            _ => {
                state.claims.insert(thing_name.into(), certificate_id.into());
                Ok(NameClaim::Claimed)
            }
        }
    }

    async fn transfer_thing_name(&self, thing_name: &str, from: &str, to: &str) -> PortResult<bool> {
        let mut state = self.state();
        if state.claims.get(thing_name).map(String::as_str) != Some(from) || state.held.contains(thing_name) {
            return Ok(false);
        }
        state.claims.insert(thing_name.into(), to.into());
        Ok(true)
    }

    async fn release_thing_name(&self, thing_name: &str, certificate_id: &str) -> PortResult<()> {
        let mut state = self.state();
        if state.claims.get(thing_name).map(String::as_str) == Some(certificate_id) {
            state.claims.remove(thing_name);
        }
        Ok(())
    }
}

/// IoT: certificate statuses and things' principals.
#[derive(Default)]
pub struct Iot {
    pub statuses: Mutex<BTreeMap<String, CertificateStatus>>,
    pub things: BTreeMap<String, Vec<String>>,
    pub revoked: Mutex<Vec<String>>,
}

pub fn arn(id: &str) -> String {
    format!("arn:aws:iot:eu-west-1:123456789012:cert/{id}")
}

impl Iot {
    pub fn with(statuses: &[(&str, CertificateStatus)], things: &[(&str, &[&str])]) -> Self {
        Self {
            statuses: Mutex::new(statuses.iter().map(|(id, s)| ((*id).to_string(), s.clone())).collect()),
            things: things
                .iter()
                .map(|(name, ids)| ((*name).to_string(), ids.iter().map(|id| arn(id)).collect()))
                .collect(),
            revoked: Mutex::new(Vec::new()),
        }
    }
    pub fn status(&self, id: &str) -> Option<CertificateStatus> {
        self.statuses.lock().ok().and_then(|s| s.get(id).cloned())
    }
}

impl HookIdentity for Iot {
    async fn thing_principals(&self, thing_name: &str) -> PortResult<Option<Vec<String>>> {
        Ok(self.things.get(thing_name).cloned())
    }
    async fn certificate_status(&self, certificate_id: &str) -> PortResult<Option<CertificateStatus>> {
        Ok(self.status(certificate_id))
    }
}

impl SupersessionIot for Iot {
    async fn certificate(&self, certificate_id: &str) -> PortResult<Option<(CertificateStatus, String)>> {
        Ok(self.status(certificate_id).map(|s| (s, arn(certificate_id))))
    }
    async fn thing_principals(&self, thing_name: &str) -> PortResult<Option<Vec<String>>> {
        Ok(self.things.get(thing_name).cloned())
    }
    async fn revoke(&self, certificate_id: &str) -> PortResult<()> {
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.insert(certificate_id.to_string(), CertificateStatus::Revoked);
        }
        if let Ok(mut revoked) = self.revoked.lock() {
            revoked.push(certificate_id.to_string());
        }
        Ok(())
    }
}

impl SupersessionStore for Inventory {
    async fn pending_supersessions(&self, limit: usize) -> PortResult<Vec<Supersession>> {
        Ok(self.state().supersessions.iter().take(limit).cloned().collect())
    }
    async fn claim_revocation(&self, supersession: &Supersession, _now: i64) -> PortResult<bool> {
        let mut state = self.state();
        if !state.supersessions.contains(supersession) {
            return Ok(false);
        }
        state.revoking.push(supersession.old_certificate_id.clone());
        Ok(true)
    }
    async fn finish_supersession(&self, supersession: &Supersession) -> PortResult<()> {
        let mut state = self.state();
        state.supersessions.retain(|s| s != supersession);
        if let Some(entry) = state.entries.get_mut(&supersession.serial) {
            entry.replaces.retain(|old| *old != supersession.old_certificate_id);
        }
        Ok(())
    }
    async fn drop_supersession(&self, supersession: &Supersession) -> PortResult<()> {
        self.state().supersessions.retain(|s| s != supersession);
        Ok(())
    }
}
