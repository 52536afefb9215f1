//! A metrics aggregator (rio-rs's metric-aggregator in spirit): each
//! `Metrics/<source>` object takes `record {"value": n}` calls and keeps a
//! pending count and sum; a periodic timer set in `on_activate` flushes
//! them every second, one way, to `Metrics/total`, which adds them up.
//! Deactivating (idle, or `close`) flushes too, so nothing is left behind.
//!
//! - `record {"value": n}` answers `{"pending": {"count", "sum"}}`;
//! - `get` answers `{"pending": {...}, "total": {...}}`;
//! - `close` flushes and asks for this object's deactivation;
//! - `add {"count", "sum"}` (what a flush sends) adds to this object's total.
//!
//! Build it with `rio build examples/metrics`; the same object is in
//! `examples/metrics-python` and `examples/metrics-js`.

use std::time::Duration;

use rio_sdk::prelude::*;

/// Where every source's flushes go.
const TOTAL: &str = "total";

#[derive(Serialize, Deserialize, Default, Clone, Copy)]
struct Sums {
    count: i64,
    sum: i64,
}

#[derive(Deserialize)]
struct Record {
    value: i64,
}

#[derive(Serialize)]
struct Pending {
    pending: Sums,
}

#[derive(Serialize)]
struct Report {
    pending: Sums,
    total: Sums,
}

fn load(key: &str) -> Result<Sums, Error> {
    Ok(state::load(key)?.unwrap_or_default())
}

fn on_activate() -> Result<(), Error> {
    if identity::object_id() != TOTAL {
        timers::set(
            "flush",
            Timer::every(Duration::from_secs(1)),
            "flush",
            &Empty,
        )?;
    }
    Ok(())
}

fn record(message: Record) -> Result<Pending, Error> {
    let mut pending = load("pending")?;
    pending.count += 1;
    pending.sum += message.value;
    state::save("pending", &pending)?;
    Ok(Pending { pending })
}

/// Sends what is pending to the total, one way: it leaves with this turn's
/// commit, which also clears it here, and is added there exactly once.
fn flush() -> Result<Pending, Error> {
    let pending = load("pending")?;
    if pending.count > 0 {
        send(&identity::service_type(), TOTAL, "add", &pending)?;
        state::delete("pending");
    }
    Ok(Pending {
        pending: Sums::default(),
    })
}

fn close() -> Result<Pending, Error> {
    lifecycle::deactivate();
    flush()
}

fn on_deactivate() -> Result<(), Error> {
    flush().map(|_| ())
}

fn add(message: Sums) -> Result<Report, Error> {
    let mut total = load("total")?;
    total.count += message.count;
    total.sum += message.sum;
    state::save("total", &total)?;
    get()
}

fn get() -> Result<Report, Error> {
    Ok(Report {
        pending: load("pending")?,
        total: load("total")?,
    })
}

rio_sdk::service! {
    on_activate = on_activate;
    on_deactivate = on_deactivate;
    "record" => record,
    "flush" => flush,
    "close" => close,
    "add" => add,
    "get" => get,
}
