//! The Node-API binding: converts between JavaScript and shmtools-core and
//! nothing more. Every error crosses as a JS `Error` whose `code` is the core's
//! stable `ERR_SHM_…` code (see convert.rs); the TypeScript facade gives it its class.
#![deny(unsafe_op_in_unsafe_fn)]

mod bench;
mod convert;
mod fastcall;
mod pipe;
mod region;
mod value;
mod waiter;

pub use bench::*;
pub use fastcall::*;
pub use pipe::*;
pub use region::*;
pub use value::*;
