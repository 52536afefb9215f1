//! `rio bench`: measures a silo with the counter guest.
//!
//! Unless `--silo` is given, it starts a silo of its own as a separate
//! process (this same binary) on a free port with a fresh data directory, so
//! client and silo are measured as a user would run them. With `--cluster
//! URL` it starts `--silos N` silos joined through that store instead, and
//! spreads its connections over all of them; so does a list of running
//! silos given to `--silo`.
//!
//! - `silo_process`: the child silos and their data directories.
//! - `load`: closed-loop request/reply load and latency sampling.
//! - `transfers`: bank accounts moving money, checked to add up (`--transfers`).
//! - `timers`: objects ticking on periodic timers (`--timers`).
//! - `reminders`: a burst of durable reminders due at once (`--reminders`).
//! - `pubsub`: one publisher's events fanned out to many client
//!   subscribers (`--pubsub`).
//! - `object_events`: one topic's events delivered to many subscribed
//!   objects (`--object-subscribers N`).
//! - `report`: the table and the `--json` form.

mod load;
mod object_events;
mod pubsub;
mod reminders;
mod report;
mod silo_process;
mod timers;
mod transfers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use rio_client::{Calls, Client, ConnectOptions, TlsConfig};
use serde::{Deserialize, Serialize};

use report::{Figures, Throughput};

#[derive(Args, Clone)]
pub(crate) struct BenchArgs {
    /// A running silo to measure, or several of one cluster separated by
    /// commas; by default a fresh one is started.
    #[arg(long, conflicts_with = "cluster")]
    silo: Option<String>,
    /// The token of the silo given to `--silo` (the admin token: the
    /// benchmark deploys and reads stats); a silo the benchmark starts
    /// requires none.
    #[arg(long, env = "RIO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Reach the silo given to `--silo` over TLS, trusting this CA file.
    #[arg(long, value_name = "FILE", requires = "silo")]
    tls_ca: Option<PathBuf>,
    /// Start `--silos` silos joined through this cluster store (for example
    /// `postgres://postgres@127.0.0.1/rio_bench`) and load all of them.
    #[arg(long)]
    cluster: Option<String>,
    /// How many silos `--cluster` starts.
    #[arg(long, default_value_t = 3)]
    silos: usize,
    /// The counter component; by default `guests/counter` is built.
    #[arg(long, conflicts_with = "guest")]
    component: Option<PathBuf>,
    /// A counter guest's folder in any language (for example
    /// `examples/counter-python`), built with `rio build` and measured.
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Service type name to deploy the counter under.
    #[arg(long, default_value = "BenchCounter")]
    service_type: String,
    /// Client connections (C).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection (P).
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Objects the load is spread over (N).
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Seconds each throughput run lasts.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Sequential requests for the latency figures.
    #[arg(long, default_value_t = 5000)]
    latency_samples: usize,
    /// New objects activated one at a time for the activation figures.
    #[arg(long, default_value_t = 2000)]
    activations: usize,
    /// Idle activations created for the memory figure. The default fits
    /// under Linux's default vm.max_map_count; raise that before asking for
    /// 100,000.
    #[arg(long, default_value_t = 5000)]
    idle_objects: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Pass `--pooling-allocator` to the silo this command starts.
    #[arg(long)]
    pooling_allocator: bool,
    /// Also measure state-writing calls that each carry a fresh idempotency
    /// key (their replies are stored with their writes), against plain ones.
    #[arg(long)]
    keyed_writes: bool,
    /// Also measure random transfers between bank accounts
    /// (`examples/bank`), each with a fresh idempotency key: one run where
    /// the withdrawing turn calls the receiver, one through the outbox
    /// (`transfer-send`); after each, checks that the balances add up.
    #[arg(long)]
    transfers: bool,
    /// Bank accounts the transfers move money between.
    #[arg(long, default_value_t = 64)]
    accounts: usize,
    /// Service type name to deploy the bank account under.
    #[arg(long, default_value = "BenchAccount")]
    account_type: String,
    /// Also measure periodic timers: `--timer-objects` objects each with a
    /// timer every `--timer-period-ms`, whose ticks write state; checks
    /// that the state grew by exactly the ticks the silo counted.
    #[arg(long)]
    timers: bool,
    /// Objects with a timer in the `--timers` run.
    #[arg(long, default_value_t = 2000)]
    timer_objects: usize,
    /// Each timer's period in the `--timers` run, in milliseconds.
    #[arg(long, default_value_t = 100)]
    timer_period_ms: u64,
    /// Also measure durable reminders: `--reminder-objects` objects each
    /// register a one-shot reminder, all due at one moment; checks that
    /// each fired exactly once.
    #[arg(long)]
    reminders: bool,
    /// Objects with a reminder in the `--reminders` run.
    #[arg(long, default_value_t = 5000)]
    reminder_objects: usize,
    /// Also measure pub/sub: one publisher's events fanned out to
    /// `--subscribers` client subscribers spread over the silos; each checks
    /// it saw every event in order or was told what it missed.
    #[arg(long)]
    pubsub: bool,
    /// Client subscribers in the `--pubsub` run.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Also measure pub/sub to objects: this many counter objects subscribe
    /// to one topic, one publisher publishes events one at a time; checks
    /// that each object applied each event once, in order.
    #[arg(long)]
    object_subscribers: Option<usize>,
}

#[derive(Serialize)]
struct Increment {
    by: i64,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Deserialize)]
struct Value {
    value: i64,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut children = Vec::new();
    match (&args.silo, &args.cluster) {
        (Some(_), _) => {}
        (None, Some(url)) => {
            for index in 0..args.silos.max(1) {
                children.push(
                    silo_process::BenchSilo::start(index, args.pooling_allocator, Some(url))
                        .await?,
                );
            }
        }
        (None, None) => {
            children.push(silo_process::BenchSilo::start(0, args.pooling_allocator, None).await?)
        }
    }
    let addresses: Vec<String> = match &args.silo {
        Some(list) => list.split(',').map(|a| a.trim().to_string()).collect(),
        None => children
            .iter()
            .map(|child| child.address().to_string())
            .collect(),
    };
    let address = addresses[0].clone();
    let component_path = match (&args.component, &args.guest) {
        (Some(path), _) => path.clone(),
        (None, Some(folder)) => crate::build::build_guest(folder, true)?,
        (None, None) => crate::build::build_rust_guest(&workspace_crate("guests/counter")?, true)?,
    };
    let options = ConnectOptions {
        token: args.token.clone(),
        tls: match &args.tls_ca {
            Some(ca) => Some(TlsConfig::from_ca_file(ca)?),
            None => None,
        },
        ..ConnectOptions::default()
    };
    let admin = Client::connect_with(&address, &options)
        .await?
        .with_timeout(Duration::from_secs(300));
    admin
        .deploy(&args.service_type, read_component(&component_path)?)
        .await?;
    if args.transfers {
        let bank = crate::build::build_rust_guest(&workspace_crate("examples/bank")?, true)?;
        admin
            .deploy(&args.account_type, read_component(&bank)?)
            .await?;
    }
    let mut admins = Vec::new();
    for address in &addresses {
        admins.push(Client::connect_with(address, &options).await?);
    }
    let figures = measure(&args, &addresses, &admins, &options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print!("{}", report::table(&figures));
    }
    drop(children);
    Ok(())
}

/// The guest crate at `path` (such as `guests/counter`) of the current
/// folder, or else of the rio checkout this binary was built in.
fn workspace_crate(path: &str) -> anyhow::Result<PathBuf> {
    let from_cwd = PathBuf::from(path);
    if from_cwd.join("Cargo.toml").is_file() {
        return Ok(from_cwd);
    }
    let built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    ensure!(
        built_in.join("Cargo.toml").is_file(),
        "cannot find {path}; run from a rio checkout or pass --component FILE"
    );
    Ok(built_in)
}

fn read_component(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `part` per second as a share of `whole` per second.
fn share(part: &Throughput, whole: &Throughput) -> f64 {
    part.per_second / whole.per_second.max(f64::MIN_POSITIVE)
}

/// The counters of every silo measured, added up.
async fn total_stats(admins: &[Client]) -> anyhow::Result<rio_client::SiloStats> {
    let mut total = rio_client::SiloStats::default();
    for admin in admins {
        let stats = admin.stats().await?;
        total.live_activations += stats.live_activations;
        total.activations_total += stats.activations_total;
        total.activation_nanos_total += stats.activation_nanos_total;
        total.resident_bytes += stats.resident_bytes;
        total.proportional_bytes += stats.proportional_bytes;
        total.timer_ticks_total += stats.timer_ticks_total;
        total.timer_ticks_skipped_total += stats.timer_ticks_skipped_total;
    }
    Ok(total)
}

async fn measure(
    args: &BenchArgs,
    addresses: &[String],
    admins: &[Client],
    options: &ConnectOptions,
) -> anyhow::Result<Figures> {
    // Load closures run on spawned tasks; the name lives as long as the process.
    let service_type: &'static str = Box::leak(args.service_type.clone().into_boxed_str());
    // Unique across runs against the same silo: a reused idempotency key
    // would be answered from the store instead of writing, and reused
    // accounts would not start from their opening balance.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let clients = load::connect_all(addresses, args.connections, options).await?;
    let objects: Vec<String> = (0..args.objects).map(|i| format!("load-{i}")).collect();
    // Activate every object first so the throughput runs see warm objects.
    load::run_for_each(
        &clients,
        &objects,
        args.in_flight,
        move |client, id| async move {
            client
                .call::<Empty, Value>(service_type, &id, "get", &Empty {})
                .await
                .map(drop)
        },
    )
    .await?;

    let duration = Duration::from_secs_f64(args.seconds);
    let read_only = load::closed_loop(
        &clients,
        &objects,
        args.in_flight,
        duration,
        move |client, id| async move {
            client
                .call::<Empty, Value>(service_type, &id, "get", &Empty {})
                .await
                .map(drop)
        },
    )
    .await?;

    let before = sum_of_values(&clients[0], service_type, &objects).await?;
    let writes = load::closed_loop(
        &clients,
        &objects,
        args.in_flight,
        duration,
        move |client, id| async move {
            client
                .call::<Increment, Value>(service_type, &id, "increment", &Increment { by: 1 })
                .await
                .map(drop)
        },
    )
    .await?;
    let after = sum_of_values(&clients[0], service_type, &objects).await?;
    let writes_verified = after - before == writes.completed as i64;
    let writes = Throughput::from(&writes);

    let keyed_writes = if args.keyed_writes {
        let next_key = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let keyed = load::closed_loop(
            &clients,
            &objects,
            args.in_flight,
            duration,
            move |client, id| {
                let n = next_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    let key = format!("bench-{run:x}-{n}");
                    client
                        .call_with_key::<Increment, Value>(
                            service_type,
                            &id,
                            "increment",
                            &Increment { by: 1 },
                            &key,
                        )
                        .await
                        .map(drop)
                }
            },
        )
        .await?;
        let keyed_after = sum_of_values(&clients[0], service_type, &objects).await?;
        let throughput = Throughput::from(&keyed);
        Some(report::KeyedWrites {
            verified: keyed_after - after == keyed.completed as i64,
            of_plain_writes: share(&throughput, &writes),
            throughput,
        })
    } else {
        None
    };

    let transfers = if args.transfers {
        let account_type: &'static str = Box::leak(args.account_type.clone().into_boxed_str());
        let bank =
            transfers::Bank::open(&clients, account_type, args.accounts, args.in_flight, run)
                .await?;
        let call = transfer_run(&bank, &clients, args, transfers::Variant::Call, &writes).await?;
        let send = transfer_run(&bank, &clients, args, transfers::Variant::Send, &writes).await?;
        Some(report::Transfers {
            accounts: bank.accounts(),
            call,
            send,
        })
    } else {
        None
    };

    let timers = if args.timers {
        let run = timers::run(
            &clients,
            admins,
            service_type,
            args.timer_objects,
            args.timer_period_ms,
            args.in_flight,
            duration,
        )
        .await?;
        Some(run)
    } else {
        None
    };

    let reminders = if args.reminders {
        let run = reminders::run(
            &clients,
            service_type,
            args.reminder_objects,
            args.in_flight,
        )
        .await?;
        Some(run)
    } else {
        None
    };

    let pubsub = if args.pubsub {
        let run = pubsub::run(
            addresses,
            options,
            service_type,
            args.subscribers,
            duration,
            run,
        )
        .await?;
        Some(run)
    } else {
        None
    };

    let object_events = match args.object_subscribers {
        Some(subscribers) => Some(
            object_events::run(&clients, service_type, subscribers, args.in_flight, run).await?,
        ),
        None => None,
    };

    let latency = load::sequential_latency(&clients[0], args.latency_samples, |client, i| {
        let id = objects[i % objects.len()].clone();
        async move {
            client
                .call::<Empty, Value>(service_type, &id, "get", &Empty {})
                .await
                .map(drop)
        }
    })
    .await?;

    // The same round trip with no guest involved: what the transport costs.
    let protocol_only =
        load::sequential_latency(&clients[0], args.latency_samples, |client, _| async move {
            client.deployments().await.map(drop)
        })
        .await?;

    let stats_before = total_stats(admins).await?;
    let activation =
        load::sequential_latency(&clients[0], args.activations, move |client, i| async move {
            client
                .call::<Empty, Value>(service_type, &format!("fresh-{i}"), "get", &Empty {})
                .await
                .map(drop)
        })
        .await?;
    let stats_after = total_stats(admins).await?;
    let activation_count = stats_after.activations_total - stats_before.activations_total;
    let silo_activation_mean_us = (stats_after.activation_nanos_total
        - stats_before.activation_nanos_total) as f64
        / activation_count.max(1) as f64
        / 1000.0;

    let idle_before = total_stats(admins).await?;
    let idle_ids: Vec<String> = (0..args.idle_objects)
        .map(|i| format!("idle-{i}"))
        .collect();
    let started = Instant::now();
    load::run_for_each(
        &clients,
        &idle_ids,
        args.in_flight,
        move |client, id| async move {
            client
                .call::<Empty, Value>(service_type, &id, "get", &Empty {})
                .await
                .map(drop)
        },
    )
    .await?;
    let idle_elapsed = started.elapsed();
    let idle_after = total_stats(admins).await?;
    let added = idle_after
        .live_activations
        .saturating_sub(idle_before.live_activations)
        .max(1);
    let resident_growth = idle_after
        .resident_bytes
        .saturating_sub(idle_before.resident_bytes);
    let proportional_growth = idle_after
        .proportional_bytes
        .saturating_sub(idle_before.proportional_bytes);

    Ok(Figures {
        silos: addresses.len(),
        connections: args.connections,
        in_flight: args.in_flight,
        objects: args.objects,
        read_only: Throughput::from(&read_only),
        writes,
        writes_verified,
        keyed_writes,
        transfers,
        timers,
        reminders,
        pubsub,
        object_events,
        latency_p50_us: latency.percentile_us(50.0),
        latency_p99_us: latency.percentile_us(99.0),
        protocol_round_trip_p50_us: protocol_only.percentile_us(50.0),
        first_call_p50_us: activation.percentile_us(50.0),
        first_call_p99_us: activation.percentile_us(99.0),
        silo_activation_mean_us,
        activations_per_second: idle_ids.len() as f64 / idle_elapsed.as_secs_f64(),
        idle_activations: idle_after.live_activations,
        resident_bytes_per_idle_activation: resident_growth / added,
        proportional_bytes_per_idle_activation: proportional_growth / added,
        silo_resident_bytes: idle_after.resident_bytes,
    })
}

/// One run of transfers in `variant`, reported against the plain writes.
async fn transfer_run(
    bank: &transfers::Bank,
    clients: &[load::BenchClient],
    args: &BenchArgs,
    variant: transfers::Variant,
    writes: &Throughput,
) -> anyhow::Result<report::TransferRun> {
    let duration = Duration::from_secs_f64(args.seconds);
    let outcome = bank.run(clients, args.in_flight, duration, variant).await?;
    let throughput = Throughput::from(&outcome.load);
    Ok(report::TransferRun {
        of_plain_writes: share(&throughput, writes),
        refused: outcome.refused,
        deadlocks: outcome.deadlocks,
        drain_seconds: outcome.drain.as_secs_f64(),
        delivered_per_second: throughput.completed as f64
            / (throughput.seconds + outcome.drain.as_secs_f64()),
        throughput,
        verified: outcome.verified,
    })
}

async fn sum_of_values(
    client: &load::BenchClient,
    service_type: &str,
    objects: &[String],
) -> anyhow::Result<i64> {
    let mut sum = 0;
    for id in objects {
        sum += client
            .call::<Empty, Value>(service_type, id, "get", &Empty {})
            .await?
            .value;
    }
    Ok(sum)
}
