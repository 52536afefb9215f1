//! The CLI's integration suites, one module per capability, in one test
//! binary: the helpers in `common` are compiled and linked once rather than
//! once per suite, the Python and JavaScript guests a suite builds are
//! built once for all of them, and libtest keeps both cores busy across
//! suites (at most as many tests at a time as cores, as within one suite
//! before). One suite alone: `cargo test -p rio-cli --test suites chaos::`.

mod common;

mod acceptance;
mod capacity;
mod chaos;
mod cli_output;
mod cluster;
mod crossing;
mod dashboard;
mod deadlines;
mod exhaustion;
mod fast_restart;
mod fencing;
mod http_gateway;
mod idempotency;
mod languages;
mod limits;
mod metrics;
mod object_subscriptions;
mod openapi;
mod orphans;
mod outbox;
mod protection;
mod protocol_fuzz;
mod pubsub;
mod reminders;
mod rooms;
mod security;
mod timers;
