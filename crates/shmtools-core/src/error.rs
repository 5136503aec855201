//! One error type for the whole core. Every error carries a stable code
//! (`ERR_SHM_…`, shown to JavaScript as `err.code`) and a message that says
//! what to do about it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A wait ran out of time.
    Timeout,
    /// No region (or pipe) of that name.
    NotFound,
    /// A name is taken (a concurrent creator won the race).
    Exists,
    /// The pool cannot satisfy an allocation.
    OutOfMemory,
    /// The system (`/dev/shm`) cannot hold a region that large.
    NoSpace,
    /// Bytes in the region contradict themselves: a bad offset, length or tag.
    Corrupt,
    /// The object is not a shmtools region of a layout this build understands.
    Incompatible,
    /// A caller's argument is out of range or of the wrong kind.
    InvalidArg,
    /// The handle was closed (or its region unmapped).
    Closed,
    /// A call that is wrong in the object's current state (`start()` twice).
    InvalidState,
    /// The operating system refused access.
    Permission,
    /// A break checker asked the wait to stop.
    Aborted,
    /// Any other operating-system failure.
    Io,
    /// Other processes are attached (or hold every record) and the call
    /// needs them gone.
    Busy,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Timeout => "ERR_SHM_TIMEOUT",
            ErrorCode::NotFound => "ERR_SHM_NOT_FOUND",
            ErrorCode::Exists => "ERR_SHM_EXISTS",
            ErrorCode::OutOfMemory => "ERR_SHM_OUT_OF_MEMORY",
            ErrorCode::NoSpace => "ERR_SHM_NO_SPACE",
            ErrorCode::Corrupt => "ERR_SHM_CORRUPT",
            ErrorCode::Incompatible => "ERR_SHM_INCOMPATIBLE",
            ErrorCode::InvalidArg => "ERR_SHM_INVALID_ARG",
            ErrorCode::Closed => "ERR_SHM_CLOSED",
            ErrorCode::InvalidState => "ERR_SHM_INVALID_STATE",
            ErrorCode::Permission => "ERR_SHM_PERMISSION",
            ErrorCode::Aborted => "ERR_SHM_ABORTED",
            ErrorCode::Io => "ERR_SHM_IO",
            ErrorCode::Busy => "ERR_SHM_BUSY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Corrupt, message)
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidArg, message)
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
