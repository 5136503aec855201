/**
 * The per-message calls written against Node-API by hand
 * (crates/shmtools-node/src/fastcall.rs): a call through napi-rs' generated
 * glue costs about five times as much. They have no generated typings, so
 * they are declared here. The pipe calls take the external
 * `NativeQueue.raw()` returns, the value calls the one `NativeRegion.raw()`
 * returns; anything else is refused with ERR_SHM_INVALID_ARG.
 */
import * as binding from '../binding'

/** A pipe as the calls below take it (`NativeQueue.raw()`). */
export type RawPipe = object
/** A region as the value calls below take it (`NativeRegion.raw()`). */
export type RawRegion = object

/** What a dequeue returns for a packet (see `Raw` in src/values.ts). */
type Out = bigint | number | string | Buffer

export interface FastCalls {
  /** Enqueue the encoded value `wire[0..len)`; timeoutMs undefined: forever, 0: no wait. False: no room in time. */
  pipeEnqueue(p: RawPipe, wire: Buffer, len: number, timeoutMs: number | undefined): boolean
  /** Dequeue a handle or value; timeoutMs undefined: forever, 0: no wait. Null: nothing came. */
  pipeDequeue(p: RawPipe, timeoutMs: number | undefined): Out | null
  /** Dequeue if a packet is there or comes within spinUs (no sleep). Null: nothing came. */
  pipeDequeueSpin(p: RawPipe, spinUs: number): Out | null
  /** Dequeue one packet as a plain copy (see binding.pipeDequeueCopy's doc). '' : nothing came. */
  pipeDequeueCopy(p: RawPipe, timeoutMs: number | undefined, spinUs: number): string | Buffer
  /** The futex sequence for kind (0 not empty, 1 not full). */
  pipeSeq(p: RawPipe, kind: number): number
  /** The value at `key` of table handle `id`; null if none. */
  tabGet(r: RawRegion, id: number, key: string): Out | null
  /** Set `key` of table handle `id` to the value encoded in `wire[0..len)`. */
  tabSet(r: RawRegion, id: number, key: string, wire: Buffer, len: number): void
  /** Whether table handle `id` has `key`. */
  tabHas(r: RawRegion, id: number, key: string): boolean
  /** Delete `key` of table handle `id`; false if it was not there. */
  tabDelete(r: RawRegion, id: number, key: string): boolean
  /** How many keys table handle `id` has. */
  tabLen(r: RawRegion, id: number): number
  /** The value at `index` of list handle `id`; null past the end. */
  arrGet(r: RawRegion, id: number, index: number): Out | null
  /** Set item `index` of list handle `id` to the value encoded in `wire[0..len)`. */
  arrSet(r: RawRegion, id: number, index: number, wire: Buffer, len: number): void
  /** Append the value encoded in `wire[0..len)` to list handle `id`; the new length. */
  arrPush(r: RawRegion, id: number, wire: Buffer, len: number): number
  /** Take the last item of list handle `id`; null if empty. */
  arrPop(r: RawRegion, id: number): Out | null
  /** How many items list handle `id` has. */
  arrLen(r: RawRegion, id: number): number
  /** Give handle `id`'s reference back (idempotent; a stale number gives nothing back). */
  valueRelease(r: RawRegion, id: number): void
}

export const fast = binding.fastCalls() as FastCalls
