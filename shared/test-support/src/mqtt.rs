//! A minimal MQTT 3.1.1 CONNECT over mutual TLS: what a device's first
//! connection does, enough to trigger just-in-time registration and to learn
//! whether a certificate is accepted.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the broker did with a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResult {
    /// CONNACK with return code 0.
    Accepted,
    /// CONNACK with a non-zero return code.
    Refused(u8),
    /// The connection was closed without a CONNACK (JITR's first connection,
    /// or a refusal under `AUTH=true`).
    Dropped,
    /// The TLS handshake failed (an untrusted certificate).
    HandshakeFailed,
}

/// Errors setting up the client.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Connects to `127.0.0.1:port` with the device's certificate and key, sends
/// CONNECT with `client_id`, and reports the broker's answer.
///
/// # Errors
/// [`MqttError`] for unusable credentials or a broker that does not answer.
pub async fn connect_once(
    port: u16,
    server_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    client_id: &str,
) -> Result<ConnectResult, MqttError> {
    let config = client_config(server_ca_pem, cert_pem, key_pem)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let server = ServerName::try_from("localhost").map_err(|e| MqttError::Pem(e.to_string()))?;
    let timeout = Duration::from_secs(15);
    let mut tls = match tokio::time::timeout(timeout, connector.connect(server, tcp)).await {
        Err(_) => return Err(MqttError::Timeout(timeout)),
        Ok(Err(_)) => return Ok(ConnectResult::HandshakeFailed),
        Ok(Ok(tls)) => tls,
    };
    if tls.write_all(&connect_packet(client_id)).await.is_err() {
        // TLS 1.3 reports a refused client certificate on first use.
        return Ok(ConnectResult::HandshakeFailed);
    }
    let _ = tls.flush().await;
    let mut connack = [0u8; 4];
    let result = match tokio::time::timeout(timeout, tls.read_exact(&mut connack)).await {
        Err(_) => return Err(MqttError::Timeout(timeout)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => ConnectResult::Dropped,
        Ok(Err(e)) if is_tls_alert(&e) => ConnectResult::HandshakeFailed,
        Ok(Err(_)) => ConnectResult::Dropped,
        Ok(Ok(_)) if connack[0] == 0x20 && connack[3] == 0 => ConnectResult::Accepted,
        Ok(Ok(_)) => ConnectResult::Refused(connack[3]),
    };
    // DISCONNECT, politely.
    let _ = tls.write_all(&[0xE0, 0x00]).await;
    let _ = tls.shutdown().await;
    Ok(result)
}

/// A rustls client configuration for a device: trusts the broker's CA and
/// presents the device certificate (aws-lc-rs, like the rest of the project).
///
/// # Errors
/// [`MqttError`] for unreadable PEMs or keys rustls refuses.
pub fn client_config(
    server_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    onboarding_emulator::tls::client_config(server_ca_pem, cert_pem, key_pem).map_err(|e| MqttError::Pem(e.to_string()))
}

fn is_tls_alert(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// An MQTT 3.1.1 CONNECT packet, clean session, keep-alive 60 s.
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let mut variable = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C];
    variable.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes());
    variable.extend_from_slice(&id[..id.len().min(usize::from(u16::MAX))]);
    let mut packet = vec![0x10];
    let mut remaining = variable.len();
    loop {
        let mut byte = u8::try_from(remaining % 128).unwrap_or(0);
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&variable);
    packet
}
