//! One device-side MQTT connection (rumqttc over mutual TLS): connect and
//! wait for the CONNACK, subscribe and check every SUBACK code, publish at
//! QoS 1 and wait for the PUBACK, and wait for the next message on given
//! topics. Everything a device does over MQTT goes through [`Conn`]: the
//! rotation agent, fleet provisioning by claim, the CLI's simulated devices
//! and the tests' first connections ([`connect_once`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, NetworkOptions, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where devices connect.
#[derive(Debug, Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// The CA that signs the broker's certificate.
    pub server_ca_pem: String,
}

/// The longest [`Conn::open`] waits for a CONNACK.
const CONNACK_WAIT: Duration = Duration::from_secs(10);
/// rumqttc's own limit on TCP + TLS + CONNECT/CONNACK (its default).
const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection ended.
#[derive(Debug, Clone)]
pub enum Closed {
    /// The broker sent DISCONNECT.
    ByBroker,
    /// The connection failed.
    Failed(Arc<ConnectionError>),
    /// The task polling the connection is gone.
    TaskEnded,
}

impl Closed {
    /// rumqttc's error, when the connection failed.
    pub fn error(&self) -> Option<&ConnectionError> {
        match self {
            Self::Failed(e) => Some(e),
            Self::ByBroker | Self::TaskEnded => None,
        }
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ByBroker => f.write_str("the broker disconnected"),
            Self::Failed(e) => f.write_str(&describe(e)),
            Self::TaskEnded => f.write_str("connection task ended"),
        }
    }
}

/// A connection that never got its CONNACK.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The broker answered CONNECT with a refusal.
    #[error("CONNACK {0:?}")]
    Refused(ConnectReturnCode),
    /// Something else came first.
    #[error("unexpected {0:?} before CONNACK")]
    Unexpected(Box<Event>),
    /// TCP, TLS or MQTT failed (rumqttc also reports a refusing CONNACK so).
    #[error("{} before CONNACK", describe(.0))]
    Failed(Box<ConnectionError>),
    #[error("no CONNACK in time")]
    Timeout,
}

/// An operation on an open connection that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// rumqttc did not take the request.
    #[error("{0}")]
    Client(#[from] rumqttc::ClientError),
    /// The connection is closed.
    #[error("{0}")]
    Closed(Closed),
    #[error("{closed} after SUBSCRIBE to {filters} (does the policy allow it?)")]
    ClosedAfterSubscribe { closed: Closed, filters: String },
    #[error("no SUBACK for {0}")]
    NoSubAck(String),
    #[error("subscription to {0} refused (does the policy allow it?)")]
    SubscriptionRefused(String),
    #[error("{closed} (does the policy allow publishing on {topic}?)")]
    ClosedAfterPublish { closed: Closed, topic: String },
    #[error("no PUBACK for {0}")]
    NoPubAck(String),
}

/// What the connection task hands over.
#[derive(Debug)]
pub enum Incoming {
    Message(String, Vec<u8>),
    PubAck,
    SubAck(Vec<SubscribeReasonCode>),
    Closed(Closed),
}

/// One MQTT connection, polled by its own task so that it stays alive
/// (keep-alive pings) while the device waits elsewhere. Dropping it drops
/// the connection without a DISCONNECT; [`Conn::close`] says goodbye.
#[derive(Debug)]
pub struct Conn {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Incoming>,
    task: tokio::task::JoinHandle<()>,
    /// Messages received while waiting for something else.
    inbox: VecDeque<(String, Vec<u8>)>,
    closed: Option<Closed>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// Connects and waits for a successful CONNACK (at most 10 s, and not
    /// past `deadline`).
    ///
    /// # Errors
    /// [`ConnectError`] when no successful CONNACK comes.
    pub async fn open(
        broker: &Broker,
        config: Arc<rustls::ClientConfig>,
        client_id: &str,
        deadline: Instant,
    ) -> Result<Self, ConnectError> {
        let until = deadline.min(Instant::now() + CONNACK_WAIT);
        Self::open_within(broker, config, client_id, until, NETWORK_TIMEOUT).await
    }

    /// Connects and waits for a successful CONNACK until `until`, letting
    /// rumqttc take up to `network_timeout` (whole seconds, at least one) for
    /// TCP, TLS and CONNECT.
    ///
    /// # Errors
    /// [`ConnectError`] when no successful CONNACK comes.
    pub async fn open_within(
        broker: &Broker,
        config: Arc<rustls::ClientConfig>,
        client_id: &str,
        until: Instant,
        network_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(network_timeout.as_secs().max(1));
        eventloop.set_network_options(network);
        match tokio::time::timeout_at(until, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {}
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => return Err(ConnectError::Refused(ack.code)),
            Ok(Ok(other)) => return Err(ConnectError::Unexpected(Box::new(other))),
            Ok(Err(e)) => return Err(ConnectError::Failed(Box::new(e))),
            Err(_) => return Err(ConnectError::Timeout),
        }
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let incoming = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => Incoming::Message(p.topic, p.payload.to_vec()),
                    Ok(Event::Incoming(Packet::PubAck(_))) => Incoming::PubAck,
                    Ok(Event::Incoming(Packet::SubAck(s))) => Incoming::SubAck(s.return_codes),
                    Ok(Event::Incoming(Packet::Disconnect)) => Incoming::Closed(Closed::ByBroker),
                    Ok(_) => continue,
                    Err(e) => Incoming::Closed(Closed::Failed(Arc::new(e))),
                };
                let last = matches!(incoming, Incoming::Closed(_));
                if tx.send(incoming).is_err() || last {
                    return;
                }
            }
        });
        Ok(Self {
            client,
            events,
            task,
            inbox: VecDeque::new(),
            closed: None,
        })
    }

    /// Why the connection closed, if it did (as far as is known now).
    pub fn closed(&mut self) -> Option<&Closed> {
        while self.closed.is_none() {
            match self.events.try_recv() {
                Ok(Incoming::Message(topic, payload)) => self.inbox.push_back((topic, payload)),
                Ok(Incoming::Closed(why)) => self.closed = Some(why),
                Ok(_) => {}
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.closed = Some(Closed::TaskEnded),
            }
        }
        self.closed.as_ref()
    }

    /// The next event before `deadline` (`Ok(None)` then); messages are
    /// handed out like any event.
    ///
    /// # Errors
    /// Why the connection closed, once it is closed.
    pub async fn recv(&mut self, deadline: Instant) -> Result<Option<Incoming>, Closed> {
        if let Some(why) = &self.closed {
            return Err(why.clone());
        }
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Err(_) => Ok(None),
            Ok(None) => {
                self.closed = Some(Closed::TaskEnded);
                Err(Closed::TaskEnded)
            }
            Ok(Some(Incoming::Closed(why))) => {
                self.closed = Some(why.clone());
                Err(why)
            }
            Ok(Some(event)) => Ok(Some(event)),
        }
    }

    /// Subscribes (QoS 1) and checks every SUBACK return code.
    ///
    /// # Errors
    /// [`MqttError`] for a refused subscription, a closed connection or no SUBACK by `deadline`.
    pub async fn subscribe(&mut self, filters: &[String], deadline: Instant) -> Result<(), MqttError> {
        let topics = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client.subscribe_many(topics).await?;
        loop {
            match self.recv(deadline).await {
                Err(closed) => {
                    return Err(MqttError::ClosedAfterSubscribe {
                        closed,
                        filters: filters.join(", "),
                    });
                }
                Ok(None) => return Err(MqttError::NoSubAck(filters.join(", "))),
                Ok(Some(Incoming::SubAck(codes))) => {
                    return match codes.iter().position(|c| matches!(c, SubscribeReasonCode::Failure)) {
                        Some(i) => Err(MqttError::SubscriptionRefused(
                            filters.get(i).map_or("?", String::as_str).to_string(),
                        )),
                        None => Ok(()),
                    };
                }
                Ok(Some(Incoming::Message(topic, payload))) => self.inbox.push_back((topic, payload)),
                Ok(Some(_)) => {}
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    ///
    /// # Errors
    /// [`MqttError`] for a closed connection or no PUBACK by `deadline`.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>, deadline: Instant) -> Result<(), MqttError> {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await?;
        loop {
            match self.recv(deadline).await {
                Err(closed) => {
                    return Err(MqttError::ClosedAfterPublish {
                        closed,
                        topic: topic.to_string(),
                    });
                }
                Ok(None) => return Err(MqttError::NoPubAck(topic.to_string())),
                Ok(Some(Incoming::PubAck)) => return Ok(()),
                Ok(Some(Incoming::Message(topic, payload))) => self.inbox.push_back((topic, payload)),
                Ok(Some(_)) => {}
            }
        }
    }

    /// The next message on one of `topics` (earlier ones first), or `Ok(None)`
    /// at the deadline; messages on other topics are kept for later.
    ///
    /// # Errors
    /// [`MqttError::Closed`] once the connection is closed.
    pub async fn next_on(
        &mut self,
        topics: &[&str],
        deadline: Instant,
    ) -> Result<Option<(String, Vec<u8>)>, MqttError> {
        if let Some(i) = self.inbox.iter().position(|(t, _)| topics.contains(&t.as_str())) {
            return Ok(self.inbox.remove(i));
        }
        loop {
            match self.recv(deadline).await.map_err(MqttError::Closed)? {
                None => return Ok(None),
                Some(Incoming::Message(topic, payload)) if topics.contains(&topic.as_str()) => {
                    return Ok(Some((topic, payload)));
                }
                Some(Incoming::Message(topic, payload)) => self.inbox.push_back((topic, payload)),
                Some(_) => {}
            }
        }
    }

    /// DISCONNECT, politely, and a moment for it to leave.
    pub async fn close(mut self) {
        if self.client.disconnect().await.is_ok() {
            let _ = self.recv(Instant::now() + Duration::from_millis(500)).await;
        }
    }
}

/// A connection error in words.
pub fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::Tls(e) => format!("TLS: {e}"),
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => {
            "the broker closed the connection".to_string()
        }
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the broker closed the connection".to_string()
        }
        other => other.to_string(),
    }
}

/// A connection error in more words: a TLS failure inside an I/O error, a
/// close without the TLS close_notify, a close before the CONNACK.
pub fn explain(error: &ConnectionError) -> String {
    let from_io = |e: &std::io::Error| match tls_failure(e) {
        Some(tls) => format!("TLS: {tls}"),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the broker closed the connection without a TLS close_notify".to_string()
        }
        None => e.to_string(),
    };
    match error {
        ConnectionError::Tls(rumqttc::TlsError::TLS(e)) => format!("TLS: {e}"),
        ConnectionError::Tls(rumqttc::TlsError::Io(e)) | ConnectionError::Io(e) => from_io(e),
        ConnectionError::MqttState(rumqttc::StateError::Io(e))
        | ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::Io(e))) => from_io(e),
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => {
            "the broker closed the connection without a CONNACK".to_string()
        }
        other => other.to_string(),
    }
}

/// The TLS error inside an I/O error (an alert, a refused certificate).
fn tls_failure(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// The I/O error behind a failure after TCP connected (reading or writing
/// MQTT over TLS).
fn session_io(error: &ConnectionError) -> Option<&std::io::Error> {
    match error {
        ConnectionError::MqttState(rumqttc::StateError::Io(e))
        | ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::Io(e))) => Some(e),
        _ => None,
    }
}

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

/// A [`connect_once`] that got no verdict from the broker.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connection: {0}")]
    Io(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// How long [`connect_once`] waits for TCP, TLS and the CONNACK.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// A device's first connection, as a real device makes it: CONNECT as
/// `client_id`, the broker's verdict, DISCONNECT when accepted.
///
/// # Errors
/// [`ProbeError`] when TCP does not connect or the broker does not answer.
pub async fn connect_once(
    broker: &Broker,
    config: Arc<rustls::ClientConfig>,
    client_id: &str,
) -> Result<ConnectResult, ProbeError> {
    let until = Instant::now() + PROBE_TIMEOUT;
    match Conn::open_within(broker, config, client_id, until, PROBE_TIMEOUT).await {
        Ok(conn) => {
            conn.close().await;
            Ok(ConnectResult::Accepted)
        }
        Err(e) => verdict(e),
    }
}

/// The broker's verdict in a failed connection.
fn verdict(error: ConnectError) -> Result<ConnectResult, ProbeError> {
    let error = match error {
        ConnectError::Refused(code) => return Ok(ConnectResult::Refused(return_code(code))),
        ConnectError::Timeout => return Err(ProbeError::Timeout(PROBE_TIMEOUT)),
        ConnectError::Unexpected(_) => return Ok(ConnectResult::Dropped),
        ConnectError::Failed(e) => *e,
    };
    match error {
        ConnectionError::ConnectionRefused(code) => Ok(ConnectResult::Refused(return_code(code))),
        ConnectionError::NetworkTimeout => Err(ProbeError::Timeout(PROBE_TIMEOUT)),
        // TCP itself did not connect.
        ConnectionError::Io(e) => Err(ProbeError::Io(e)),
        ConnectionError::Tls(_) => Ok(ConnectResult::HandshakeFailed),
        other => match session_io(&other) {
            // TLS 1.3 reports a refused client certificate on first use: an
            // alert on the first read, or a write into a closed connection.
            Some(e) if tls_failure(e).is_some() || e.kind() == std::io::ErrorKind::BrokenPipe => {
                Ok(ConnectResult::HandshakeFailed)
            }
            _ => Ok(ConnectResult::Dropped),
        },
    }
}

/// The MQTT 3.1.1 CONNACK return code.
fn return_code(code: ConnectReturnCode) -> u8 {
    match code {
        ConnectReturnCode::Success => 0,
        ConnectReturnCode::RefusedProtocolVersion => 1,
        ConnectReturnCode::BadClientId => 2,
        ConnectReturnCode::ServiceUnavailable => 3,
        ConnectReturnCode::BadUserNamePassword => 4,
        ConnectReturnCode::NotAuthorized => 5,
    }
}

/// A device's hello, as `onboard device connect` makes it: connect as
/// `client_id`, publish `payload` on `topic` at QoS 1 and wait for the
/// PUBACK, then drop the connection.
///
/// # Errors
/// What went wrong, in words ([`explain`]).
pub async fn publish_once(
    broker: &Broker,
    config: Arc<rustls::ClientConfig>,
    client_id: &str,
    topic: &str,
    payload: Vec<u8>,
) -> Result<(), String> {
    let until = Instant::now() + CONNACK_WAIT;
    let mut conn = match Conn::open_within(broker, config, client_id, until, NETWORK_TIMEOUT).await {
        Ok(conn) => conn,
        Err(ConnectError::Refused(code)) => return Err(format!("CONNACK {code:?}")),
        Err(ConnectError::Unexpected(other)) => return Err(format!("unexpected {other:?}")),
        Err(ConnectError::Failed(e)) => return Err(explain(&e)),
        Err(ConnectError::Timeout) => return Err("no answer to CONNECT within 10 s".into()),
    };
    // A quiet connection: no PUBACK within 5 s is none.
    match conn
        .publish(topic, payload, Instant::now() + Duration::from_secs(5))
        .await
    {
        Ok(()) => Ok(()),
        Err(MqttError::ClosedAfterPublish { closed, topic }) => Err(format!(
            "publish on {topic}: {}",
            closed.error().map_or_else(|| closed.to_string(), explain)
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::new(kind, "test")
    }

    fn in_session(e: std::io::Error) -> ConnectError {
        ConnectError::Failed(Box::new(ConnectionError::MqttState(
            rumqttc::StateError::Deserialization(rumqttc::Error::Io(e)),
        )))
    }

    #[test]
    fn a_first_connection_is_classified_as_the_broker_answered_it() {
        let verdict = |e| verdict(e).expect("a verdict");
        assert_eq!(
            verdict(ConnectError::Refused(ConnectReturnCode::NotAuthorized)),
            ConnectResult::Refused(5)
        );
        assert_eq!(
            verdict(ConnectError::Failed(Box::new(ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadClientId
            )))),
            ConnectResult::Refused(2)
        );
        assert_eq!(
            verdict(ConnectError::Failed(Box::new(ConnectionError::MqttState(
                rumqttc::StateError::ConnectionAborted
            )))),
            ConnectResult::Dropped
        );
        assert_eq!(
            verdict(in_session(io(std::io::ErrorKind::UnexpectedEof))),
            ConnectResult::Dropped
        );
        assert_eq!(
            verdict(in_session(io(std::io::ErrorKind::ConnectionReset))),
            ConnectResult::Dropped
        );
        assert_eq!(
            verdict(in_session(io(std::io::ErrorKind::BrokenPipe))),
            ConnectResult::HandshakeFailed
        );
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateUnknown),
        );
        assert_eq!(verdict(in_session(alert)), ConnectResult::HandshakeFailed);
        assert_eq!(
            verdict(ConnectError::Failed(Box::new(ConnectionError::Tls(
                rumqttc::TlsError::TLS(rustls::Error::DecryptError)
            )))),
            ConnectResult::HandshakeFailed
        );
        assert!(matches!(
            super::verdict(ConnectError::Failed(Box::new(ConnectionError::Io(io(
                std::io::ErrorKind::ConnectionRefused
            ))))),
            Err(ProbeError::Io(_))
        ));
        assert!(matches!(
            super::verdict(ConnectError::Timeout),
            Err(ProbeError::Timeout(_))
        ));
    }

    #[test]
    fn errors_read_as_before() {
        let aborted = ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted);
        assert_eq!(describe(&aborted), "the broker closed the connection");
        assert_eq!(explain(&aborted), "the broker closed the connection without a CONNACK");
        let eof = ConnectionError::MqttState(rumqttc::StateError::Io(io(std::io::ErrorKind::UnexpectedEof)));
        assert_eq!(
            explain(&eof),
            "the broker closed the connection without a TLS close_notify"
        );
        let alert = ConnectionError::Tls(rumqttc::TlsError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
        )));
        assert!(explain(&alert).starts_with("TLS: "), "{}", explain(&alert));
        assert_eq!(
            ConnectError::Failed(Box::new(aborted)).to_string(),
            "the broker closed the connection before CONNACK"
        );
        assert_eq!(ConnectError::Timeout.to_string(), "no CONNACK in time");
        assert_eq!(
            ConnectError::Refused(ConnectReturnCode::NotAuthorized).to_string(),
            "CONNACK NotAuthorized"
        );
        assert_eq!(
            MqttError::ClosedAfterPublish {
                closed: Closed::ByBroker,
                topic: "t".into()
            }
            .to_string(),
            "the broker disconnected (does the policy allow publishing on t?)"
        );
        assert_eq!(
            MqttError::ClosedAfterSubscribe {
                closed: Closed::TaskEnded,
                filters: "a, b".into()
            }
            .to_string(),
            "connection task ended after SUBSCRIBE to a, b (does the policy allow it?)"
        );
        assert_eq!(MqttError::NoPubAck("t".into()).to_string(), "no PUBACK for t");
        assert_eq!(MqttError::NoSubAck("a, b".into()).to_string(), "no SUBACK for a, b");
        assert_eq!(
            MqttError::SubscriptionRefused("a".into()).to_string(),
            "subscription to a refused (does the policy allow it?)"
        );
    }

    #[test]
    fn every_connack_code_keeps_its_number() {
        for (code, number) in [
            (ConnectReturnCode::Success, 0),
            (ConnectReturnCode::RefusedProtocolVersion, 1),
            (ConnectReturnCode::BadClientId, 2),
            (ConnectReturnCode::ServiceUnavailable, 3),
            (ConnectReturnCode::BadUserNamePassword, 4),
            (ConnectReturnCode::NotAuthorized, 5),
        ] {
            assert_eq!(return_code(code), number);
        }
    }

    /// A listener that takes TCP and closes it at once: no TLS, no CONNACK.
    #[tokio::test]
    async fn a_closed_socket_is_a_failed_handshake_or_a_drop_never_an_acceptance() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let broker = Broker {
            host: "127.0.0.1".into(),
            port,
            server_ca_pem: String::new(),
        };
        let config = test_config();
        let result = connect_once(&broker, config.clone(), "probe-1")
            .await
            .expect("a verdict");
        assert!(
            matches!(result, ConnectResult::HandshakeFailed | ConnectResult::Dropped),
            "{result:?}"
        );
        let opened = Conn::open(&broker, config, "probe-2", Instant::now() + Duration::from_secs(5)).await;
        assert!(matches!(opened, Err(ConnectError::Failed(_))), "{opened:?}");
    }

    /// Nothing listens: TCP is refused, and no verdict is invented.
    #[tokio::test]
    async fn no_listener_is_an_error_not_a_verdict() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let broker = Broker {
            host: "127.0.0.1".into(),
            port,
            server_ca_pem: String::new(),
        };
        let result = connect_once(&broker, test_config(), "probe-3").await;
        assert!(matches!(result, Err(ProbeError::Io(_))), "{result:?}");
    }

    fn test_config() -> Arc<rustls::ClientConfig> {
        let ca = rcgen::KeyPair::generate().expect("key");
        let ca_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&ca)
            .expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["device".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        crate::client_config(&ca_cert.pem(), &cert.pem(), &key.serialize_pem()).expect("config")
    }
}
