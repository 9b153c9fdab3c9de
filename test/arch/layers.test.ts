/**
 * The layering of src/: no import from a lower layer to a higher one (or between peers of one layer), and no
 * files that import each other in a loop. The order is the ```layers block of ARCHITECTURE.md, read here, so
 * the document and the check cannot drift apart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildGraph, danglingImports, importCycles, layerViolations, parseLayers, specifiersOf, unlayered, type ImportGraph } from './imports.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const layers = parseLayers(readFileSync(`${root}ARCHITECTURE.md`, 'utf8'));
const graph = buildGraph(`${root}src`);

test('the checker finds upward imports, peer imports and loops (on a made-up graph)', () => {
  const g: ImportGraph = new Map([
    ['a/x.ts', ['b/y.ts']],
    ['b/y.ts', ['b/z.ts']],
    ['b/z.ts', ['b/y.ts']],
    ['c/w.ts', ['d/v.ts']],
    ['d/v.ts', []],
    ['e/u.ts', ['e/u.ts']],
  ]);
  const l = [['a'], ['b', 'e'], ['c', 'd']];
  assert.deepEqual(
    layerViolations(g, l).map((v) => `${v.kind} ${v.from} -> ${v.to}`),
    ['upward a/x.ts -> b/y.ts', 'peer c/w.ts -> d/v.ts'],
  );
  assert.deepEqual(importCycles(g), [['b/y.ts', 'b/z.ts'], ['e/u.ts']]);
  assert.deepEqual(specifiersOf("// import x from './not-this.js'\nimport type { A } from '../a.js';\nexport { b } from './b.js';\nconst c = await import('./c.js');\nimport 'node:fs';"), [
    '../a.js',
    './b.js',
    './c.js',
  ]);
});

test('the scan sees every source file and every import resolves', () => {
  assert.ok(graph.size > 100, `only ${graph.size} files under src/`);
  assert.deepEqual(danglingImports(graph), []);
});

test('every source file belongs to a layer of ARCHITECTURE.md', () => {
  assert.deepEqual(unlayered(graph, layers), []);
});

test('no import runs from a lower layer up to a higher one, or between peers of one layer', () => {
  const bad = layerViolations(graph, layers).map((v) => `${v.from} -> ${v.to} (${v.kind}: ${v.fromEntry} -> ${v.toEntry})`);
  assert.deepEqual(bad, [], `imports against the layer order of ARCHITECTURE.md:\n  ${bad.join('\n  ')}`);
});

test('no files import each other in a loop', () => {
  const loops = importCycles(graph).map((c) => c.join(' <-> '));
  assert.deepEqual(loops, [], `import loops:\n  ${loops.join('\n  ')}`);
});
