/**
 * prettyPrint in the manner of PicklingTools' (Python dict syntax), for the
 * examples' output.
 */
export function prettyPrint(v: unknown, indent = 0): string {
  const pad = ' '.repeat(indent)
  const inner = ' '.repeat(indent + 4)
  if (v === null || v === undefined) return 'None'
  if (typeof v === 'string') return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
  if (typeof v === 'boolean') return v ? 'True' : 'False'
  if (typeof v === 'number' || typeof v === 'bigint') return String(v)
  if (Array.isArray(v)) {
    if (v.length === 0) return '[ ]'
    return `[\n${v.map((x) => inner + prettyPrint(x, indent + 4)).join(',\n')}\n${pad}]`
  }
  if (ArrayBuffer.isView(v)) return `array([${Array.from(v as unknown as ArrayLike<unknown>).join(', ')}])`
  const entries = Object.entries(v as Record<string, unknown>)
  if (entries.length === 0) return '{ }'
  return `{\n${entries.map(([k, x]) => `${inner}'${k}': ${prettyPrint(x, indent + 4)}`).join(',\n')}\n${pad}}`
}
