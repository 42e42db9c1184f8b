//! Maps SDK errors to the domain's [`PortError`] classes, and to the
//! messages operators read ([`OperatorError`]).
//!
//! Throttling, 429, 5xx, timeouts and connection failures are transient: the
//! SDK has already retried them with backoff, and the invocation fails so that
//! Lambda or SQS retries later. Which error codes are throttling or transient
//! is the SDK's own list, the one its retry classifier uses
//! ([`THROTTLING_ERRORS`], [`TRANSIENT_ERRORS`]).

use std::fmt::Display;

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use onboarding_domain::{PortError, PortErrorKind, PortResult};

/// Service faults named by code (the SDK's classifier goes by status, 5xx,
/// for these).
const FAULTS: [&str; 5] = [
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "InternalFailureException",
    "InternalServerError",
    "InternalError",
];
const MISSING: [&str; 4] = [
    "ResourceNotFoundException",
    "NoSuchBucket",
    "NotFoundException",
    "KMS.NotFoundException",
];
const DENIED: [&str; 7] = [
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedException",
    "UnrecognizedClientException",
    "KMS.DisabledException",
    "KMS.KMSInvalidStateException",
    "InvalidAccessKeyId",
];
const CONFLICT: [&str; 5] = [
    "ConditionalCheckFailedException",
    "ResourceAlreadyExistsException",
    "TransactionConflictException",
    "CertificateStateException",
    "VersionConflictException",
];

/// The error code of a service error, if the call reached the service.
pub fn service_code<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<&str> {
    match error {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// A DynamoDB condition that did not hold.
pub(crate) fn is_conditional_failure<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    service_code(error) == Some("ConditionalCheckFailedException")
}

/// A conditional write's answer: `true` when it took effect, `false` when
/// its condition did not hold (another writer came first), else the
/// classified failure.
pub(crate) fn won<T, E>(operation: &'static str, result: Result<T, SdkError<E, HttpResponse>>) -> PortResult<bool>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_conditional_failure(&e) => Ok(false),
        Err(e) => Err(classify(operation, e)),
    }
}

/// The resource named by the request does not exist.
pub(crate) fn is_not_found<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    service_code(error) == Some("ResourceNotFoundException")
}

/// A request or answer that cannot be used as it is.
pub(crate) fn invalid(operation: &'static str, detail: impl Into<String>) -> PortError {
    PortError::new(operation, PortErrorKind::Invalid, detail)
}

/// An answer without a field the adapter needs.
pub(crate) fn incomplete(operation: &'static str, field: &str) -> PortError {
    invalid(operation, format!("response has no {field}"))
}

/// Classifies an SDK error for `operation`.
pub fn classify<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            PortErrorKind::Transient
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match service.err().code() {
                Some(code)
                    if THROTTLING_ERRORS.contains(&code)
                        || TRANSIENT_ERRORS.contains(&code)
                        || FAULTS.contains(&code) =>
                {
                    PortErrorKind::Transient
                }
                Some(code) if MISSING.contains(&code) => PortErrorKind::MissingResource,
                Some(code) if DENIED.contains(&code) || code.starts_with("KMS.") => PortErrorKind::AccessDenied,
                Some(code) if CONFLICT.contains(&code) => PortErrorKind::Conflict,
                _ if status == 429 || status >= 500 => PortErrorKind::Transient,
                _ if status == 403 => PortErrorKind::AccessDenied,
                _ if status == 404 => PortErrorKind::MissingResource,
                _ => PortErrorKind::Invalid,
            }
        }
        _ => PortErrorKind::Invalid,
    };
    let detail = match &error {
        SdkError::ServiceError(service) => format!(
            "{}: {}",
            service.err().code().unwrap_or("unknown error"),
            service.err().message().unwrap_or("no message")
        ),
        other => DisplayErrorContext(other).to_string(),
    };
    PortError::new(operation, kind, detail)
}

/// The error of an operator's call (the CLI's): a message for a person,
/// `<operation> failed: <code>: <message>`, not classified for retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OperatorError(String);

impl OperatorError {
    /// `<operation> failed: <code>: <message>`, or the SDK's error context
    /// when the call did not reach the service.
    pub(crate) fn new<E>(operation: impl Display, error: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let detail = match error.as_service_error() {
            Some(service) => format!(
                "{}: {}",
                service.code().unwrap_or("error"),
                service.message().unwrap_or("no message")
            ),
            None => DisplayErrorContext(error).to_string(),
        };
        Self(format!("{operation} failed: {detail}"))
    }

    /// `<operation> failed: <the SDK error's own text>` (`service error`,
    /// `dispatch failure`, …): the shorter message of the table reads.
    pub(crate) fn terse<E>(operation: impl Display, error: &SdkError<E, HttpResponse>) -> Self {
        Self(format!("{operation} failed: {error}"))
    }

    /// An answer the operator's command cannot use.
    pub(crate) fn answer(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
