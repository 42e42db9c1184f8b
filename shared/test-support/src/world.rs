//! A provisioned test world in a fresh emulator: the inventory table (with
//! its expiry index), the credentials bucket and KMS key, the thing type,
//! groups and device policy of a default profile, and a CA registered with
//! auto-registration and bound to that profile.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use aws_sdk_iot::types::CertificateStatus;
use serde_json::{Value, json};

use crate::certs::{DeviceCert, TestCa};
use crate::emulator::{Emulator, s3_client, workspace_root};
use crate::mqtt::{ConnectResult, connect_once};

/// Any error while building or using the world.
pub type WorldError = Box<dyn std::error::Error + Send + Sync>;

pub const TABLE: &str = "onboarding-inventory";
pub const BUCKET: &str = "onboarding-credentials";
pub const THING_TYPE: &str = "sensor";
pub const GROUPS: [&str; 2] = ["fleet", "sensors-eu"];
pub const POLICY: &str = "onboarding-device-policy";
pub const PROFILE: &str = "sensors";

/// The default profile's JSON: CN naming, attributes from O, OU and serialNumber.
pub fn default_profile() -> Value {
    json!({
        "name": PROFILE,
        "thingType": THING_TYPE,
        "thingName": "{CN}",
        "attributes": {"manufacturer": "O", "model": "OU", "serial": "serialNumber"},
        "thingGroups": GROUPS,
        "policyName": POLICY,
        "minRemainingDays": 30,
        "rejectionAction": "REVOKED"
    })
}

/// The device policy: connect as the thing, publish and subscribe under
/// `devices/<thing>/`, while the certificate is attached to the thing.
pub fn device_policy() -> Value {
    let arn = |kind: &str, rest: &str| {
        format!(
            "arn:aws:iot:{}:{}:{kind}/{rest}",
            crate::emulator::REGION,
            crate::emulator::ACCOUNT_ID
        )
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn("client", "${iot:Connection.Thing.ThingName}"),
             "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": arn("topic", "devices/${iot:Connection.Thing.ThingName}/*")},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": arn("topicfilter", "devices/${iot:Connection.Thing.ThingName}/*")}
        ]
    })
}

/// The emulator and everything the registrar needs in it.
pub struct World {
    pub emulator: Emulator,
    pub sdk: SdkConfig,
    pub iot: aws_sdk_iot::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms_key_id: String,
    pub kms_key_arn: String,
    pub ca: TestCa,
    pub ca_id: String,
    pub server_ca_pem: String,
}

impl World {
    /// Starts an emulator and builds the world in it.
    ///
    /// # Errors
    /// Any emulator or SDK failure.
    pub async fn new() -> Result<Self, WorldError> {
        let emulator = Emulator::start().await?;
        Self::build(emulator).await
    }

    /// Builds the world in a running emulator.
    ///
    /// # Errors
    /// Any SDK failure.
    pub async fn build(emulator: Emulator) -> Result<Self, WorldError> {
        let sdk = emulator.sdk_config().await;
        let iot = aws_sdk_iot::Client::new(&sdk);
        let s3 = s3_client(&sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let kms = aws_sdk_kms_client(&sdk);
        let key = kms.create_key().description("onboarding credentials").send().await?;
        let metadata = key.key_metadata.ok_or("CreateKey returned no metadata")?;
        let kms_key_arn = metadata.arn.clone().ok_or("CreateKey returned no ARN")?;
        let kms_key_id = metadata.key_id.clone();
        create_inventory_table(&dynamodb, TABLE).await?;
        s3.create_bucket().bucket(BUCKET).send().await?;
        iot.create_thing_type().thing_type_name(THING_TYPE).send().await?;
        for group in GROUPS {
            iot.create_thing_group().thing_group_name(group).send().await?;
        }
        iot.create_policy()
            .policy_name(POLICY)
            .policy_document(device_policy().to_string())
            .send()
            .await?;
        let server_ca_pem = emulator.server_ca_pem().await?;
        let ca = TestCa::new("Acme Device CA")?;
        let mut world = Self {
            emulator,
            sdk,
            iot,
            s3,
            dynamodb,
            kms_key_id,
            kms_key_arn,
            ca,
            ca_id: String::new(),
            server_ca_pem,
        };
        world.ca_id = world.register_ca(&world.ca).await?;
        world.put_profile(&default_profile()).await?;
        world.bind(&world.ca_id.clone(), PROFILE).await?;
        Ok(world)
    }

    /// Registers a CA as ACTIVE with auto-registration, as an operator would.
    ///
    /// # Errors
    /// SDK failures.
    pub async fn register_ca(&self, ca: &TestCa) -> Result<String, WorldError> {
        register_ca(&self.iot, ca).await
    }

    /// Writes a device profile item.
    ///
    /// # Errors
    /// SDK failures.
    pub async fn put_profile(&self, profile: &Value) -> Result<(), WorldError> {
        let name = profile["name"].as_str().ok_or("profile without a name")?;
        self.put_config_item(&format!("PROFILE#{name}"), Some(("profile", profile.to_string())))
            .await
    }

    /// Binds a CA to a profile.
    ///
    /// # Errors
    /// SDK failures.
    pub async fn bind(&self, ca_id: &str, profile: &str) -> Result<(), WorldError> {
        self.put_config_item(&format!("CA#{ca_id}"), Some(("profile", profile.to_string())))
            .await
    }

    /// Adds a serial (hex, normalised as `onboard deny add` writes it) to a
    /// CA's deny-list: its own item, `pk = DENY#SERIAL#<ca>#<serial>`.
    ///
    /// # Errors
    /// SDK failures.
    pub async fn deny_serial(&self, ca_id: &str, serial_hex: &str) -> Result<(), WorldError> {
        self.put_deny_item(&format!("DENY#SERIAL#{ca_id}#{serial_hex}")).await
    }

    /// Adds a SHA-256 fingerprint (lowercase hex) to the deny-list.
    ///
    /// # Errors
    /// SDK failures.
    pub async fn deny_fingerprint(&self, fingerprint: &str) -> Result<(), WorldError> {
        self.put_deny_item(&format!("DENY#FINGERPRINT#{fingerprint}")).await
    }

    /// Adds a deny-list entry in the earlier layout (`pk = CONFIG`,
    /// `sk = DENY#…`, the serial as written), as deployments made before the
    /// entries got their own items hold them.
    ///
    /// # Errors
    /// SDK failures.
    pub async fn deny_legacy(&self, sk: &str) -> Result<(), WorldError> {
        self.put_config_item(sk, Some(("reason", "test".to_string()))).await
    }

    async fn put_deny_item(&self, pk: &str) -> Result<(), WorldError> {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        self.dynamodb
            .put_item()
            .table_name(TABLE)
            .item("pk", A::S(pk.into()))
            .item("sk", A::S("DENY".into()))
            .item("reason", A::S("test".into()))
            .send()
            .await?;
        Ok(())
    }

    async fn put_config_item(&self, sk: &str, attribute: Option<(&str, String)>) -> Result<(), WorldError> {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        let mut put = self
            .dynamodb
            .put_item()
            .table_name(TABLE)
            .item("pk", A::S("CONFIG".into()))
            .item("sk", A::S(sk.into()));
        if let Some((name, value)) = attribute {
            put = put.item(name, A::S(value));
        }
        put.send().await?;
        Ok(())
    }

    /// A device's first MQTT connection, as a real device makes it.
    ///
    /// # Errors
    /// When the device has no private key, or the broker does not answer.
    pub async fn connect(&self, device: &DeviceCert, client_id: &str) -> Result<ConnectResult, WorldError> {
        let key = device.key_pem.as_deref().ok_or("device has no private key")?;
        Ok(connect_once(
            self.emulator.mqtt_port,
            &self.server_ca_pem,
            &device.cert_pem,
            key,
            client_id,
        )
        .await?)
    }

    /// Connects a new device the way it happens in the field and returns its
    /// certificate id once IoT holds it PENDING_ACTIVATION.
    ///
    /// # Errors
    /// When the connection is not dropped as JITR requires.
    pub async fn first_connection(&self, device: &DeviceCert, client_id: &str) -> Result<String, WorldError> {
        let result = self.connect(device, client_id).await?;
        if result != ConnectResult::Dropped {
            return Err(format!("first connection of {client_id}: expected the JITR drop, got {result:?}").into());
        }
        let id = certificate_id(device);
        let status = self.certificate_status(&id).await?;
        if status.as_deref() != Some("PENDING_ACTIVATION") {
            return Err(format!("after the first connection of {client_id} the certificate is {status:?}").into());
        }
        Ok(id)
    }

    /// Puts a certificate into PENDING_ACTIVATION through the control plane,
    /// for certificates the emulator's TLS layer would refuse before JITR
    /// (expired, weak keys...). Real AWS would not let a control-plane call do
    /// this; here it stands in for IoT having auto-registered the certificate.
    /// With `ca_pem` the certificate is registered under that CA (the emulator
    /// checks the signature); without, it is registered with no CA.
    ///
    /// # Errors
    /// SDK failures.
    pub async fn stage_pending(&self, cert_pem: &str, ca_pem: Option<&str>) -> Result<String, WorldError> {
        let id = match ca_pem {
            Some(ca_pem) => {
                self.iot
                    .register_certificate()
                    .certificate_pem(cert_pem)
                    .ca_certificate_pem(ca_pem)
                    .status(CertificateStatus::Inactive)
                    .send()
                    .await?
                    .certificate_id
            }
            None => {
                self.iot
                    .register_certificate_without_ca()
                    .certificate_pem(cert_pem)
                    .status(CertificateStatus::Inactive)
                    .send()
                    .await?
                    .certificate_id
            }
        }
        .ok_or("no certificate id")?;
        self.iot
            .update_certificate()
            .certificate_id(&id)
            .new_status(CertificateStatus::PendingActivation)
            .send()
            .await?;
        Ok(id)
    }

    /// The IoT status of a certificate, `None` if it does not exist.
    ///
    /// # Errors
    /// SDK failures other than not-found.
    pub async fn certificate_status(&self, certificate_id: &str) -> Result<Option<String>, WorldError> {
        certificate_status(&self.iot, certificate_id).await
    }

    /// True when a thing of this name exists.
    ///
    /// # Errors
    /// SDK failures other than not-found.
    pub async fn thing_exists(&self, name: &str) -> Result<bool, WorldError> {
        match self.iot.describe_thing().thing_name(name).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The inventory record of a certificate, as raw attributes.
    ///
    /// # Errors
    /// SDK failures.
    pub async fn inventory_record(&self, certificate_id: &str) -> Result<Option<Item>, WorldError> {
        inventory_record(&self.dynamodb, TABLE, certificate_id).await
    }

    /// Environment settings for the registrar pointed at this world.
    pub fn registrar_env(&self) -> Vec<(String, String)> {
        [
            ("INVENTORY_TABLE", TABLE.to_string()),
            ("CREDENTIALS_BUCKET", BUCKET.to_string()),
            ("CREDENTIALS_KMS_KEY_ID", self.kms_key_arn.clone()),
            ("S3_FORCE_PATH_STYLE", "true".to_string()),
            ("CONFIG_CACHE_TTL_SECONDS", "60".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `events/jitr-direct.json` with this certificate's ids.
    ///
    /// # Errors
    /// When the sample file is missing or not JSON.
    pub fn direct_event(&self, certificate_id: &str, ca_id: &str) -> Result<Value, WorldError> {
        let mut event: Value = serde_json::from_str(&std::fs::read_to_string(
            workspace_root().join("events/jitr-direct.json"),
        )?)?;
        event["certificateId"] = json!(certificate_id);
        event["caCertificateId"] = json!(ca_id);
        event["awsAccountId"] = json!(crate::emulator::ACCOUNT_ID);
        Ok(event)
    }

    /// `events/jitr-sqs.json` with one record per body given (message ids `m0`, `m1`, …).
    ///
    /// # Errors
    /// When the sample file is missing or not JSON.
    pub fn sqs_event(&self, bodies: &[String]) -> Result<Value, WorldError> {
        let sample: Value =
            serde_json::from_str(&std::fs::read_to_string(workspace_root().join("events/jitr-sqs.json"))?)?;
        let template = sample["Records"][0].clone();
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let mut record = template.clone();
                record["messageId"] = json!(format!("m{i}"));
                record["body"] = json!(body);
                record
            })
            .collect();
        Ok(json!({ "Records": records }))
    }
}

/// A DynamoDB item.
pub type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// The IoT status of a certificate, `None` if it does not exist.
///
/// # Errors
/// SDK failures other than not-found.
pub async fn certificate_status(iot: &aws_sdk_iot::Client, certificate_id: &str) -> Result<Option<String>, WorldError> {
    match iot.describe_certificate().certificate_id(certificate_id).send().await {
        Ok(out) => Ok(out
            .certificate_description
            .and_then(|d| d.status)
            .map(|s| s.as_str().to_string())),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The inventory record of a certificate, as raw attributes.
///
/// # Errors
/// SDK failures.
pub async fn inventory_record(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    certificate_id: &str,
) -> Result<Option<Item>, WorldError> {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let out = dynamodb
        .get_item()
        .table_name(table)
        .key("pk", A::S(format!("CERT#{certificate_id}")))
        .key("sk", A::S("CERT".into()))
        .consistent_read(true)
        .send()
        .await?;
    Ok(out.item)
}

/// Registers a CA as ACTIVE with auto-registration, as an operator would:
/// registration code, verification certificate, `RegisterCACertificate`.
///
/// # Errors
/// SDK failures.
pub async fn register_ca(iot: &aws_sdk_iot::Client, ca: &TestCa) -> Result<String, WorldError> {
    let code = iot
        .get_registration_code()
        .send()
        .await?
        .registration_code
        .ok_or("no registration code")?;
    let verification = ca.verification_certificate(&code)?;
    let registered = iot
        .register_ca_certificate()
        .ca_certificate(&ca.cert_pem)
        .verification_certificate(verification)
        .set_as_active(true)
        .allow_auto_registration(true)
        .send()
        .await?;
    Ok(registered.certificate_id.ok_or("no CA certificate id")?)
}

/// The IoT certificate id of a device certificate: SHA-256 of its DER.
pub fn certificate_id(device: &DeviceCert) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &device.der))
}

/// Creates the inventory table as the SAM template defines it: `pk`/`sk` and
/// the sparse `expiry` index on `expiryShard`/`expiryKey`.
///
/// # Errors
/// SDK failures.
pub async fn create_inventory_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), WorldError> {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, kind: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("expiryShard")?)
        .attribute_definitions(attr("expiryKey")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("expiry")
                .key_schema(key("expiryShard", KeyType::Hash)?)
                .key_schema(key("expiryKey", KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn aws_sdk_kms_client(sdk: &SdkConfig) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(sdk)
}
