//! One device-side MQTT connection for the simulated devices of the CLI
//! (rotation agent, fleet provisioning): connect and wait for the CONNACK,
//! subscribe and check every SUBACK code, publish at QoS 1 and wait for the
//! PUBACK, and wait for the next message on given topics.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::connect::Broker;

/// What the connection task hands over.
pub enum Incoming {
    Message(String, Vec<u8>),
    PubAck,
    SubAck(Vec<SubscribeReasonCode>),
    Closed(String),
}

/// One MQTT connection, polled by its own task so that it stays alive
/// (keep-alive pings) while the agent waits elsewhere.
pub struct Conn {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Incoming>,
    task: tokio::task::JoinHandle<()>,
    /// Messages received while waiting for something else.
    inbox: VecDeque<(String, Vec<u8>)>,
    closed: Option<String>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// Connects and waits for a successful CONNACK.
    pub async fn open(
        broker: &Broker,
        config: Arc<rustls::ClientConfig>,
        client_id: &str,
        deadline: Instant,
    ) -> Result<Self, String> {
        let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let until = deadline.min(Instant::now() + Duration::from_secs(10));
        match tokio::time::timeout_at(until, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {}
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => return Err(format!("CONNACK {:?}", ack.code)),
            Ok(Ok(other)) => return Err(format!("unexpected {other:?} before CONNACK")),
            Ok(Err(e)) => return Err(format!("{} before CONNACK", describe(&e))),
            Err(_) => return Err("no CONNACK in time".into()),
        }
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let incoming = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => Incoming::Message(p.topic, p.payload.to_vec()),
                    Ok(Event::Incoming(Packet::PubAck(_))) => Incoming::PubAck,
                    Ok(Event::Incoming(Packet::SubAck(s))) => Incoming::SubAck(s.return_codes),
                    Ok(Event::Incoming(Packet::Disconnect)) => Incoming::Closed("the broker disconnected".into()),
                    Ok(_) => continue,
                    Err(e) => Incoming::Closed(describe(&e)),
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
    pub fn closed(&mut self) -> Option<&str> {
        while self.closed.is_none() {
            match self.events.try_recv() {
                Ok(Incoming::Message(topic, payload)) => self.inbox.push_back((topic, payload)),
                Ok(Incoming::Closed(why)) => self.closed = Some(why),
                Ok(_) => {}
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.closed = Some("connection task ended".into()),
            }
        }
        self.closed.as_deref()
    }

    /// The next event before `deadline` (`Ok(None)` then); messages are
    /// handed out like any event. An error once the connection is closed.
    pub async fn recv(&mut self, deadline: Instant) -> Result<Option<Incoming>, String> {
        if let Some(why) = &self.closed {
            return Err(why.clone());
        }
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Err(_) => Ok(None),
            Ok(None) => {
                self.closed = Some("connection task ended".into());
                Err("connection task ended".into())
            }
            Ok(Some(Incoming::Closed(why))) => {
                self.closed = Some(why.clone());
                Err(why)
            }
            Ok(Some(event)) => Ok(Some(event)),
        }
    }

    /// Subscribes (QoS 1) and checks every SUBACK return code.
    pub async fn subscribe(&mut self, filters: &[String], deadline: Instant) -> Result<(), String> {
        let topics = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client.subscribe_many(topics).await.map_err(|e| e.to_string())?;
        loop {
            match self.recv(deadline).await {
                Err(e) => {
                    return Err(format!(
                        "{e} after SUBSCRIBE to {} (does the policy allow it?)",
                        filters.join(", ")
                    ));
                }
                Ok(None) => return Err(format!("no SUBACK for {}", filters.join(", "))),
                Ok(Some(Incoming::SubAck(codes))) => {
                    return match codes.iter().position(|c| matches!(c, SubscribeReasonCode::Failure)) {
                        Some(i) => Err(format!(
                            "subscription to {} refused (does the policy allow it?)",
                            filters.get(i).map_or("?", String::as_str)
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
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>, deadline: Instant) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match self.recv(deadline).await {
                Err(e) => return Err(format!("{e} (does the policy allow publishing on {topic}?)")),
                Ok(None) => return Err(format!("no PUBACK for {topic}")),
                Ok(Some(Incoming::PubAck)) => return Ok(()),
                Ok(Some(Incoming::Message(topic, payload))) => self.inbox.push_back((topic, payload)),
                Ok(Some(_)) => {}
            }
        }
    }

    /// The next message on one of `topics` (earlier ones first), or `Ok(None)`
    /// at the deadline; messages on other topics are kept for later.
    pub async fn next_on(&mut self, topics: &[&str], deadline: Instant) -> Result<Option<(String, Vec<u8>)>, String> {
        if let Some(i) = self.inbox.iter().position(|(t, _)| topics.contains(&t.as_str())) {
            return Ok(self.inbox.remove(i));
        }
        loop {
            match self.recv(deadline).await? {
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
pub fn describe(error: &rumqttc::ConnectionError) -> String {
    match error {
        rumqttc::ConnectionError::Tls(e) => format!("TLS: {e}"),
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => {
            "the broker closed the connection".to_string()
        }
        rumqttc::ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the broker closed the connection".to_string()
        }
        other => other.to_string(),
    }
}
