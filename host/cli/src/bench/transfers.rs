//! The transfer workload of `rio bench --transfers`: bank accounts
//! (`examples/bank`) moving money between each other at random, either in
//! one turn that calls the receiver (`transfer`) or through the
//! transactional outbox (`transfer-send`), every transfer with a fresh
//! idempotency key; then the check that no money appeared or vanished.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use rio_client::{Calls, ClientError};
use serde::{Deserialize, Serialize};

use super::load::{self, BenchClient, LoadResult};

/// Each account's opening deposit: far more than a run can take out of one
/// account, so a transfer refused for lack of funds means something is wrong.
const OPENING_BALANCE: i64 = 1_000_000_000_000;

/// Transfers move between 1 and this many units.
const MAX_AMOUNT: u64 = 100;

/// How long the outbox may take to deliver what a run sent before the
/// money counts as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Pause between two sums of the balances while waiting for the outbox.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How a transfer reaches the receiving account.
#[derive(Clone, Copy)]
pub(crate) enum Variant {
    /// `transfer`: the withdrawing turn calls the receiver's `deposit`.
    Call,
    /// `transfer-send`: the deposit is committed with the withdrawal and
    /// delivered by the outbox after the turn.
    Send,
}

impl Variant {
    fn message_type(self) -> &'static str {
        match self {
            Variant::Call => "transfer",
            Variant::Send => "transfer-send",
        }
    }
}

#[derive(Serialize)]
struct Amount {
    amount: i64,
}

#[derive(Deserialize)]
struct Balance {
    balance: i64,
}

#[derive(Serialize)]
struct Transfer<'a> {
    to: &'a str,
    amount: i64,
}

/// What one run of transfers achieved, and whether the money added up.
pub(crate) struct TransferOutcome {
    pub(crate) load: LoadResult,
    /// Transfers refused with `insufficient-funds` (none expected).
    pub(crate) refused: u64,
    /// Transfers refused with `deadlock`: two transfers crossing between
    /// the same accounts (only the call variant waits on another account).
    pub(crate) deadlocks: u64,
    /// From the end of the run to the end of the first sum of the balances
    /// that found every transfer delivered (or gave up).
    pub(crate) drain: Duration,
    /// The balances add up to what the accounts were funded with, and none
    /// is negative.
    pub(crate) verified: bool,
}

/// The accounts of one benchmark run.
pub(crate) struct Bank {
    service_type: &'static str,
    accounts: Arc<[String]>,
    /// What the accounts were funded with: the sum every check expects.
    funded: i64,
    /// Makes the keys of this run unique (see [`Bank::open`]).
    run: u64,
}

impl Bank {
    /// Opens `count` accounts of `service_type`, each with the opening
    /// balance. `run` makes their names and the idempotency keys unique, so
    /// a silo measured twice starts from fresh accounts.
    pub(crate) async fn open(
        clients: &[BenchClient],
        service_type: &'static str,
        count: usize,
        in_flight: usize,
        run: u64,
    ) -> anyhow::Result<Bank> {
        ensure!(count >= 2, "transfers need at least two accounts");
        let accounts: Vec<String> = (0..count)
            .map(|i| format!("bench-{run:x}-account-{i}"))
            .collect();
        load::run_for_each(
            clients,
            &accounts,
            in_flight,
            move |client, id| async move {
                client
                    .call::<Amount, Balance>(
                        service_type,
                        &id,
                        "deposit",
                        &Amount {
                            amount: OPENING_BALANCE,
                        },
                    )
                    .await
                    .map(drop)
            },
        )
        .await?;
        Ok(Bank {
            service_type,
            accounts: accounts.into(),
            funded: OPENING_BALANCE * count as i64,
            run,
        })
    }

    pub(crate) fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// Random transfers between distinct accounts for `duration`, closed
    /// loop, then waits (bounded) for the outbox and checks the balances.
    pub(crate) async fn run(
        &self,
        clients: &[BenchClient],
        in_flight: usize,
        duration: Duration,
        variant: Variant,
    ) -> anyhow::Result<TransferOutcome> {
        let refused = Arc::new(AtomicU64::new(0));
        let deadlocks = Arc::new(AtomicU64::new(0));
        let next_transfer = Arc::new(AtomicU64::new(0));
        let (service_type, run) = (self.service_type, self.run);
        let message_type = variant.message_type();
        let accounts = self.accounts.clone();
        let senders: Vec<usize> = (0..accounts.len()).collect();
        let request = {
            let (refused, deadlocks) = (refused.clone(), deadlocks.clone());
            move |client: BenchClient, from: usize| {
                let n = next_transfer.fetch_add(1, Ordering::Relaxed);
                // The variant's tag keeps the keys of the two runs apart.
                let key = format!("bench-{run:x}-{message_type}-{n}");
                let random = splitmix64(run.wrapping_add(n));
                let others = accounts.len() as u64 - 1;
                let to = (from + 1 + (random % others) as usize) % accounts.len();
                let amount = 1 + ((random >> 32) % MAX_AMOUNT) as i64;
                let (from, to) = (accounts[from].clone(), accounts[to].clone());
                let (refused, deadlocks) = (refused.clone(), deadlocks.clone());
                async move {
                    let outcome = client
                        .call_with_key::<Transfer, Balance>(
                            service_type,
                            &from,
                            message_type,
                            &Transfer { to: &to, amount },
                            &key,
                        )
                        .await;
                    if let Err(ClientError::Reply(error)) = &outcome {
                        match error.kind() {
                            "insufficient-funds" => refused.fetch_add(1, Ordering::Relaxed),
                            "deadlock" => deadlocks.fetch_add(1, Ordering::Relaxed),
                            _ => 0,
                        };
                    }
                    outcome.map(drop)
                }
            }
        };
        let load = load::closed_loop(clients, &senders, in_flight, duration, request).await?;

        // Every acknowledged transfer is committed, but a `send`'s deposit
        // may still sit in the outbox: wait until the sum is whole again.
        let stopped = Instant::now();
        let balances = loop {
            let balances = self.balances(&clients[0]).await?;
            let sum: i64 = balances.iter().sum();
            // More than was funded can only be money created: no use waiting.
            if sum >= self.funded || stopped.elapsed() >= DRAIN_LIMIT {
                break balances;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        };
        let drain = stopped.elapsed();
        let verified =
            balances.iter().sum::<i64>() == self.funded && balances.iter().all(|b| *b >= 0);
        Ok(TransferOutcome {
            load,
            refused: refused.load(Ordering::Relaxed),
            deadlocks: deadlocks.load(Ordering::Relaxed),
            drain,
            verified,
        })
    }

    async fn balances(&self, client: &BenchClient) -> anyhow::Result<Vec<i64>> {
        let mut balances = Vec::with_capacity(self.accounts.len());
        for id in self.accounts.iter() {
            let reply: Balance = client
                .call(self.service_type, id, "balance", &Empty {})
                .await?;
            balances.push(reply.balance);
        }
        Ok(balances)
    }
}

#[derive(Serialize)]
struct Empty {}

/// The `counter`th output of splitmix64: well-spread pseudo-random bits
/// from a counter, with no shared generator for the load tasks to lock.
fn splitmix64(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
