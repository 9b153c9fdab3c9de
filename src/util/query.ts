/** The query part of a URI (emu://?size=1GiB&null=1, file:x.img?size=1GiB, pci:...?mode=vfio, gpuctl://?null=0). */

/**
 * What is wrong with a query's keys, or null: a key not in `known`, or a key given twice (a URI says each
 * thing once; taking the first or the last in silence would run something the user did not write).
 */
export function queryKeyProblem(params: URLSearchParams, known: readonly string[]): string | null {
  const seen = new Set<string>();
  for (const key of params.keys()) {
    if (!known.includes(key)) return `unknown parameter '${key}' (known: ${known.join(', ')})`;
    if (seen.has(key)) return `parameter '${key}' is given more than once`;
    seen.add(key);
  }
  return null;
}
