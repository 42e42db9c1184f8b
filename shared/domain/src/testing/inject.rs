//! Failure injection, the same in every fake: the n-th port call fails
//! once, before its effect or after it.

use crate::ports::{PortError, PortErrorKind, PortResult};

/// Makes the n-th port call (0-based, over all ports) fail once:
/// `Before` its effect (a request that never arrived), or `After` it (a
/// lost response, or a crash right after the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inject {
    Before(usize),
    After(usize),
}

/// Call `n` (`op`) applied to `world`: failed transiently, once, where the
/// world's injection (reached through `slot`) names it.
pub(crate) fn call_with_injection<W, X>(
    world: &mut W,
    slot: fn(&mut W) -> &mut Option<Inject>,
    n: usize,
    op: &'static str,
    effect: impl FnOnce(&mut W) -> PortResult<X>,
) -> PortResult<X> {
    let injected = || PortError::new(op, PortErrorKind::Transient, format!("injected at call {n}"));
    if *slot(world) == Some(Inject::Before(n)) {
        *slot(world) = None;
        return Err(injected());
    }
    let value = effect(world)?;
    if *slot(world) == Some(Inject::After(n)) {
        *slot(world) = None;
        return Err(injected());
    }
    Ok(value)
}
