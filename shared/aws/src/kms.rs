//! A CA key held in KMS behind the domain's
//! [`CertificateSigner`](onboarding_domain::CertificateSigner): `kms:GetPublicKey`
//! tells its algorithm and public key (read once per adapter), `kms:Sign`
//! signs a digest computed here (`MessageType=DIGEST`), so a certificate's
//! TBS never travels and its size never meets `Sign`'s 4 KB message limit.
//! The private key never leaves KMS.
//!
//! Only `SIGN_VERIFY` keys of spec `ECC_NIST_P256` (ECDSA SHA-256),
//! `ECC_NIST_P384` (ECDSA SHA-384) or `RSA_2048/3072/4096` (PKCS #1 v1.5
//! SHA-256) are used; any other key (encryption, HMAC, P-521, secp256k1, SM2,
//! Ed25519, ML-DSA) is refused with an `Invalid` error naming its spec.

use aws_sdk_kms::Client;
use aws_sdk_kms::error::SdkError;
use aws_sdk_kms::operation::get_public_key::GetPublicKeyOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use onboarding_domain::{CertificateSigner, PortError, PortErrorKind, PortResult, SignatureAlgorithm, SigningKey};
use tokio::sync::OnceCell;

use crate::error::{OperatorError, classify, incomplete, invalid};

/// The key specs `onboard ca create --kms` creates a fleet CA key with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKeySpec {
    /// `ECC_NIST_P256`: ECDSA SHA-256.
    P256,
    /// `ECC_NIST_P384`: ECDSA SHA-384.
    P384,
}

/// Creates an asymmetric KMS key for a fleet CA (`SIGN_VERIFY`, `spec`)
/// and returns its ARN. The private key is generated in KMS and never
/// leaves it; sign with it through [`KmsSigner`].
///
/// # Errors
/// [`OperatorError`] when `CreateKey` fails or its answer names no ARN.
pub async fn create_ca_key(
    config: &aws_config::SdkConfig,
    spec: CaKeySpec,
    description: &str,
) -> Result<String, OperatorError> {
    const OPERATION: &str = "kms:CreateKey";
    let key_spec = match spec {
        CaKeySpec::P256 => KeySpec::EccNistP256,
        CaKeySpec::P384 => KeySpec::EccNistP384,
    };
    let output = Client::new(config)
        .create_key()
        .key_spec(key_spec)
        .key_usage(KeyUsageType::SignVerify)
        .description(description)
        .send()
        .await
        .map_err(|e| OperatorError::new(OPERATION, &e))?;
    output
        .key_metadata
        .and_then(|metadata| metadata.arn)
        .ok_or_else(|| OperatorError::answer(format!("{OPERATION} answered without the key's ARN")))
}

/// KMS answers for a key that exists but cannot sign now: disabled, pending
/// deletion or import. An operator's decision, not worth retrying (as the S3
/// adapter classes KMS's own refusals).
const KEY_UNUSABLE: [&str; 2] = ["DisabledException", "KMSInvalidStateException"];

/// A CA key in KMS, named by key id, ARN or alias.
pub struct KmsSigner {
    client: Client,
    key_id: String,
    key: OnceCell<SigningKey>,
}

impl KmsSigner {
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
            key: OnceCell::new(),
        }
    }

    /// A signer over a KMS client built from `config`.
    pub fn from_config(config: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        Self::new(Client::new(config), key_id)
    }

    /// The key id, ARN or alias this signer uses.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn load(&self) -> PortResult<SigningKey> {
        const OPERATION: &str = "kms:GetPublicKey";
        let output = self
            .client
            .get_public_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| classify_kms(OPERATION, e))?;
        signing_key_of(&self.key_id, &output)
    }
}

/// The algorithm of a key as `GetPublicKey` describes it, or why it cannot sign certificates.
fn signing_key_of(key_id: &str, output: &GetPublicKeyOutput) -> PortResult<SigningKey> {
    const OPERATION: &str = "kms:GetPublicKey";
    let usage = output.key_usage().ok_or_else(|| incomplete(OPERATION, "KeyUsage"))?;
    if *usage != KeyUsageType::SignVerify {
        return Err(invalid(
            OPERATION,
            format!("KMS key {key_id} has usage {usage}, not SIGN_VERIFY: it cannot sign certificates"),
        ));
    }
    let spec = output.key_spec().ok_or_else(|| incomplete(OPERATION, "KeySpec"))?;
    let algorithm = match spec {
        KeySpec::EccNistP256 => SignatureAlgorithm::EcdsaP256Sha256,
        KeySpec::EccNistP384 => SignatureAlgorithm::EcdsaP384Sha384,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => SignatureAlgorithm::RsaPkcs1Sha256,
        other => {
            return Err(invalid(
                OPERATION,
                format!(
                    "KMS key {key_id} has spec {other}: a CA key must be ECC_NIST_P256, ECC_NIST_P384 or \
                     RSA_2048/3072/4096, the algorithms device TLS stacks verify"
                ),
            ));
        }
    };
    let wanted = kms_algorithm(algorithm);
    if !output.signing_algorithms().contains(&wanted) {
        return Err(invalid(
            OPERATION,
            format!("KMS key {key_id} ({spec}) does not offer {wanted}"),
        ));
    }
    let public_key = output.public_key().ok_or_else(|| incomplete(OPERATION, "PublicKey"))?;
    Ok(SigningKey {
        algorithm,
        public_key_der: public_key.as_ref().to_vec(),
    })
}

fn kms_algorithm(algorithm: SignatureAlgorithm) -> SigningAlgorithmSpec {
    match algorithm {
        SignatureAlgorithm::EcdsaP256Sha256 => SigningAlgorithmSpec::EcdsaSha256,
        SignatureAlgorithm::EcdsaP384Sha384 => SigningAlgorithmSpec::EcdsaSha384,
        SignatureAlgorithm::RsaPkcs1Sha256 => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
    }
}

/// [`classify`], with KMS's refusals of an unusable key as `AccessDenied`.
fn classify_kms<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let unusable =
        matches!(&error, SdkError::ServiceError(e) if e.err().code().is_some_and(|c| KEY_UNUSABLE.contains(&c)));
    let mut classified = classify(operation, error);
    if unusable {
        classified.kind = PortErrorKind::AccessDenied;
    }
    classified
}

impl CertificateSigner for KmsSigner {
    async fn signing_key(&self) -> PortResult<SigningKey> {
        self.key.get_or_try_init(|| self.load()).await.cloned()
    }

    async fn sign(&self, message: &[u8]) -> PortResult<Vec<u8>> {
        const OPERATION: &str = "kms:Sign";
        let key = self.signing_key().await?;
        let output = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message_type(MessageType::Digest)
            .message(Blob::new(key.algorithm.digest(message)))
            .signing_algorithm(kms_algorithm(key.algorithm))
            .send()
            .await
            .map_err(|e| classify_kms(OPERATION, e))?;
        let signature = output.signature.ok_or_else(|| incomplete(OPERATION, "Signature"))?;
        Ok(signature.into_inner())
    }
}
