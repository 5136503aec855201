// ES module entry: the same facade as index.js, with named exports.
import { createRequire } from 'node:module'

const shmtools = createRequire(import.meta.url)('./index.js')

export const {
  SHMMain,
  Region,
  Pool,
  attach,
  attachSync,
  ServerSide,
  ClientSide,
  CQ,
  Shared,
  isSHM,
  SharedTyped,
  ShmUnsupportedError,
  ShmError,
  ShmArgumentError,
  AbortError,
  ErrorCodes,
} = shmtools
export default shmtools
