//! Service type → validated, pre-instantiated component.
//!
//! A deploy compiles (or loads from the disk cache), links against the rio
//! world and only then stores and publishes the type; a file that is not a
//! component of the rio world changes nothing. Replacing a type marks the
//! old deployment superseded, and its activations move to the new code at
//! their next message. Undeploying removes the type from the store and
//! marks it superseded with no successor: its activations answer
//! `unknown-type` from their next message on, and drop their instances.
//!
//! Deploys, undeploys and refreshes run one at a time (`changing`), so a
//! refresh that read the store's list just before a deploy on this silo
//! cannot remove the new type again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rio_protocol::{DeploymentInfo, ReplyError};
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::component_cache::{CompiledCache, Provenance, content_hash};
use super::engine::OWN_MAPPINGS_MAX_DATA_BYTES;
use crate::host::ActivationData;
use crate::host::bindings::HandlerPre;
use crate::observe::Counters;
use crate::storage::ComponentStore;

/// One service type's current code.
pub(crate) struct DeployedType {
    pub(crate) info: DeploymentInfo,
    /// The engine it was compiled for, which its stores must use.
    pub(crate) engine: Engine,
    pub(crate) pre: HandlerPre<ActivationData>,
    superseded: AtomicBool,
}

impl DeployedType {
    pub(crate) fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
    }
}

/// One engine, with what compiles and links components for it.
pub(crate) struct Toolchain {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<ActivationData>,
    pub(crate) cache: Arc<CompiledCache>,
}

pub(crate) struct Deployments {
    /// For components with big memory images (and all of them when
    /// `own_mappings` is `None`): wasmtime's allocations.
    images: Toolchain,
    /// For components with small memory images: the silo's own memories
    /// and stacks (see `mappings`); `None` when unavailable or not wanted.
    own_mappings: Option<Toolchain>,
    store: Arc<dyn ComponentStore>,
    current: RwLock<HashMap<String, Arc<DeployedType>>>,
    changing: tokio::sync::Mutex<()>,
    /// Where prepared components came from is counted here.
    counters: Arc<Counters>,
}

const MAX_SERVICE_TYPE_LEN: usize = 128;

impl Deployments {
    pub(crate) fn new(
        images: Toolchain,
        own_mappings: Option<Toolchain>,
        store: Arc<dyn ComponentStore>,
        counters: Arc<Counters>,
    ) -> Deployments {
        Deployments {
            images,
            own_mappings,
            store,
            current: RwLock::default(),
            changing: tokio::sync::Mutex::new(()),
            counters,
        }
    }

    pub(crate) fn get(&self, service_type: &str) -> Option<Arc<DeployedType>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service_type)
            .cloned()
    }

    pub(crate) fn list(&self) -> Vec<DeploymentInfo> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<DeploymentInfo> = current.values().map(|d| d.info.clone()).collect();
        list.sort_by(|a, b| a.service_type.cmp(&b.service_type));
        list
    }

    /// Validates, stores and publishes `component` as `service_type`.
    pub(crate) async fn deploy(
        &self,
        service_type: &str,
        component: Vec<u8>,
    ) -> Result<DeploymentInfo, ReplyError> {
        validate_service_type(service_type)?;
        let hash = content_hash(&component);
        let deployed = self.prepare(service_type, &hash, component.clone()).await?;
        let storage_error = |e: crate::storage::StorageError| ReplyError::Internal(e.to_string());
        let _one_at_a_time = self.changing.lock().await;
        self.store
            .put_component(&hash, &component)
            .await
            .map_err(storage_error)?;
        self.store
            .set_deployment(service_type, &hash)
            .await
            .map_err(storage_error)?;
        let info = deployed.info.clone();
        self.publish(deployed);
        tracing::info!(service_type, content_hash = %hash, "deployed");
        Ok(info)
    }

    /// Removes `service_type` from the store and stops serving it.
    pub(crate) async fn undeploy(&self, service_type: &str) -> Result<DeploymentInfo, ReplyError> {
        let _one_at_a_time = self.changing.lock().await;
        let unknown = || ReplyError::UnknownType {
            service_type: service_type.to_string(),
        };
        let info = self.get(service_type).ok_or_else(unknown)?.info.clone();
        let removed = self
            .store
            .remove_deployment(service_type)
            .await
            .map_err(|e| ReplyError::Internal(e.to_string()))?;
        self.unpublish(service_type);
        if !removed {
            // Undeployed through another silo a moment ago.
            return Err(unknown());
        }
        tracing::info!(service_type, content_hash = %info.content_hash, "undeployed");
        Ok(info)
    }

    /// Serves what the store lists: loads every deployment this silo does
    /// not serve yet (all of them as a silo starts; in a cluster, those
    /// made through other silos) and drops the types undeployed elsewhere.
    /// A type that no longer loads is logged and skipped.
    pub(crate) async fn refresh(&self) -> Result<(), crate::storage::StorageError> {
        // One change at a time, so a component is compiled once.
        let _one_at_a_time = self.changing.lock().await;
        let stored = self.store.deployments().await?;
        let served: Vec<String> = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for service_type in served {
            if !stored
                .iter()
                .any(|(stored_type, _)| *stored_type == service_type)
            {
                self.unpublish(&service_type);
                tracing::info!(service_type, "undeployed through another silo");
            }
        }
        for (service_type, hash) in stored {
            if self
                .get(&service_type)
                .is_some_and(|current| current.info.content_hash == hash)
            {
                continue;
            }
            let Some(bytes) = self.store.component(&hash).await? else {
                tracing::error!(service_type, content_hash = %hash, "deployed component is missing from the store");
                continue;
            };
            match self.prepare(&service_type, &hash, bytes).await {
                Ok(deployed) => self.publish(deployed),
                Err(error) => tracing::error!(service_type, %error, "cannot load deployment"),
            }
        }
        Ok(())
    }

    async fn prepare(
        &self,
        service_type: &str,
        hash: &str,
        bytes: Vec<u8>,
    ) -> Result<Arc<DeployedType>, ReplyError> {
        let component_bytes = bytes.len() as u64;
        let toolchain = match &self.own_mappings {
            Some(own) if data_segment_bytes(&bytes) <= OWN_MAPPINGS_MAX_DATA_BYTES => own,
            _ => &self.images,
        };
        let cache = toolchain.cache.clone();
        let hash_owned = hash.to_string();
        let started = std::time::Instant::now();
        let (component, provenance) =
            tokio::task::spawn_blocking(move || cache.load_or_compile(&hash_owned, &bytes))
                .await
                .map_err(|e| ReplyError::Internal(format!("compiler task failed: {e}")))?
                .map_err(|e| {
                    ReplyError::InvalidComponent(format!(
                        "not a valid WebAssembly component: {e:#}"
                    ))
                })?;
        match provenance {
            Provenance::Cached => &self.counters.components_loaded,
            Provenance::Compiled => &self.counters.components_compiled,
        }
        .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            service_type,
            cached = (provenance == Provenance::Cached),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "component ready"
        );
        let instance_pre = toolchain.linker.instantiate_pre(&component).map_err(|e| {
            ReplyError::InvalidComponent(format!(
                "the component imports something a rio silo does not provide (it must target the world rio:service/service-object@0.2.0 or @0.1.0): {e:#}"
            ))
        })?;
        let pre = HandlerPre::new(instance_pre).map_err(|e| {
            ReplyError::InvalidComponent(format!(
                "the component does not export rio:service/handler as the world rio:service/service-object requires: {e:#}"
            ))
        })?;
        tracing::debug!(service_type, wit = pre.wit_version(), "component linked");
        let info = DeploymentInfo {
            service_type: service_type.to_string(),
            content_hash: hash.to_string(),
            component_bytes,
        };
        Ok(Arc::new(DeployedType {
            info,
            engine: toolchain.engine.clone(),
            pre,
            superseded: AtomicBool::new(false),
        }))
    }

    fn unpublish(&self, service_type: &str) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.remove(service_type) {
            old.superseded.store(true, Ordering::Relaxed);
        }
    }

    fn publish(&self, deployed: Arc<DeployedType>) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.insert(deployed.info.service_type.clone(), deployed) {
            old.superseded.store(true, Ordering::Relaxed);
        }
    }
}

fn validate_service_type(service_type: &str) -> Result<(), ReplyError> {
    let valid = !service_type.is_empty()
        && service_type.len() <= MAX_SERVICE_TYPE_LEN
        && service_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ReplyError::BadRequest(format!(
            "service type `{service_type}` must be 1 to {MAX_SERVICE_TYPE_LEN} letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// The bytes of data segments in the core modules of `component` (a
/// WebAssembly component binary), nested components included: what a new
/// instance's memories are initialized with. What cannot be read counts as
/// nothing (such a file fails to compile anyway).
fn data_segment_bytes(component: &[u8]) -> u64 {
    /// Section ids: a core module and a nested component inside a
    /// component; the data section inside a core module.
    const CORE_MODULE: u8 = 1;
    const COMPONENT: u8 = 4;
    const DATA: u8 = 11;
    fn sections(binary: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
        // After the magic number and the version.
        let mut rest = binary.get(8..).unwrap_or_default();
        std::iter::from_fn(move || {
            let (&id, after_id) = rest.split_first()?;
            let (size, after_size) = leb128(after_id)?;
            let body = after_size.get(..size)?;
            rest = &after_size[size..];
            Some((id, body))
        })
    }
    fn leb128(bytes: &[u8]) -> Option<(usize, &[u8])> {
        let mut value = 0usize;
        for (i, &byte) in bytes.iter().enumerate().take(5) {
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some((value, &bytes[i + 1..]));
            }
        }
        None
    }
    sections(component)
        .map(|(id, body)| match id {
            CORE_MODULE => sections(body)
                .filter(|(id, _)| *id == DATA)
                .map(|(_, data)| data.len() as u64)
                .sum(),
            COMPONENT => data_segment_bytes(body),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_segments_are_counted_in_core_modules_nested_or_not() {
        // A core module with a data section of 3 bytes (contents unread).
        let module = [b"\0asm\x01\0\0\0".as_slice(), &[11, 3, 1, 2, 3]].concat();
        let in_section = |id: u8, body: &[u8]| [&[id, body.len() as u8][..], body].concat();
        let component_header = b"\0asm\x0d\0\x01\0".as_slice();
        let nested = [component_header, &in_section(1, &module)].concat();
        let component = [
            component_header,
            &in_section(1, &module),
            &in_section(4, &nested),
            &in_section(7, &[0; 4]),
        ]
        .concat();
        assert_eq!(data_segment_bytes(&component), 6);
        assert_eq!(data_segment_bytes(b"not wasm"), 0);
    }
}
