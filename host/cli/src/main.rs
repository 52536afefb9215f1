//! The `rio` command line: run a silo, build, deploy and call service
//! objects, and benchmark a silo.
//!
//! - `silo`: run a silo until Ctrl-C or SIGTERM.
//! - `build`: compile a guest crate into a component.
//! - `deploy`, `undeploy`, `call`, `send`, `deployments`, `members`,
//!   `dead-letters`, `reminders`, `subscribe`: talk to a running silo.
//! - `bench`: measure a silo (see `bench/`).
//!
//! `silo_process` is the `rio silo` child process `bench` starts, shared
//! with the integration tests.

mod bench;
mod build;
mod call;
mod config_file;
mod connect;
mod dead_letters;
mod deploy;
mod json_cbor;
mod members;
mod message;
mod outcome;
mod reminders;
mod send;
mod silo;
mod silo_process;
mod stats;
mod subscribe;

use clap::{Parser, Subcommand};

/// Where commands look for a silo unless told otherwise.
pub(crate) const DEFAULT_SILO: &str = "127.0.0.1:7700";

#[derive(Parser)]
#[command(
    name = "rio",
    version,
    about = "Virtual actors as WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// One value per process, parsed and consumed at once: the size of the
// largest variant costs nothing, and boxing it would only add a deref.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run a silo: host service objects and serve calls.
    Silo(silo::SiloArgs),
    /// Build a guest crate into a component; prints the component's path.
    Build(build::BuildArgs),
    /// Deploy a component to a running silo under a service type name.
    Deploy(deploy::DeployArgs),
    /// Remove a service type from a silo and its cluster; new calls to it
    /// fail with unknown-type, its objects' state stays stored.
    Undeploy(deploy::UndeployArgs),
    /// List the service types deployed on a silo.
    Deployments(deploy::ListArgs),
    /// Print the OpenAPI 3.1 document of a deployed type's HTTP calls (all
    /// types without TYPE), as its silo's `GET /v1/openapi.json` serves it.
    Describe(deploy::DescribeArgs),
    /// Send a message to an object and print its reply as JSON.
    Call(call::CallArgs),
    /// Send a message one way: returns once the silo stored it; the object
    /// handles it afterwards, once.
    Send(send::SendArgs),
    /// List the silos of the cluster and their status.
    Members(members::MembersArgs),
    /// List the one-way messages receivers refused, and why.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// List an object's durable reminders (`TYPE/ID`), or the next due
    /// across the cluster (`--due`).
    Reminders(reminders::RemindersArgs),
    /// Print the events published to topics, one JSON line each, as they
    /// come (from any silo of the cluster).
    Subscribe(subscribe::SubscribeArgs),
    /// Print a silo's counters (activations, connections, timer ticks,
    /// memory) as JSON.
    Stats(stats::StatsArgs),
    /// Measure throughput, latency, activation and memory of a silo.
    Bench(bench::BenchArgs),
}

impl Command {
    /// Whether a failure is printed as JSON on stdout (`--output json`).
    fn errors_as_json(&self) -> bool {
        let output = match self {
            Command::Call(args) => args.message.output,
            Command::Send(args) => args.message.output,
            _ => return false,
        };
        output == message::Output::Json
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let errors_as_json = cli.command.errors_as_json();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Silo(args) => silo::run(args).await,
            Command::Build(args) => build::run(args),
            Command::Deploy(args) => deploy::run(args).await,
            Command::Undeploy(args) => deploy::undeploy(args).await,
            Command::Deployments(args) => deploy::list(args).await,
            Command::Describe(args) => deploy::describe(args).await,
            Command::Call(args) => call::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Members(args) => members::run(args).await,
            Command::DeadLetters(args) => dead_letters::run(args).await,
            Command::Reminders(args) => reminders::run(args).await,
            Command::Subscribe(args) => subscribe::run(args).await,
            Command::Stats(args) => stats::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The exit code tells the kind for every command (`outcome`).
        Err(error) => {
            let outcome = outcome::Outcome::of(&error);
            if errors_as_json {
                println!("{}", outcome.to_json());
            } else {
                eprintln!("error: {error:#}");
            }
            std::process::ExitCode::from(outcome.exit_code)
        }
    }
}
