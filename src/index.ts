/**
 * shmtools: cross-process shared memory for Node.js, after PicklingTools'
 * SHMMain / ServerSide / ClientSide. See README.md.
 */
export { SHMMain, Region, Pool, attach, attachSync } from './region'
export type { AttachOptions, SHMMainOptions, RegionInfo, PoolStats, PoolCheck, GcReport, HolderEntry, RepairReport } from './region'
export { ServerSide, ClientSide, CQ } from './pipes'
export type { WaitOptions, DequeueOptions, DequeueWaitOptions, DequeueManyOptions, EnqueueManyOptions, SideOptions, PipeStats } from './pipes'
export { Shared, isSHM, SharedTyped } from './values'
export type { SharedTab, SharedArr, SharedHandle, TabMethods, ArrMethods } from './values'
export { ShmUnsupportedError } from './wire'
export type { SharedTypedArray } from './wire'
export { ShmError, ShmArgumentError, AbortError, ErrorCodes } from './errors'
export type { ErrorCode } from './errors'
