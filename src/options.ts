/** Argument checks shared by every class: wrong input fails here, with a code. */
import { ShmArgumentError } from './errors'

export function checkName(name: unknown, what = 'name'): string {
  if (typeof name !== 'string') throw new ShmArgumentError(`${what} must be a string, got ${typeof name}`)
  return name
}

/** A non-negative safe integer (sizes, offsets). */
export function checkCount(value: unknown, what: string, { min = 0 } = {}): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new ShmArgumentError(`${what} must be an integer >= ${min}, got ${String(value)}`)
  }
  return value
}

/** A timeout in milliseconds: undefined or Infinity means no limit. */
export function checkTimeout(value: unknown, what = 'timeoutMs'): number {
  if (value === undefined) return Infinity
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new ShmArgumentError(`${what} must be a number of milliseconds >= 0 (or undefined for no limit), got ${String(value)}`)
  }
  return value
}

export function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined
  if (!(signal instanceof AbortSignal)) throw new ShmArgumentError('signal must be an AbortSignal')
  return signal
}

export function checkBreakChecker(fn: unknown): (() => boolean) | undefined {
  if (fn === undefined) return undefined
  if (typeof fn !== 'function') throw new ShmArgumentError('breakChecker must be a function returning a boolean')
  return fn as () => boolean
}

/** The seed's micro_sleep, in microseconds; we default to 10 ms (its 100 ms is slow to start). */
export const DEFAULT_MICRO_SLEEP_US = 10_000

export function checkMicroSleep(value: unknown): number {
  if (value === undefined) return DEFAULT_MICRO_SLEEP_US
  return checkCount(value, 'microSleepUs', { min: 1 })
}
