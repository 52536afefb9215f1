//! [`ClusterClient`]: one connection to each silo of a cluster, and a
//! memory of which silo owns which object, so calls go straight to the
//! owner instead of through a silo that would forward them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rio_protocol::{CallRequest, Request, Response};
use serde_bytes::ByteBuf;

use crate::{Calls, Client, ClientError, ConnectOptions};

/// Objects remembered at most; past that the memory starts afresh.
const ROUTES_MAX: usize = 1_000_000;

/// Calls objects through whichever silo of a cluster owns them. The first
/// call to an object goes to any silo, which answers (through forwarding
/// if need be) and says who the owner is; later calls go there. If an
/// object moves, its old owner forwards the call and the answer names the
/// new owner, so the memory corrects itself. Clone it freely.
#[derive(Clone)]
pub struct ClusterClient {
    silos: std::sync::Arc<Silos>,
}

struct Silos {
    connections: Vec<(String, Client)>,
    /// (service type, object id) → index into `connections`.
    routes: Mutex<HashMap<(String, String), usize>>,
    next: AtomicUsize,
}

impl ClusterClient {
    /// Connects to every silo at `addresses` (`host:port` each).
    pub async fn connect(addresses: &[String]) -> Result<ClusterClient, ClientError> {
        ClusterClient::connect_with(addresses, &ConnectOptions::default()).await
    }

    /// As [`ClusterClient::connect`], with a token, TLS or another reply
    /// limit for every connection.
    pub async fn connect_with(
        addresses: &[String],
        options: &ConnectOptions,
    ) -> Result<ClusterClient, ClientError> {
        if addresses.is_empty() {
            return Err(ClientError::NoAddress);
        }
        let mut connections = Vec::with_capacity(addresses.len());
        for address in addresses {
            connections.push((
                address.clone(),
                Client::connect_with(address, options).await?,
            ));
        }
        Ok(ClusterClient {
            silos: std::sync::Arc::new(Silos {
                connections,
                routes: Mutex::default(),
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// The connection to the first silo, for requests that are not calls.
    pub fn any_silo(&self) -> &Client {
        &self.silos.connections[0].1
    }
}

/// Sent to the object's owner when it is known (see [`ClusterClient`]). A
/// keyed retry may go to another silo: the key's record is in the cluster
/// store, so any owner finds it.
impl Calls for ClusterClient {
    async fn call_raw_keyed(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        payload: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        let silos = &self.silos;
        let key = (service_type.to_string(), object_id.to_string());
        let known = silos
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let index = known.unwrap_or_else(|| {
            silos.next.fetch_add(1, Ordering::Relaxed) % silos.connections.len()
        });
        let mut request = Request::RoutedCall(CallRequest {
            service_type: key.0.clone(),
            object_id: key.1.clone(),
            message_type: message_type.to_string(),
            payload: ByteBuf::from(payload),
            timeout_ms: None,
            idempotency_key: idempotency_key.map(str::to_string),
        });
        let client = &silos.connections[index].1;
        let Request::RoutedCall(call) = &mut request else {
            unreachable!("built just above")
        };
        call.timeout_ms = Some(client.timeout_ms());
        match client.request(request).await {
            Ok(Response::Routed { payload, owner }) => {
                let owner_index = silos
                    .connections
                    .iter()
                    .position(|(address, _)| *address == owner);
                let mut routes = silos.routes.lock().unwrap_or_else(|p| p.into_inner());
                match owner_index {
                    Some(owner_index) if known != Some(owner_index) => {
                        if routes.len() >= ROUTES_MAX {
                            routes.clear();
                        }
                        routes.insert(key, owner_index);
                    }
                    // An owner this client has no connection to: any silo
                    // forwards, so forget rather than guess.
                    None => drop(routes.remove(&key)),
                    Some(_) => {}
                }
                Ok(payload.into_vec())
            }
            Ok(Response::Payload(payload)) => Ok(payload.into_vec()),
            Ok(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(error) => {
                if known.is_some() {
                    silos
                        .routes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                }
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_address_is_its_own_error() {
        let error = ClusterClient::connect(&[]).await.err().expect("refused");
        assert!(matches!(error, ClientError::NoAddress), "{error:?}");
        assert!(error.to_string().contains("no silo address"), "{error}");
    }
}
