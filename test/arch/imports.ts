/**
 * The import graph of src/ and the layer rules of ARCHITECTURE.md, for test/arch/layers.test.ts.
 *
 * Specifiers come from TypeScript's own pre-processor (ts.preProcessFile: import and export-from declarations,
 * `import type`, dynamic import() and require(), nothing inside comments or strings), so the scan is exact and
 * takes milliseconds. Only relative specifiers count (packages and node: modules are outside the layers).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import ts from 'typescript';

/** file (relative to src/, e.g. 'io/driver.ts') -> the src files it imports. */
export type ImportGraph = Map<string, string[]>;

export function listSources(srcDir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(relative(srcDir, p));
    }
  };
  walk(srcDir);
  return out.sort();
}

/** The relative specifiers of one source text. */
export function specifiersOf(source: string): string[] {
  return ts
    .preProcessFile(source, true, true)
    .importedFiles.map((f) => f.fileName)
    .filter((s) => s.startsWith('./') || s.startsWith('../'));
}

/** Resolve a specifier of `from` (relative to src/) to a file relative to src/ ('x.js' is the source 'x.ts'). */
export function resolveSpecifier(from: string, spec: string): string {
  const p = normalize(join(dirname(from), spec));
  return p.endsWith('.js') ? `${p.slice(0, -3)}.ts` : p;
}

export function buildGraph(srcDir: string): ImportGraph {
  const g: ImportGraph = new Map();
  for (const f of listSources(srcDir)) {
    const specs = specifiersOf(readFileSync(join(srcDir, f), 'utf8'));
    g.set(
      f,
      specs.map((s) => resolveSpecifier(f, s)),
    );
  }
  return g;
}

/**
 * The layer order: a fenced block tagged `layers` in ARCHITECTURE.md, one layer per line, bottom first. A line
 * names folders under src/ (`io`) or single files (`transport/transport.ts`), separated by spaces; text after `#`
 * is a comment. A file belongs to the most specific entry that names it.
 */
export function parseLayers(markdown: string): string[][] {
  const m = /```layers\n([\s\S]*?)```/.exec(markdown);
  if (!m) throw new Error('ARCHITECTURE.md has no ```layers block');
  return m[1]!
    .split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l.length > 0)
    .map((l) => l.split(/\s+/));
}

/** The layer (index) and entry of a file; layer -1 when no entry names it. */
export function placeOf(layers: string[][], file: string): { layer: number; entry: string } {
  let best = { layer: -1, entry: '' };
  layers.forEach((entries, i) => {
    for (const e of entries) {
      const hit = e.endsWith('.ts') ? file === e : file === e || file.startsWith(`${e}/`);
      if (hit && e.length > best.entry.length) best = { layer: i, entry: e };
    }
  });
  return best;
}

export interface LayerViolation {
  from: string;
  to: string;
  /** The entries (folders or files of the layers block) of both ends. */
  fromEntry: string;
  toEntry: string;
  kind: 'upward' | 'peer';
}

/**
 * Every import that breaks the order: from a file to a file of a higher layer ('upward'), or to a file of
 * another entry of the same layer ('peer': entries on one line are peers and may not import each other).
 */
export function layerViolations(g: ImportGraph, layers: string[][]): LayerViolation[] {
  const out: LayerViolation[] = [];
  for (const [from, tos] of g) {
    const a = placeOf(layers, from);
    if (a.layer < 0) continue;
    for (const to of tos) {
      const b = placeOf(layers, to);
      if (b.layer > a.layer) out.push({ from, to, fromEntry: a.entry, toEntry: b.entry, kind: 'upward' });
      else if (b.layer === a.layer && b.entry !== a.entry) out.push({ from, to, fromEntry: a.entry, toEntry: b.entry, kind: 'peer' });
    }
  }
  return out;
}

/** Files that no layer names. */
export function unlayered(g: ImportGraph, layers: string[][]): string[] {
  return [...g.keys()].filter((f) => placeOf(layers, f).layer < 0);
}

/** Imports of files that do not exist. */
export function danglingImports(g: ImportGraph): Array<{ from: string; to: string }> {
  const out: Array<{ from: string; to: string }> = [];
  for (const [from, tos] of g) for (const to of tos) if (!g.has(to)) out.push({ from, to });
  return out;
}

/** Import loops: the strongly connected components of more than one file, and files that import themselves. */
export function importCycles(g: ImportGraph): string[][] {
  // Tarjan's algorithm, iterative (no recursion depth limit).
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  for (const root of g.keys()) {
    if (idx.has(root)) continue;
    const work: Array<{ v: string; i: number }> = [{ v: root, i: 0 }];
    idx.set(root, index);
    low.set(root, index++);
    stack.push(root);
    onStack.add(root);
    while (work.length > 0) {
      const top = work[work.length - 1]!;
      const succ = (g.get(top.v) ?? []).filter((w) => g.has(w));
      if (top.i < succ.length) {
        const w = succ[top.i++]!;
        if (!idx.has(w)) {
          idx.set(w, index);
          low.set(w, index++);
          stack.push(w);
          onStack.add(w);
          work.push({ v: w, i: 0 });
        } else if (onStack.has(w)) low.set(top.v, Math.min(low.get(top.v)!, idx.get(w)!));
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1]!.v;
        low.set(parent, Math.min(low.get(parent)!, low.get(top.v)!));
      }
      if (low.get(top.v) === idx.get(top.v)) {
        const comp: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          comp.push(w);
        } while (w !== top.v);
        if (comp.length > 1 || (g.get(top.v) ?? []).includes(top.v)) out.push(comp.sort());
      }
    }
  }
  return out;
}
