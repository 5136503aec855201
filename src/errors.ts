/**
 * Errors thrown by shmtools. Every error is an `Error` with a stable `code`;
 * waits stopped by an AbortSignal or a breakChecker reject with `AbortError`
 * (code `ABORT_ERR`, as Node's own APIs do).
 */

export const ErrorCodes = {
  TIMEOUT: 'ERR_SHM_TIMEOUT',
  NOT_FOUND: 'ERR_SHM_NOT_FOUND',
  EXISTS: 'ERR_SHM_EXISTS',
  OUT_OF_MEMORY: 'ERR_SHM_OUT_OF_MEMORY',
  NO_SPACE: 'ERR_SHM_NO_SPACE',
  CORRUPT: 'ERR_SHM_CORRUPT',
  INCOMPATIBLE: 'ERR_SHM_INCOMPATIBLE',
  INVALID_ARG: 'ERR_SHM_INVALID_ARG',
  CLOSED: 'ERR_SHM_CLOSED',
  INVALID_STATE: 'ERR_SHM_INVALID_STATE',
  PERMISSION: 'ERR_SHM_PERMISSION',
  ABORTED: 'ERR_SHM_ABORTED',
  IO: 'ERR_SHM_IO',
  /** Other processes are attached (repair), or every holder record is taken. */
  BUSY: 'ERR_SHM_BUSY',
  /** A JS value that cannot be stored (function, symbol, cycle, class instance, ...). */
  UNSUPPORTED: 'ERR_SHM_UNSUPPORTED',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

export class ShmError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ShmError'
    this.code = code
  }
}

/** An argument of the wrong type or out of range: a `TypeError` with a code. */
export class ShmArgumentError extends TypeError {
  readonly code = ErrorCodes.INVALID_ARG
  constructor(message: string) {
    super(message)
    this.name = 'ShmArgumentError'
  }
}

export class AbortError extends Error {
  readonly code = 'ABORT_ERR'
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'AbortError'
  }
}

const NATIVE_CODE = /^(ERR_SHM_[A-Z_]+): ([\s\S]*)$/

/** Turn an error from the native binding into its shmtools class. */
export function fromNative(e: unknown): unknown {
  if (e instanceof Error) {
    const m = NATIVE_CODE.exec(e.message)
    if (m) {
      const code = m[1] as ErrorCode
      return code === ErrorCodes.INVALID_ARG ? new ShmArgumentError(m[2]) : new ShmError(code, m[2])
    }
  }
  return e
}

/** Run a native call, rethrowing its error with the right class and code. */
export function native<T>(call: () => T): T {
  try {
    return call()
  } catch (e) {
    throw fromNative(e)
  }
}
