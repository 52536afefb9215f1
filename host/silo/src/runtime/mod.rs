//! Rank 6: what turns a component into instances: the wasmtime engine and
//! its epoch ticker, linear memories and stacks that take few kernel
//! mappings, compiled components cached on disk, and the deployed types.

pub(crate) mod component_cache;
pub(crate) mod deployments;
pub(crate) mod engine;
pub(crate) mod mappings;
