//! The one retry of what `BatchGetItem` and `BatchWriteItem` leave
//! unprocessed (`UnprocessedKeys`, `UnprocessedItems`: throttling the SDK
//! does not see, since the call itself succeeded).

use std::time::Duration;

use onboarding_domain::{PortError, PortErrorKind, PortResult};

/// How often, and after what pause, a batch call is made again for what the
/// previous one left unprocessed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnprocessedRetry {
    /// The operation, for the error.
    pub operation: &'static str,
    /// Calls in all, the first included.
    pub calls: u32,
    /// The pause after call `n` (from 1) left something unprocessed.
    pub pause: fn(u32) -> Duration,
}

impl UnprocessedRetry {
    /// No pause: the deny-list lookup is on the registrar's critical path
    /// and its few keys come back at once.
    pub(crate) fn no_pause(_: u32) -> Duration {
        Duration::ZERO
    }
}

/// One batch's retries under an [`UnprocessedRetry`] policy:
///
/// ```text
/// let mut retry = Retry::new(&POLICY);
/// let mut pending = Some(requests);
/// while let Some(requests) = pending.take() {
///     let output = /* the batch call */;
///     pending = retry.again(/* what it left unprocessed */, |rest, calls| /* detail */).await?;
/// }
/// ```
#[derive(Debug)]
pub(crate) struct Retry<'a> {
    policy: &'a UnprocessedRetry,
    calls: u32,
}

impl<'a> Retry<'a> {
    pub(crate) fn new(policy: &'a UnprocessedRetry) -> Self {
        Self { policy, calls: 0 }
    }

    /// After a call that left `rest` unprocessed (`None`: nothing): what to
    /// send next, after the policy's pause; `None` when nothing is left.
    ///
    /// # Errors
    /// Transient, with `left_over(&rest, calls)` as its detail, when the
    /// policy's calls are used up and something is still left.
    pub(crate) async fn again<P>(
        &mut self,
        rest: Option<P>,
        left_over: impl FnOnce(&P, u32) -> String,
    ) -> PortResult<Option<P>> {
        self.calls += 1;
        let Some(rest) = rest else { return Ok(None) };
        if self.calls >= self.policy.calls {
            return Err(PortError::new(
                self.policy.operation,
                PortErrorKind::Transient,
                left_over(&rest, self.calls),
            ));
        }
        let pause = (self.policy.pause)(self.calls);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Ok(Some(rest))
    }
}

impl super::DynamoInventory {
    /// One `BatchWriteItem` of at most 25 `requests`, sent again for what
    /// DynamoDB leaves unprocessed under `policy` (`what` names the items
    /// in the error when some are still left).
    ///
    /// # Errors
    /// The call's failure; transient when the policy's calls are used up
    /// with writes still unprocessed.
    pub(crate) async fn batch_write(
        &self,
        requests: Vec<aws_sdk_dynamodb::types::WriteRequest>,
        policy: &UnprocessedRetry,
        what: &str,
    ) -> PortResult<()> {
        let mut retry = Retry::new(policy);
        let mut pending = Some(requests);
        while let Some(requests) = pending.take() {
            let output = self
                .client()
                .batch_write_item()
                .request_items(self.table(), requests)
                .send()
                .await
                .map_err(|e| crate::error::classify(policy.operation, e))?;
            let unprocessed = output
                .unprocessed_items
                .and_then(|mut items| items.remove(self.table()))
                .filter(|items| !items.is_empty());
            pending = retry
                .again(unprocessed, |rest, calls| {
                    format!("{} {what} still unprocessed after {calls} attempts", rest.len())
                })
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: UnprocessedRetry = UnprocessedRetry {
        operation: "BatchWriteItem",
        calls: 3,
        pause: UnprocessedRetry::no_pause,
    };

    /// Sends `requests` under `policy` to a batch call that processes one
    /// request a call; every call's requests.
    async fn one_at_a_time(policy: &UnprocessedRetry, requests: Vec<u32>) -> (Vec<Vec<u32>>, PortResult<()>) {
        let mut sent = Vec::new();
        let mut retry = Retry::new(policy);
        let mut pending = Some(requests);
        while let Some(requests) = pending.take() {
            sent.push(requests.clone());
            let rest = requests[1..].to_vec();
            let left = (!rest.is_empty()).then_some(rest);
            match retry
                .again(left, |rest, calls| {
                    format!("{} writes still unprocessed after {calls} attempts", rest.len())
                })
                .await
            {
                Ok(next) => pending = next,
                Err(e) => return (sent, Err(e)),
            }
        }
        (sent, Ok(()))
    }

    #[tokio::test]
    async fn what_is_left_unprocessed_is_sent_again_until_nothing_is_left() {
        let (sent, result) = one_at_a_time(&THREE, vec![1, 2, 3]).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(sent, vec![vec![1, 2, 3], vec![2, 3], vec![3]]);
    }

    #[tokio::test]
    async fn what_is_still_left_after_the_last_call_is_a_transient_error() {
        let (sent, result) = one_at_a_time(&THREE, vec![1, 2, 3, 4, 5]).await;
        assert_eq!(sent.len(), 3, "{sent:?}");
        let error = result.err().map(|e| (e.operation, e.kind, e.detail));
        assert_eq!(
            error,
            Some((
                "BatchWriteItem",
                PortErrorKind::Transient,
                "2 writes still unprocessed after 3 attempts".to_string()
            ))
        );
    }

    #[tokio::test]
    async fn the_pause_grows_with_the_calls_made() {
        const PAUSED: UnprocessedRetry = UnprocessedRetry {
            operation: "BatchGetItem",
            calls: 3,
            pause: |n| Duration::from_millis(5 << n),
        };
        let started = std::time::Instant::now();
        let (sent, result) = one_at_a_time(&PAUSED, vec![1, 2, 3]).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(sent.len(), 3);
        // 10 ms after the first call, 20 ms after the second.
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "{:?}",
            started.elapsed()
        );
    }
}
