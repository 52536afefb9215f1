//! The counter the tests and `rio bench` use: `increment` writes state,
//! `get` only reads it; `add-to` and `relay` call other objects;
//! `add-slowly` holds a turn open between its read and its write;
//! `send-items` sends one-way `append`s, which `append` records in order;
//! `send-to` sends any message one way, in the shape of `relay`;
//! `move-slowly` moves value to another counter the way a bank transfer
//! does (refused if short, deducted, then the other one's `add-slowly`);
//! `set-timer` / `cancel-timer` drive timers whose `tick`s count in
//! `ticks`; `deactivate` asks for the object's deactivation; `remind` /
//! `cancel-reminder` / `reminders` drive durable reminders, whose fires
//! (`reminded`) are recorded, with their due times, in `fires`; `publish`
//! and `subscribe` drive pub/sub, whose events `heard` records and `echo`
//! also answers.

use rio_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct Increment {
    by: i64,
}

#[derive(Serialize, Deserialize)]
struct Value {
    value: i64,
}

fn increment(message: Increment) -> Result<Value, Error> {
    let value = state::load::<i64>("value")?.unwrap_or(0) + message.by;
    state::save("value", &value)?;
    Ok(Value { value })
}

fn get(_: Empty) -> Result<Value, Error> {
    Ok(Value {
        value: state::load("value")?.unwrap_or(0),
    })
}

#[derive(Serialize, Deserialize)]
struct AddSlowly {
    by: i64,
    millis: u64,
}

/// Reads the value, sleeps `millis` in WASI, then writes value + `by`: a
/// turn that is still in progress when its silo is frozen or loses the
/// object, which is what the fencing test needs.
fn add_slowly(message: AddSlowly) -> Result<Value, Error> {
    let read = state::load::<i64>("value")?.unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(message.millis));
    let value = read + message.by;
    state::save("value", &value)?;
    Ok(Value { value })
}

#[derive(Deserialize)]
struct MoveSlowly {
    target: String,
    by: i64,
    millis: u64,
}

/// Refuses with `insufficient` if the value is below `by`; otherwise
/// deducts `by` and calls `add-slowly` on the counter `target` (of this
/// type), which commits after `millis`. Its outcome depends on the state
/// it reads, so a retry after other turns moved the value would decide
/// otherwise: what the tests of interrupted keyed turns need.
fn move_slowly(message: MoveSlowly) -> Result<Value, Error> {
    let value = state::load::<i64>("value")?.unwrap_or(0);
    if value < message.by {
        return Err(Error::new(
            "insufficient",
            format!("{value} is less than {}", message.by),
        ));
    }
    state::save("value", &(value - message.by))?;
    let _: Value = call(
        &identity::service_type(),
        &message.target,
        "add-slowly",
        &AddSlowly {
            by: message.by,
            millis: message.millis,
        },
    )?;
    Ok(Value {
        value: value - message.by,
    })
}

#[derive(Deserialize)]
struct AddTo {
    target: String,
    by: i64,
}

/// Increments the counter `target` of this object's own service type
/// (`Counter/<target>` when deployed as `Counter`) and returns its reply.
fn add_to(message: AddTo) -> Result<Value, Error> {
    call(
        &identity::service_type(),
        &message.target,
        "increment",
        &Increment { by: message.by },
    )
}

#[derive(Deserialize)]
struct Relay {
    service_type: String,
    object_id: String,
    message_type: String,
    /// Absent means `{}`, which is what an empty payload decodes as.
    #[serde(default)]
    payload: Option<CborValue>,
}

/// Forwards any message and returns the reply; call errors (a `cycle` for
/// A -> B -> A) come back unchanged. Tests build call chains with it.
fn relay(message: Relay) -> Result<CborValue, Error> {
    call(
        &message.service_type,
        &message.object_id,
        &message.message_type,
        &message.payload.unwrap_or(CborValue::Map(Vec::new())),
    )
}

#[derive(Deserialize)]
struct SendItems {
    /// The receiver, `<type>/<id>` of this object's type when no type is given.
    #[serde(default)]
    service_type: Option<String>,
    target: String,
    /// Sent as `append` with `{"item": n}`, in this order.
    items: Vec<i64>,
    /// The message type to send instead of `append`.
    #[serde(default)]
    message_type: Option<String>,
    /// Fail the turn after sending, which must send nothing.
    #[serde(default)]
    fail: bool,
}

#[derive(Serialize, Deserialize)]
struct Item {
    item: i64,
}

#[derive(Serialize, Deserialize)]
struct Seen {
    seen: Vec<i64>,
}

/// Sends each item one way, then (unless told to fail) counts the sends in
/// its own state, committed with them.
fn send_items(message: SendItems) -> Result<Value, Error> {
    let service_type = message.service_type.unwrap_or_else(identity::service_type);
    let message_type = message.message_type.as_deref().unwrap_or("append");
    for item in &message.items {
        send(
            &service_type,
            &message.target,
            message_type,
            &Item { item: *item },
        )?;
    }
    if message.fail {
        return Err(Error::new(
            "failed-on-purpose",
            "the turn fails after sending",
        ));
    }
    let value = state::load::<i64>("value")?.unwrap_or(0) + message.items.len() as i64;
    state::save("value", &value)?;
    Ok(Value { value })
}

/// Records `item` after the ones seen before; a negative item is refused
/// (a receiver error, for dead letters).
fn append(message: Item) -> Result<Seen, Error> {
    if message.item < 0 {
        return Err(Error::new("negative-item", "items must not be negative"));
    }
    let mut seen = state::load::<Vec<i64>>("seen")?.unwrap_or_default();
    seen.push(message.item);
    state::save("seen", &seen)?;
    Ok(Seen { seen })
}

fn seen(_: Empty) -> Result<Seen, Error> {
    Ok(Seen {
        seen: state::load("seen")?.unwrap_or_default(),
    })
}

/// Sends any message one way, in the shape of `relay`.
fn send_to(message: Relay) -> Result<Sent, Error> {
    send(
        &message.service_type,
        &message.object_id,
        &message.message_type,
        &message.payload.unwrap_or(CborValue::Map(Vec::new())),
    )?;
    Ok(Sent { sent: true })
}

#[derive(Serialize)]
struct Sent {
    sent: bool,
}

#[derive(Deserialize)]
struct SetTimer {
    name: String,
    after_ms: u64,
    #[serde(default)]
    every_ms: Option<u64>,
    #[serde(default)]
    keep_active: bool,
    /// What each tick adds to `value`.
    #[serde(default)]
    by: i64,
    /// How long each tick holds its turn, in real time.
    #[serde(default)]
    busy_ms: u64,
    /// Fail the turn after setting, which must set nothing.
    #[serde(default)]
    fail: bool,
}

#[derive(Serialize, Deserialize)]
struct TickMessage {
    name: String,
    by: i64,
    busy_ms: u64,
}

fn set_timer(message: SetTimer) -> Result<Sent, Error> {
    let mut timer = match message.every_ms {
        Some(every) => Timer::every(std::time::Duration::from_millis(every))
            .first_after(std::time::Duration::from_millis(message.after_ms)),
        None => Timer::once(std::time::Duration::from_millis(message.after_ms)),
    };
    if message.keep_active {
        timer = timer.keep_active();
    }
    let tick = TickMessage {
        name: message.name.clone(),
        by: message.by,
        busy_ms: message.busy_ms,
    };
    timers::set(&message.name, timer, "tick", &tick)?;
    if message.fail {
        return Err(Error::new(
            "failed-on-purpose",
            "the turn fails after setting a timer",
        ));
    }
    Ok(Sent { sent: true })
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

fn cancel_timer(message: Named) -> Result<Sent, Error> {
    timers::cancel(&message.name);
    Ok(Sent { sent: true })
}

/// Counts the tick under its timer's name and adds `by` to `value`.
fn tick(message: TickMessage) -> Result<Value, Error> {
    let mut ticks =
        state::load::<std::collections::BTreeMap<String, u64>>("ticks")?.unwrap_or_default();
    *ticks.entry(message.name).or_default() += 1;
    state::save("ticks", &ticks)?;
    if message.busy_ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(message.busy_ms));
    }
    increment(Increment { by: message.by })
}

#[derive(Serialize)]
struct Ticks {
    ticks: std::collections::BTreeMap<String, u64>,
}

fn ticks(_: Empty) -> Result<Ticks, Error> {
    Ok(Ticks {
        ticks: state::load("ticks")?.unwrap_or_default(),
    })
}

#[derive(Deserialize)]
struct Deactivate {
    #[serde(default)]
    fail: bool,
}

/// Asks to be deactivated after this turn (or fails, which must not).
fn deactivate(message: Deactivate) -> Result<Sent, Error> {
    lifecycle::deactivate();
    if message.fail {
        return Err(Error::new(
            "failed-on-purpose",
            "the turn fails after asking",
        ));
    }
    Ok(Sent { sent: true })
}

#[derive(Deserialize)]
struct Remind {
    name: String,
    #[serde(default)]
    after_ms: u64,
    /// Due at this time (ms since the epoch) instead of `after_ms`.
    #[serde(default)]
    at_ms: Option<u64>,
    #[serde(default)]
    every_ms: Option<u64>,
    #[serde(default)]
    fire_once_when_missed: bool,
    #[serde(default)]
    fail: bool,
}

fn remind(message: Remind) -> Result<Sent, Error> {
    let after = std::time::Duration::from_millis(message.after_ms);
    let mut reminder = match message.every_ms {
        Some(every) => Reminder::every(std::time::Duration::from_millis(every)).first_after(after),
        None => match message.at_ms {
            Some(at_ms) => Reminder::at_ms(at_ms),
            None => Reminder::after(after),
        },
    };
    if message.fire_once_when_missed {
        reminder = reminder.fire_once_when_missed();
    }
    reminders::set(&message.name, reminder, "reminded", &Increment { by: 1 })?;
    if message.fail {
        return Err(Error::new(
            "failed-on-purpose",
            "the turn fails after setting a reminder",
        ));
    }
    Ok(Sent { sent: true })
}

fn cancel_reminder(message: Named) -> Result<Sent, Error> {
    reminders::cancel(&message.name);
    Ok(Sent { sent: true })
}

#[derive(Serialize)]
struct Listed {
    name: String,
    due_ms: u64,
    every_ms: Option<u64>,
}

#[derive(Serialize)]
struct ListedReminders {
    reminders: Vec<Listed>,
    now_ms: u64,
}

fn list_reminders(_: Empty) -> Result<ListedReminders, Error> {
    let reminders = reminders::list()?
        .into_iter()
        .map(|listed| Listed {
            name: listed.name,
            due_ms: listed.due_ms,
            every_ms: listed.every_ms,
        })
        .collect();
    Ok(ListedReminders {
        reminders,
        now_ms: reminders::now_ms(),
    })
}

#[derive(Serialize, Deserialize, Default)]
struct Fires {
    /// (reminder, due time, when it ran), in the order they ran.
    fires: Vec<(String, u64, u64)>,
}

/// A reminder's fire: recorded with its due time, and `by` added.
fn reminded(message: Increment) -> Result<Value, Error> {
    let Some((name, due_ms)) = reminders::fired() else {
        return Err(Error::new(
            "not-a-fire",
            "`reminded` is sent by reminders only",
        ));
    };
    let mut fires: Fires = state::load("fires")?.unwrap_or_default();
    fires.fires.push((name, due_ms, reminders::now_ms()));
    state::save("fires", &fires)?;
    increment(message)
}

fn fires(_: Empty) -> Result<Fires, Error> {
    Ok(state::load("fires")?.unwrap_or_default())
}

mod pubsub;
use pubsub::*;

rio_sdk::service! {
    "subscribe" => subscribe,
    "unsubscribe" => unsubscribe,
    "subscriptions" => subscriptions,
    "heard" => heard,
    "echo" => echo,
    "heard-list" => heard_list,
    "publish" => publish,
    "published" => published,
    "set-timer" => set_timer,
    "cancel-timer" => cancel_timer,
    "tick" => tick,
    "ticks" => ticks,
    "deactivate" => deactivate,
    "remind" => remind,
    "cancel-reminder" => cancel_reminder,
    "reminders" => list_reminders,
    "reminded" => reminded,
    "fires" => fires,
    "send-to" => send_to,
    "send-items" => send_items,
    "append" => append,
    "seen" => seen,
    "increment" => increment,
    "get" => get,
    "add-slowly" => add_slowly,
    "move-slowly" => move_slowly,
    "add-to" => add_to,
    "relay" => relay,
}
