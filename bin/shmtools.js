#!/usr/bin/env node
'use strict'
// The `shmtools` command (npx shmtools ls | inspect | rm | top); see src/cli.ts.
const { main } = require('../dist/cli.js')

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (e) => {
    process.stderr.write(`shmtools: ${e.message}\n`)
    process.exitCode = e.code === 'ERR_SHM_INVALID_ARG' ? 2 : 1
  },
)
