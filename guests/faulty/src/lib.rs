//! A guest that misbehaves on request, for the fault-isolation tests:
//! it traps, loops forever, eats memory, overflows its stack, exits, or
//! writes then traps; it answers with replies of any size; for the
//! deadline tests it also sleeps in WASI (in a turn, in a call it waits on,
//! or in its deactivation hook); for the limit tests it writes too much,
//! calls too deep or too often, and floods its log or its stdout and
//! stderr.

use rio_sdk::prelude::*;

#[derive(Deserialize)]
struct SetValue {
    value: i64,
}

#[derive(Serialize)]
struct MaybeValue {
    value: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct OkReply {
    ok: bool,
}

#[derive(Serialize)]
struct Activations {
    activations: i64,
}

fn ok() -> Result<OkReply, Error> {
    Ok(OkReply { ok: true })
}

fn set(message: SetValue) -> Result<MaybeValue, Error> {
    state::save("value", &message.value)?;
    Ok(MaybeValue {
        value: Some(message.value),
    })
}

fn get() -> Result<MaybeValue, Error> {
    Ok(MaybeValue {
        value: state::load("value")?,
    })
}

fn set_then_trap(message: SetValue) -> Result<MaybeValue, Error> {
    state::save("value", &message.value)?;
    panic!("trapping after a write of {}", message.value);
}

fn trap() -> Result<OkReply, Error> {
    // Logged first so the tests also exercise the log import.
    log::warn("about to trap on request");
    panic!("asked to trap");
}

fn spin() -> Result<OkReply, Error> {
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn hog() -> Result<OkReply, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled with ones so every page is really touched.
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

/// Recurses until wasm's call stack is exhausted (each frame keeps its
/// depth past the call, so the compiler cannot make it a loop).
fn overflow() -> Result<OkReply, Error> {
    fn deeper(depth: u64) -> u64 {
        if depth == u64::MAX {
            return depth;
        }
        std::hint::black_box(deeper(std::hint::black_box(depth + 1))).wrapping_add(depth)
    }
    let _ = deeper(0);
    ok()
}

#[derive(Deserialize)]
struct ExitStatus {
    status: i32,
}

/// Ends the guest process through WASI's `exit`, as a CLI program would.
fn exit(message: ExitStatus) -> Result<OkReply, Error> {
    std::process::exit(message.status)
}

#[derive(Serialize, Deserialize)]
struct BlobSize {
    bytes: usize,
}

#[derive(Serialize)]
struct Blob {
    blob: String,
}

/// A reply of about `bytes` bytes, for tests of replies a client leaves unread.
fn blob(message: BlobSize) -> Result<Blob, Error> {
    Ok(Blob {
        blob: "x".repeat(message.bytes),
    })
}

#[derive(Serialize)]
struct CountedBlob {
    count: u64,
    blob: String,
}

/// Counts its runs (in state) and replies with about `bytes` bytes: for
/// tests of big replies to keyed calls, which must not run twice.
fn count_blob(message: BlobSize) -> Result<CountedBlob, Error> {
    let count = state::load::<u64>("count")?.unwrap_or(0) + 1;
    state::save("count", &count)?;
    Ok(CountedBlob {
        count,
        blob: "x".repeat(message.bytes),
    })
}

fn fail() -> Result<OkReply, Error> {
    Err(Error::new("refused", "this guest refuses"))
}

fn activations() -> Result<Activations, Error> {
    Ok(Activations {
        activations: state::load("activations")?.unwrap_or(0),
    })
}

#[derive(Deserialize)]
struct MaybeSetValue {
    #[serde(default)]
    value: Option<i64>,
}

/// Echoes an optional field: absent and null are fine, a string is a
/// `bad-request` (the same message in every language's faulty guest).
fn maybe(message: MaybeSetValue) -> Result<MaybeValue, Error> {
    Ok(MaybeValue {
        value: message.value,
    })
}

/// Stores bytes that are not CBOR through the raw host import, then reads
/// them back with the SDK: `bad-data`, and the write is discarded.
fn read_garbage() -> Result<OkReply, Error> {
    rio_sdk::bindings::rio::service::state::set("garbage", &[0xff, 0x00]);
    let _: Option<i64> = state::load("garbage")?;
    Ok(OkReply { ok: true })
}

#[derive(Serialize)]
struct Sandbox {
    environment_variables: usize,
    arguments: usize,
    can_list_root: bool,
    can_open_file: bool,
    can_connect: bool,
}

/// Reports what the sandbox lets this guest see.
fn sandbox() -> Result<Sandbox, Error> {
    println!("sandbox probe from the guest's stdout");
    Ok(Sandbox {
        environment_variables: std::env::vars().count(),
        arguments: std::env::args().count(),
        can_list_root: std::fs::read_dir("/").is_ok(),
        can_open_file: std::fs::File::open("/etc/passwd").is_ok(),
        can_connect: std::net::TcpStream::connect("127.0.0.1:5432").is_ok(),
    })
}

#[derive(Serialize, Deserialize)]
struct Sleep {
    millis: u64,
}

#[derive(Serialize, Deserialize)]
struct Slept {
    slept: u64,
}

#[derive(Deserialize)]
struct CallSleeper {
    target: String,
    millis: u64,
    /// Slept before the call, so the callee gets less than a whole deadline.
    #[serde(default)]
    before_millis: u64,
}

/// Writes `value` (so a test can see whether the turn's writes were kept),
/// then blocks in a WASI sleep, which no epoch tick interrupts.
fn sleep(message: Sleep) -> Result<Slept, Error> {
    state::save("value", &(message.millis as i64))?;
    std::thread::sleep(std::time::Duration::from_millis(message.millis));
    Ok(Slept {
        slept: message.millis,
    })
}

/// Writes `value`, sleeps `before_millis`, then waits on another object of
/// this type sleeping for `millis`: a turn stuck on its callee, not on its
/// own code.
fn call_sleeper(message: CallSleeper) -> Result<Slept, Error> {
    state::save("value", &(message.millis as i64))?;
    std::thread::sleep(std::time::Duration::from_millis(message.before_millis));
    call(
        &identity::service_type(),
        &message.target,
        "sleep",
        &Sleep {
            millis: message.millis,
        },
    )
}

/// Makes every later deactivation hook of this object sleep for `millis`.
fn sleep_on_deactivate(message: Sleep) -> Result<OkReply, Error> {
    state::save("deactivate_sleep_millis", &message.millis)?;
    ok()
}

fn sleep_if_asked_on_deactivate() -> Result<(), Error> {
    if let Some(millis) = state::load::<u64>("deactivate_sleep_millis")? {
        std::thread::sleep(std::time::Duration::from_millis(millis));
    }
    Ok(())
}

/// Counts activations in state, so tests can see the hook ran and committed.
fn count_activation() -> Result<(), Error> {
    let activations = state::load::<i64>("activations")?.unwrap_or(0) + 1;
    state::save("activations", &activations)
}

#[derive(Deserialize)]
struct Fill {
    keys: u64,
    value_bytes: usize,
}

/// Writes `keys` values of `value_bytes` each in one turn, reusing one
/// buffer of guest memory: the state limits, not the guest's memory, must
/// stop it.
fn fill(message: Fill) -> Result<OkReply, Error> {
    let value = vec![7u8; message.value_bytes];
    for key in 0..message.keys {
        rio_sdk::bindings::rio::service::state::set(&format!("fill-{key}"), &value);
    }
    ok()
}

#[derive(Serialize, Deserialize)]
struct Chain {
    depth: u32,
}

/// Calls the next object of a chain `depth` long, each one waiting on the
/// next, for the call-depth limit.
fn chain(message: Chain) -> Result<Chain, Error> {
    if message.depth == 0 {
        return Ok(Chain { depth: 0 });
    }
    let next = format!("{}+", identity::object_id());
    call(
        &identity::service_type(),
        &next,
        "chain",
        &Chain {
            depth: message.depth - 1,
        },
    )
}

#[derive(Deserialize)]
struct ManyCalls {
    count: u32,
}

/// Makes `count` calls in one turn, for the calls-per-turn limit.
fn many_calls(message: ManyCalls) -> Result<OkReply, Error> {
    let other = format!("{}-callee", identity::object_id());
    for _ in 0..message.count {
        let _: OkReply = call(&identity::service_type(), &other, "ok", &())?;
    }
    ok()
}

#[derive(Deserialize)]
struct LogFlood {
    lines: u32,
    text: String,
}

/// Writes `text` as `lines` log lines (warnings, which a silo logs by
/// default) in one turn.
fn log_flood(message: LogFlood) -> Result<OkReply, Error> {
    for _ in 0..message.lines {
        log::warn(&message.text);
    }
    ok()
}

#[derive(Deserialize)]
struct PrintFlood {
    /// Stop after this many lines, or at the turn's deadline if `0`.
    lines: u32,
    text: String,
}

/// Prints `text` on stdout, then on stderr, line after line: `lines` of
/// each, or until the turn is stopped at its deadline.
fn print_flood(message: PrintFlood) -> Result<OkReply, Error> {
    let mut printed = 0;
    while message.lines == 0 || printed < message.lines {
        println!("{} (stdout {printed})", message.text);
        eprintln!("{} (stderr {printed})", message.text);
        printed += 1;
    }
    ok()
}

rio_sdk::service! {
    on_activate = count_activation;
    on_deactivate = sleep_if_asked_on_deactivate;
    "ok" => ok,
    "set" => set,
    "get" => get,
    "set-then-trap" => set_then_trap,
    "trap" => trap,
    "loop" => spin,
    "hog" => hog,
    "overflow" => overflow,
    "exit" => exit,
    "blob" => blob,
    "count-blob" => count_blob,
    "fail" => fail,
    "activations" => activations,
    "sandbox" => sandbox,
    "sleep" => sleep,
    "call-sleeper" => call_sleeper,
    "sleep-on-deactivate" => sleep_on_deactivate,
    "maybe" => maybe,
    "read-garbage" => read_garbage,
    "fill" => fill,
    "chain" => chain,
    "many-calls" => many_calls,
    "log-flood" => log_flood,
    "print-flood" => print_flood,
}
