/**
 * NVRTC (CUDA's run-time compiler) through koffi: CUDA C++ source to PTX, for `npm run build:gpu` on a
 * machine that has the library but no nvcc. Control plane only.
 */
import koffi from 'koffi';

const CANDIDATES = ['libnvrtc.so.13', 'libnvrtc.so.12', '/usr/local/cuda/lib64/libnvrtc.so', '/usr/local/cuda/lib64/libnvrtc.so.13', '/usr/local/cuda/lib64/libnvrtc.so.12'];
const NVRTC_SUCCESS = 0;

type Fn = (...a: unknown[]) => number;
interface Nvrtc {
  create: Fn;
  compile: Fn;
  ptxSize: Fn;
  ptx: Fn;
  logSize: Fn;
  log: Fn;
  destroy: Fn;
  version: Fn;
}

function open(): Nvrtc {
  let lib: koffi.IKoffiLib | null = null;
  let last = '';
  for (const c of CANDIDATES) {
    try {
      lib = koffi.load(c);
      break;
    } catch (e) {
      last = (e as Error).message;
    }
  }
  if (lib === null) throw new Error(`no NVRTC library (libnvrtc.so.13 / .12) found: ${last}`);
  return {
    create: lib.func('int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, const char **headers, const char **includeNames)') as unknown as Fn,
    compile: lib.func('int nvrtcCompileProgram(void *prog, int numOptions, const char **options)') as unknown as Fn,
    ptxSize: lib.func('int nvrtcGetPTXSize(void *prog, _Out_ size_t *size)') as unknown as Fn,
    ptx: lib.func('int nvrtcGetPTX(void *prog, uint8_t *ptx)') as unknown as Fn,
    logSize: lib.func('int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)') as unknown as Fn,
    log: lib.func('int nvrtcGetProgramLog(void *prog, uint8_t *log)') as unknown as Fn,
    destroy: lib.func('int nvrtcDestroyProgram(_Inout_ void **prog)') as unknown as Fn,
    version: lib.func('int nvrtcVersion(_Out_ int *major, _Out_ int *minor)') as unknown as Fn,
  };
}

/** NVRTC's version, e.g. "13.0". */
export function nvrtcVersion(): string {
  const n = open();
  const a = [0];
  const b = [0];
  n.version(a, b);
  return `${a[0]}.${b[0]}`;
}

/** Compile `source` (with `headers`: include name -> text) to PTX; throws with the compiler's log on failure. */
export function nvrtcCompile(name: string, source: string, headers: Record<string, string>, options: readonly string[]): string {
  const n = open();
  const prog: unknown[] = [null];
  const names = Object.keys(headers);
  if (
    n.create(
      prog,
      source,
      name,
      names.length,
      names.map((k) => headers[k]!),
      names,
    ) !== NVRTC_SUCCESS
  )
    throw new Error(`nvrtcCreateProgram(${name}) failed`);
  try {
    const r = n.compile(prog[0], options.length, [...options]);
    if (r !== NVRTC_SUCCESS) {
      const sz = [0];
      n.logSize(prog[0], sz);
      const log = Buffer.alloc(Number(sz[0]));
      n.log(prog[0], log);
      throw new Error(`NVRTC could not compile ${name}:\n${log.toString('utf8').replace(/\0+$/, '')}`);
    }
    const sz = [0];
    n.ptxSize(prog[0], sz);
    const out = Buffer.alloc(Number(sz[0]));
    n.ptx(prog[0], out);
    return out.toString('utf8').replace(/\0+$/, '');
  } finally {
    n.destroy(prog);
  }
}
