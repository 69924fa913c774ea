//! The service's bounds on its inputs, and the counters that enforce them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// API Gateway's WebSocket frame size, 32 KB: a message the reference architecture could not
/// take in one frame ("Quotas for configuring and running a WebSocket in API Gateway",
/// <https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-execution-service-websocket-limits-table.html>).
pub(crate) const API_GATEWAY_FRAME_BYTES: usize = 32 * 1024;

/// Every bound of the service; each is a flag of the example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest message answered; a larger one gets an `error` frame "the payload was too
    /// large" and the connection stays open. Messages over [`Limits::hard_cap_bytes`] are
    /// cut off by the WebSocket layer itself, which closes the connection (code 1009).
    pub(crate) max_message_bytes: usize,
    /// Connections open at once on the server; more are refused with 503.
    pub(crate) max_connections: usize,
    /// Connections open at once from one client address; more are refused with 429.
    pub(crate) max_connections_per_client: usize,
    /// Questions being answered at once for one user, across their connections; more get an
    /// `error` frame. Anonymous users are counted per client address.
    pub(crate) max_asks_per_user: usize,
    /// Questions a connection may queue while one is answered; more get an `error` frame.
    pub(crate) max_queued_questions: usize,
    /// How long a connection may go without a frame from the client, while no answer is
    /// streaming, before the server closes it.
    pub(crate) idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: API_GATEWAY_FRAME_BYTES,
            max_connections: 1024,
            max_connections_per_client: 16,
            max_asks_per_user: 4,
            max_queued_questions: 8,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl Limits {
    /// The WebSocket layer's own message and frame limit: four times the answered limit, so
    /// a message somewhat too large is read and refused in plain words, while a huge one is
    /// cut off without being buffered.
    pub(crate) fn hard_cap_bytes(&self) -> usize {
        self.max_message_bytes.saturating_mul(4).max(1024)
    }
}

/// The counts behind [`Limits`], shared by every connection of a router.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    connections: Mutex<Connections>,
    asks: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The server holds its most connections.
    Server,
    /// This client address holds its most connections.
    Client,
}

impl Gauges {
    /// Counts a connection from `client`, or says which bound it would pass.
    pub(crate) fn connect(
        self: &Arc<Self>,
        client: IpAddr,
        limits: &Limits,
    ) -> Result<ConnectionSlot, Full> {
        let mut c = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if c.total >= limits.max_connections {
            return Err(Full::Server);
        }
        let mine = c.per_client.entry(client).or_default();
        if *mine >= limits.max_connections_per_client {
            return Err(Full::Client);
        }
        *mine += 1;
        c.total += 1;
        Ok(ConnectionSlot {
            gauges: Arc::clone(self),
            client,
        })
    }

    /// Counts an ask of `user`, unless the user has `max` in flight already.
    pub(crate) fn ask(self: &Arc<Self>, user: &str, max: usize) -> Option<AskSlot> {
        let mut asks = self.asks.lock().unwrap_or_else(PoisonError::into_inner);
        let n = asks.entry(user.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AskSlot {
            gauges: Arc::clone(self),
            user: user.to_string(),
        })
    }
}

/// A counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    gauges: Arc<Gauges>,
    client: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self
            .gauges
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total -= 1;
        if let Some(n) = c.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.client);
            }
        }
    }
}

/// A counted ask; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct AskSlot {
    gauges: Arc<Gauges>,
    user: String,
}

impl Drop for AskSlot {
    fn drop(&mut self) {
        let mut asks = self
            .gauges
            .asks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = asks.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                asks.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_bounded_per_server_and_per_client_and_released() {
        let gauges = Arc::new(Gauges::default());
        let limits = Limits {
            max_connections: 3,
            max_connections_per_client: 2,
            ..Limits::default()
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gauges.connect(a, &limits).unwrap();
        let _a2 = gauges.connect(a, &limits).unwrap();
        assert_eq!(gauges.connect(a, &limits).unwrap_err(), Full::Client);
        let _b1 = gauges.connect(b, &limits).unwrap();
        assert_eq!(gauges.connect(b, &limits).unwrap_err(), Full::Server);
        drop(a1);
        assert!(gauges.connect(a, &limits).is_ok());
    }

    #[test]
    fn asks_are_bounded_per_user_and_released() {
        let gauges = Arc::new(Gauges::default());
        let first = gauges.ask("alice", 1).unwrap();
        assert!(gauges.ask("alice", 1).is_none());
        assert!(gauges.ask("bob", 1).is_some());
        drop(first);
        assert!(gauges.ask("alice", 1).is_some());
    }

    #[test]
    fn the_default_message_limit_is_api_gateways_frame_size() {
        let limits = Limits::default();
        assert_eq!(limits.max_message_bytes, 32 * 1024);
        assert!(limits.hard_cap_bytes() > limits.max_message_bytes);
    }
}
