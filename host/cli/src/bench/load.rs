//! Load generation: closed loops of requests over several connections, and
//! one-at-a-time latency sampling.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rio_client::{Calls, Client, ClientError, ClusterClient, ConnectOptions, DeploymentInfo};

/// What the load runs through: one connection to one silo, or, against a
/// cluster, one connection to each silo, calling each object's owner.
#[derive(Clone)]
pub(crate) enum BenchClient {
    One(Client),
    Cluster(ClusterClient),
}

/// `call`, `call_with_key` and the rest come with [`Calls`], on top of this.
impl Calls for BenchClient {
    async fn call_raw_keyed(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        payload: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        match self {
            BenchClient::One(client) => {
                client
                    .call_raw_keyed(
                        service_type,
                        object_id,
                        message_type,
                        payload,
                        idempotency_key,
                    )
                    .await
            }
            BenchClient::Cluster(client) => {
                client
                    .call_raw_keyed(
                        service_type,
                        object_id,
                        message_type,
                        payload,
                        idempotency_key,
                    )
                    .await
            }
        }
    }
}

impl BenchClient {
    pub(crate) async fn deployments(&self) -> Result<Vec<DeploymentInfo>, ClientError> {
        match self {
            BenchClient::One(client) => client.deployments().await,
            BenchClient::Cluster(client) => client.any_silo().deployments().await,
        }
    }
}

/// `connections` clients: against one silo, connections to it; against
/// several, each client connects to all of them.
pub(crate) async fn connect_all(
    addresses: &[String],
    connections: usize,
    options: &ConnectOptions,
) -> anyhow::Result<Vec<BenchClient>> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        clients.push(match addresses {
            [address] => BenchClient::One(Client::connect_with(address, options).await?),
            _ => BenchClient::Cluster(ClusterClient::connect_with(addresses, options).await?),
        });
    }
    Ok(clients)
}

/// What a closed-loop run achieved.
pub(crate) struct LoadResult {
    pub(crate) completed: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
}

/// Keeps `in_flight` requests outstanding on each client for `duration`,
/// each worker walking the objects (ids, or whatever the request needs to
/// pick its target) from its own offset.
pub(crate) async fn closed_loop<T, F, Fut>(
    clients: &[BenchClient],
    objects: &[T],
    in_flight: usize,
    duration: Duration,
    request: F,
) -> anyhow::Result<LoadResult>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(BenchClient, T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), ClientError>> + Send,
{
    let objects: Arc<[T]> = objects.into();
    let workers = clients.len() * in_flight.max(1);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let client = clients[worker % clients.len()].clone();
        let (objects, request) = (objects.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let (mut completed, mut errors) = (0u64, 0u64);
            let mut index = worker * 7919;
            while Instant::now() < deadline {
                let id = objects[index % objects.len()].clone();
                index += 1;
                match request(client.clone(), id).await {
                    Ok(()) => completed += 1,
                    Err(_) => errors += 1,
                }
            }
            (completed, errors)
        }));
    }
    let (mut completed, mut errors) = (0, 0);
    for task in tasks {
        let (done, failed) = task.await.context("load worker panicked")?;
        completed += done;
        errors += failed;
    }
    Ok(LoadResult {
        completed,
        errors,
        elapsed: started.elapsed(),
    })
}

/// Sends one request per item, `in_flight` per client at a time; fails on the first error.
pub(crate) async fn run_for_each<F, Fut>(
    clients: &[BenchClient],
    items: &[String],
    in_flight: usize,
    request: F,
) -> anyhow::Result<()>
where
    F: Fn(BenchClient, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), ClientError>> + Send,
{
    let items: Arc<[String]> = items.into();
    let next = Arc::new(AtomicUsize::new(0));
    let workers = clients.len() * in_flight.max(1);
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let client = clients[worker % clients.len()].clone();
        let (items, next, request) = (items.clone(), next.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else {
                    return Ok::<(), ClientError>(());
                };
                request(client.clone(), item.clone()).await?;
            }
        }));
    }
    for task in tasks {
        task.await.context("load worker panicked")??;
    }
    Ok(())
}

/// Round-trip times of `samples` requests sent one after another.
pub(crate) struct Latencies(Vec<Duration>);

impl Latencies {
    pub(crate) fn percentile_us(&self, percentile: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = ((percentile / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank].as_secs_f64() * 1e6
    }
}

pub(crate) async fn sequential_latency<F, Fut>(
    client: &BenchClient,
    samples: usize,
    request: F,
) -> anyhow::Result<Latencies>
where
    F: Fn(BenchClient, usize) -> Fut,
    Fut: Future<Output = Result<(), ClientError>>,
{
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let started = Instant::now();
        request(client.clone(), i).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(Latencies(times))
}
