//! Conversions at the boundary: core errors to JS errors, JS numbers to sizes
//! and offsets (checked again here: the facade's checks are not trusted).

use shmtools_core::{Error, ErrorCode};

/// napi-rs throws errors whose `code` is a fixed `Status` name, so the stable
/// code travels at the head of the message (`"ERR_SHM_…: what to do"`) and the
/// facade (src/errors.ts) turns it into the error's `code`.
pub fn err(code: ErrorCode, msg: impl Into<String>) -> napi::Error {
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("{}: {}", code.as_str(), msg.into()),
    )
}

pub fn js(e: Error) -> napi::Error {
    err(e.code(), e.message())
}

/// A JS number that must be a non-negative integer (a size or an offset).
pub fn to_u64(v: f64, what: &str) -> napi::Result<u64> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(err(
            ErrorCode::InvalidArg,
            format!("{what} must be a non-negative safe integer, got {v}"),
        ))
    }
}
