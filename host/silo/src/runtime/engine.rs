//! The one wasmtime `Engine` of a silo, and the thread that advances its epoch.
//!
//! Deadlines use epoch interruption rather than fuel: it costs a load and a
//! compare at loop headers instead of a counter update on every block.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::mappings;
use crate::config::SiloConfig;

/// How often the epoch advances; the granularity of turn deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Whether the silo makes a second engine whose linear memories and stacks
/// are its own (see `mappings`), for components with small memory images.
pub(crate) fn uses_own_mappings(config: &SiloConfig) -> bool {
    !config.pooling_allocator && !config.memory_images && mappings::supported()
}

/// Components whose data segments are larger than this use the engine
/// with copy-on-write memory images: copying megabytes (a Python or
/// JavaScript guest's image) into every activation would cost it
/// milliseconds and megabytes of private memory.
pub(crate) const OWN_MAPPINGS_MAX_DATA_BYTES: u64 = 1024 * 1024;

/// The silo's engine: with `own_mappings`, the one whose memories and
/// stacks come from `mappings`; else wasmtime's own allocations (pooled if
/// configured) with copy-on-write memory images.
pub(crate) fn build_engine(config: &SiloConfig, own_mappings: bool) -> wasmtime::Result<Engine> {
    let mut wasm_config = Config::new();
    wasm_config.wasm_component_model(true);
    wasm_config.epoch_interruption(true);
    // The default 4 GiB virtual reservation per memory would exhaust the
    // address space at a few ten thousand activations; reserving the memory
    // limit instead keeps 100,000 activations possible, at the cost of
    // explicit bounds checks.
    let reservation = config.memory_limit_bytes as u64;
    wasm_config.memory_reservation(reservation);
    wasm_config.memory_reservation_for_growth(0);
    if config.pooling_allocator {
        wasm_config.memory_init_cow(true);
        wasm_config.memory_guard_size(64 * 1024);
        let mut pooling = PoolingAllocationConfig::default();
        pooling.total_component_instances(config.pooling_max_instances);
        // A componentize-py component instantiates about 14 core modules; the
        // slots for them are address space, not memory, until used.
        pooling.total_core_instances(config.pooling_max_instances * 16);
        pooling.total_memories(config.pooling_max_instances * 4);
        pooling.total_tables(config.pooling_max_instances * 16);
        pooling.max_memory_size(config.memory_limit_bytes);
        pooling.total_stacks(config.pooling_max_instances.min(2000));
        wasm_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    } else if own_mappings {
        // Memories and stacks that merge into a few kernel mappings (see
        // `mappings`): no guard regions (every access is bounds-checked), no
        // copy-on-write images (data segments are copied in).
        wasm_config.memory_init_cow(false);
        wasm_config.memory_guard_size(0);
        wasm_config.guard_before_linear_memory(false);
        wasm_config.with_host_memory(Arc::new(mappings::Memories));
        wasm_config.with_host_stack(Arc::new(mappings::Stacks));
    } else {
        wasm_config.memory_init_cow(true);
        wasm_config.memory_guard_size(64 * 1024);
    }
    Engine::new(&wasm_config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
pub(crate) fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("rio-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("cannot spawn the epoch thread");
}

/// Memory mappings one idle activation of a Rust guest holds with
/// wasmtime's own allocations (/proc/PID/maps, 1,310 activations): its
/// store's cached async stack (a guard page and the stack) and its linear
/// memory (the guest's stack region, the copy-on-write data image, the heap,
/// the rest of the reservation, the guard). With the silo's own memories
/// and stacks (see `mappings`) it is next to none: 68 more mappings for
/// 20,000 activations.
const MAPPINGS_PER_ACTIVATION: u64 = 7;
/// The same with the pooling allocator (plus its fixed pool).
const MAPPINGS_PER_POOLED_ACTIVATION: u64 = 4;

/// Warns when the kernel's limit on memory mappings caps the number of live
/// activations well below what the memory of the machine would allow: only
/// when the silo uses wasmtime's allocations (the pooling allocator,
/// `memory_images`, or a kernel without guard pages in page tables, before
/// Linux 6.13).
pub(crate) fn warn_if_mappings_are_scarce(config: &SiloConfig) {
    if uses_own_mappings(config) {
        return;
    }
    let Ok(text) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else {
        return;
    };
    let Ok(limit) = text.trim().parse::<u64>() else {
        return;
    };
    if limit < 262_144 {
        let per_activation = match config.pooling_allocator {
            true => MAPPINGS_PER_POOLED_ACTIVATION,
            false => MAPPINGS_PER_ACTIVATION,
        };
        let activations = limit / per_activation;
        tracing::warn!(
            max_map_count = limit,
            "vm.max_map_count limits this silo to about {activations} live activations; \
             raise it with `sysctl -w vm.max_map_count=1048576` to host 100,000 or more"
        );
    }
}
