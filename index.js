'use strict'
// CommonJS entry: the compiled TypeScript facade (src/ → dist/).
module.exports = require('./dist/index.js')
