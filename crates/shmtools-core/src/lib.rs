//! shmtools-core: named shared-memory regions that separate processes create
//! and attach to, with a pool allocator inside. No Node.js dependency; the
//! napi binding and the TypeScript facade sit on top of this crate.
//!
//! Layers, bottom up (each uses only the ones above it in this list):
//! - [`platform`]: every OS call (shm objects, mmap, futex, process liveness).
//! - [`mem`]: bounds-checked, atomic-only access to mapped bytes.
//! - [`lock`]: a process-shared mutex that survives its holder's death.
//! - [`pool`]: the allocator inside a region.
//! - [`boot`]: the boot block that starts every region.
//! - [`holders`]: who is attached and what each process holds (reclaim).
//! - [`region`]: create / attach / remove regions, gc and repair.
//! - [`value`]: refcounted values in a region (Tab, Arr, strings, typed arrays).
//! - [`queue`]: CQ, the bounded queue with futex wake-ups.
//! - [`pipes`]: the pipe directory, ServerSide and ClientSide.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod boot;
pub mod error;
pub mod holders;
pub mod lock;
pub mod mem;
pub mod pipes;
pub mod platform;
pub mod pool;
pub mod queue;
pub mod region;
mod repair;
#[cfg(test)]
mod scratch;
pub mod value;

pub use boot::BootInfo;
pub use error::{Error, ErrorCode, Result};
pub use holders::{HolderInfo, Reclaim, Repair};
pub use pipes::{ClientSide, Directory, PipeEnd, PipeInfo, ServerSide};
pub use pool::{Pool, PoolCheck, PoolStats};
pub use queue::{Queue, QueueStats, WaitFor};
pub use region::{AttachOptions, CreateOptions, Gc, Region, TryAttach};
pub use value::{Elem, Key, KeyRef, Shared, Slot, Value, Values};
