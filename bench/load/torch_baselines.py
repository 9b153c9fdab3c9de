#!/usr/bin/env python3
"""What a PyTorch user writes to load files into GPU (or host) memory, timed the way `homi load --json` reports.

    python3 bench/load/torch_baselines.py [--device cuda|cpu] [--cold] [--verify] [--baselines a,b,...]
        [--pt-dir DIR] FILE|DIR|manifest.json ...

A directory with a manifest.json (written by `homi load gen`) or a manifest.json itself stands for the files it
lists (their sha256 are then what --verify checks against); any other directory stands for the regular files in
it; anything else is a file. Prints one JSON object per baseline on its own line on stdout:

    {"path": "torch:safetensors", "target": "gpu", "files": N, "bytes": B, "seconds": S, "filesPerSec": ...,
     "mibPerSec": ..., "latency": {"p50": ms, "p99": ms, "max": ms}, "describe": "...", "cold": "...",
     "verified": N}

plus "skipped": reason when a baseline could not run (a missing module, no CUDA), or "error": message when it
failed on a file. Notes go to stderr. Exit status: 0; 3 when torch itself is missing or --device cuda has no
CUDA (every baseline is then printed as skipped, and stderr has one line saying why); 2 for bad arguments.

Baselines (each imports its modules itself, so one missing module skips only the baselines that need it):
  torch:safetensors  safetensors.torch.load_file(p, device=dev); bytes are the tensors' bytes. On the CPU the
                     tensors may be backed by a lazy mapping: one byte of every 4 KiB page is touched
  torch:load-mmap    torch.load(p.pt, map_location=dev, mmap=True, weights_only=True) on a .pt twin of each file
                     (one uint8 tensor holding the file's bytes, written with torch.save in a sibling directory
                     before any clock runs, kept for later runs); files and bytes are those of the .pt files.
                     On the CPU, mmap alone reads nothing: one byte of every 4 KiB page is touched
  numpy:fromfile     np.fromfile(p, dtype=np.uint8), then torch.from_numpy(a).to(dev)
  python:read        open(p, 'rb').read(), then torch.frombuffer(b, dtype=torch.uint8).to(dev)
  torch:gds          torch.cuda.gds.GdsFile(p, os.O_RDONLY).load_storage(...) into a CUDA tensor (cuFile; in
                     compatibility mode, i.e. POSIX reads and a copy, when /proc/driver/nvidia-fs is absent)

Each file's latency runs from the call to the device being synchronised (torch.cuda.synchronize()) after it;
seconds are the wall time of the loop over all files, less the time --verify spends hashing between files.
The CUDA context is created, and each baseline loads the first file once, before any clock (imports, lazy
kernels and first allocations are not measured; --cold drops the pages after that). Loaded tensors are freed
after each file.

--cold drops each file's pages from the page cache before each baseline (os.posix_fadvise(POSIX_FADV_DONTNEED)
on a plain read-only open, no fsync: files written by `homi load gen` are already on disk) and reports how many
pages were still resident afterwards (mincore); on tmpfs/ramfs it says that nothing can be dropped.
"""

import argparse
import hashlib
import json
import os
import sys
import time

BASELINES = ["torch:safetensors", "torch:load-mmap", "numpy:fromfile", "python:read", "torch:gds"]
PAGE = 4096
MiB = 1024 * 1024


def note(msg):
    print(f"torch_baselines: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inputs


def read_manifest(path):
    with open(path, "r", encoding="utf-8") as f:
        m = json.load(f)
    if not isinstance(m, dict) or not isinstance(m.get("files"), list):
        raise ValueError(f"{path}: not a dataset manifest (no files list)")
    base = os.path.dirname(os.path.abspath(path))
    return [(os.path.join(base, e["path"]), e.get("sha256")) for e in m["files"]]


def expand(inputs):
    """[(absolute path, sha256 or None)] for the command line's files, directories and manifests."""
    out = []
    for arg in inputs:
        if os.path.isdir(arg):
            man = os.path.join(arg, "manifest.json")
            if os.path.isfile(man):
                out.extend(read_manifest(man))
            else:
                for name in sorted(os.listdir(arg)):
                    p = os.path.join(arg, name)
                    if os.path.isfile(p):
                        out.append((os.path.abspath(p), None))
        elif arg.endswith(".json") and os.path.basename(arg) == "manifest.json":
            out.extend(read_manifest(arg))
        elif os.path.isfile(arg):
            out.append((os.path.abspath(arg), None))
        else:
            raise FileNotFoundError(f"{arg}: no such file or directory")
    return out


# ---------------------------------------------------------------- page cache


def _unescape_mount(s):
    # /proc/mounts escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def fs_type(path):
    """(mount point, filesystem type) holding `path`, from /proc/mounts; (None, None) when unknown."""
    try:
        with open("/proc/mounts", "r", encoding="utf-8") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None, None
    real = os.path.realpath(path)
    best = (None, None)
    for m in mounts:
        if len(m) < 3:
            continue
        mp = _unescape_mount(m[1])
        if real == mp or real.startswith(mp.rstrip("/") + "/"):
            if best[0] is None or len(mp) >= len(best[0]):
                best = (mp, m[2])
    return best


_libc = None


def _mincore_lib():
    global _libc
    if _libc is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
        lib.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        lib.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
        _libc = (ctypes, lib)
    return _libc


def resident_pages(path):
    """(resident pages, pages) of a file, by mincore on a shared read-only mapping; None when that fails."""
    size = os.path.getsize(path)
    if size == 0:
        return 0, 0
    try:
        ctypes, lib = _mincore_lib()
    except (OSError, AttributeError):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = lib.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return None
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if lib.mincore(addr, size, vec) != 0:
                return None
            return sum(b & 1 for b in vec), pages
        finally:
            lib.munmap(addr, size)
    finally:
        os.close(fd)


def cold_state(paths):
    """None when the page cache of these files can be dropped, else why not."""
    if not hasattr(os, "posix_fadvise"):
        return "this Python has no os.posix_fadvise"
    kinds = {}
    for p in paths[:1] + paths[-1:]:
        mp, t = fs_type(p)
        kinds[t] = mp
    for t in ("tmpfs", "ramfs"):
        if t in kinds:
            return f"{kinds[t]} is {t}: its pages live in memory and cannot be dropped"
    return None


def drop_cache(paths):
    """Drop the files' pages; a one-line account of what is still resident."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    res = pages = 0
    for p in paths:
        r = resident_pages(p)
        if r is None:
            return "page cache dropped (posix_fadvise DONTNEED); residency unknown (mincore failed)"
        res += r[0]
        pages += r[1]
    pct = 100.0 * res / pages if pages else 0.0
    hint = " (dirty pages stay: run sync after writing the files)" if res > 0 else ""
    return f"page cache dropped (posix_fadvise DONTNEED): {pct:.1f}% of {pages} pages resident after{hint}"


# ---------------------------------------------------------------- timing


def percentile(sorted_ms, q):
    if not sorted_ms:
        return 0.0
    k = max(0, min(len(sorted_ms) - 1, int(-(-q * len(sorted_ms) // 1)) - 1))
    return sorted_ms[k]


def result(name, target, files, nbytes, seconds, lat_ms, describe, **extra):
    lat = sorted(lat_ms)
    r = {
        "path": name,
        "target": target,
        "files": files,
        "bytes": nbytes,
        "seconds": seconds,
        "filesPerSec": files / seconds if seconds > 0 else 0.0,
        "mibPerSec": nbytes / MiB / seconds if seconds > 0 else 0.0,
        "latency": {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "max": lat[-1] if lat else 0.0},
        "describe": describe,
    }
    r.update(extra)
    return r


def skipped(name, target, reason, describe=""):
    return result(name, target, 0, 0, 0.0, [], describe, skipped=reason)


def sha256_of_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tensor_bytes(t):
    """A host uint8 numpy view of a tensor's bytes (for hashing)."""
    import torch

    flat = t.detach().reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return flat.cpu().numpy()


# ---------------------------------------------------------------- baselines
# Each returns (load(path) -> (object, bytes), bytes_for_verify(object, path) -> iterable of buffers, describe).


def touch_pages(t):
    """Fault in every 4 KiB page of a host tensor (one byte each): a lazily mapped tensor holds no bytes yet."""
    import torch

    flat = t.reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    if flat.numel() > 0:
        int(flat[::PAGE].sum())


def baseline_safetensors(dev):
    import torch
    from safetensors.torch import load_file

    touch = torch.device(dev).type == "cpu"

    def load(p):
        d = load_file(p, device=dev)
        if touch:
            for t in d.values():
                touch_pages(t)
        return d, sum(t.numel() * t.element_size() for t in d.values())

    def verify_bytes(d, p):
        # The file's bytes: its header (read from disk, outside the clock) and the loaded tensors in file order.
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            head = f.read(n)
            meta = json.loads(head)
        yield n.to_bytes(8, "little") + head
        order = sorted((v["data_offsets"][0], k) for k, v in meta.items() if k != "__metadata__")
        for _, k in order:
            yield tensor_bytes(d[k])

    how = "; CPU: one byte per 4 KiB page touched (the tensors may be backed by a lazy mapping)" if touch else ""
    return load, verify_bytes, f"safetensors.torch.load_file(p, device='{dev}'){how}; bytes: the tensors' bytes"


def baseline_load_mmap(dev, twin_of):
    import torch

    touch = torch.device(dev).type == "cpu"

    def load(p):
        t = torch.load(twin_of[p], map_location=dev, mmap=True, weights_only=True)
        if touch:
            touch_pages(t)  # mmap alone reads nothing
        return t, os.path.getsize(twin_of[p])

    def verify_bytes(t, p):
        yield tensor_bytes(t)

    how = "; CPU: one byte per 4 KiB page touched (mmap alone reads nothing)" if touch else ""
    return load, verify_bytes, f"torch.load(p.pt, map_location='{dev}', mmap=True, weights_only=True) on .pt twins (one uint8 tensor of the file's bytes, torch.save, made before the clock){how}; files and bytes: the .pt files"


def baseline_numpy(dev):
    import numpy as np
    import torch

    def load(p):
        a = np.fromfile(p, dtype=np.uint8)
        t = torch.from_numpy(a).to(dev)
        return t, a.nbytes

    def verify_bytes(t, p):
        yield tensor_bytes(t)

    return load, verify_bytes, f"np.fromfile(p, dtype=np.uint8), torch.from_numpy(a).to('{dev}')"


def baseline_read(dev):
    import warnings

    import torch

    def load(p):
        with open(p, "rb") as f:
            b = f.read()
        if not b:
            return torch.empty(0, dtype=torch.uint8, device=dev), 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # frombuffer warns that bytes are not writable
            t = torch.frombuffer(b, dtype=torch.uint8).to(dev)
        return t, len(b)

    def verify_bytes(t, p):
        yield tensor_bytes(t)

    return load, verify_bytes, f"open(p, 'rb').read(), torch.frombuffer(b, dtype=torch.uint8).to('{dev}')"


def cufile_log_cause():
    """The first errors of cuFile's last burst in ./cufile.log (where it logs by default), for the report."""
    try:
        with open("cufile.log", "r", encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f.readlines() if " ERROR " in ln][-5:]
    except OSError:
        return ""
    msgs = []
    for ln in lines:
        text = ln.split(" ERROR ", 1)[1].strip()
        text = text.split(" ", 1)[1] if " " in text else text  # drop the "cufio-xxx:NN" source tag
        if text not in msgs:
            msgs.append(text)
    return f" (cufile.log: {'; '.join(msgs[:2])})" if msgs else ""


def baseline_gds(dev):
    import torch

    if torch.device(dev).type != "cuda":
        raise LookupError("cuFile loads into GPU memory only (--device cuda)")
    import torch.cuda.gds as gds

    if not hasattr(gds, "GdsFile"):
        raise LookupError("this torch has no torch.cuda.gds.GdsFile")
    mode = "cuFile compatibility mode (no nvidia-fs)" if not os.path.exists("/proc/driver/nvidia-fs") else "cuFile with nvidia-fs (/proc/driver/nvidia-fs present)"

    def load(p):
        size = os.path.getsize(p)
        # O_DIRECT reads whole blocks: the buffer is rounded up to 4 KiB, the tensor is its first `size` bytes
        buf = torch.empty(max(PAGE, (size + PAGE - 1) // PAGE * PAGE), dtype=torch.uint8, device=dev)
        try:
            f = gds.GdsFile(p, os.O_RDONLY)
        except RuntimeError as e:
            raise RuntimeError(f"{e}{cufile_log_cause()}") from None
        try:
            f.load_storage(buf.untyped_storage(), 0)
        finally:
            f.deregister_handle()
            del f
        return buf[:size], size

    def verify_bytes(t, p):
        yield tensor_bytes(t)

    return load, verify_bytes, f"torch.cuda.gds.GdsFile(p, os.O_RDONLY) (O_DIRECT) load_storage into a CUDA tensor, buffers not registered; {mode}"


# ---------------------------------------------------------------- .pt twins


def make_twins(files, pt_dir):
    """{file: its .pt twin}, made where missing or stale; a note saying what was done."""
    import torch

    common = os.path.commonpath([os.path.dirname(p) for p, _ in files])
    if pt_dir is None:
        pt_dir = common.rstrip("/") + ".pt-twins"
    os.makedirs(pt_dir, exist_ok=True)
    index_path = os.path.join(pt_dir, "twins.json")
    try:
        with open(index_path, "r", encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError):
        index = {}
    twin_of, made = {}, 0
    t0 = time.perf_counter()
    for p, _ in files:
        rel = os.path.relpath(p, common)
        dst = os.path.join(pt_dir, rel + ".pt")
        st = os.stat(p)
        key = [st.st_size, st.st_mtime_ns]
        if index.get(rel) != key or not os.path.isfile(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(p, "rb") as f:
                data = bytearray(f.read())
            t = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
            tmp = dst + ".tmp"
            torch.save(t, tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dst)
            index[rel] = key
            made += 1
        twin_of[p] = dst
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f)
    msg = f".pt twins in {pt_dir}: {made} written ({time.perf_counter() - t0:.1f} s, outside any clock), {len(files) - made} reused"
    return twin_of, msg


# ---------------------------------------------------------------- runner


def run_one(name, make, files, dev, target, args, sync, expected):
    try:
        load, verify_bytes, describe = make()
    except ImportError as e:
        return skipped(name, target, f"missing module: {e.name or e}")
    except LookupError as e:
        return skipped(name, target, str(e))
    except Exception as e:  # noqa: BLE001 - a baseline that cannot start is reported, not fatal
        return skipped(name, target, f"{type(e).__name__}: {e}")
    extra = {}
    read_paths = [p for p, _ in files] if name != "torch:load-mmap" else [args.twin_of[p] for p, _ in files]
    # One load of the first file before the clock: imports, lazy CUDA kernels and first allocations are not
    # what is measured (the cold drop below comes after it).
    try:
        obj, _ = load(files[0][0])
        sync()
        del obj
    except Exception as e:  # noqa: BLE001
        return result(name, target, 0, 0, 0.0, [], describe, error=f"{files[0][0]}: {type(e).__name__}: {e}")
    if args.cold:
        why_not = cold_state(read_paths)
        extra["cold"] = f"not dropped: {why_not}" if why_not else drop_cache(read_paths)
    lat, verified, nbytes, hashing = [], 0, 0, 0.0
    start = time.perf_counter()
    for p, _ in files:
        t0 = time.perf_counter()
        try:
            obj, n = load(p)
            sync()
        except Exception as e:  # noqa: BLE001
            return result(name, target, len(lat), nbytes, time.perf_counter() - start - hashing, lat, describe, error=f"{p}: {type(e).__name__}: {e}", **extra)
        t1 = time.perf_counter()
        lat.append((t1 - t0) * 1000.0)
        nbytes += n
        if args.verify:
            want = expected.get(p)
            if want is None:
                want = sha256_of_file(p)
            h = hashlib.sha256()
            for b in verify_bytes(obj, p):
                h.update(b)
            if h.hexdigest() != want:
                return result(name, target, len(lat), nbytes, t1 - start - hashing, lat, describe, error=f"{p}: --verify: sha256 {h.hexdigest()} of the loaded bytes, expected {want}", **extra)
            verified += 1
            hashing += time.perf_counter() - t1
        del obj
    seconds = time.perf_counter() - start - hashing
    if args.verify:
        extra["verified"] = verified
    return result(name, target, len(files), nbytes, seconds, lat, describe, **extra)


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch file-loading baselines, printed as homi load --json lines")
    ap.add_argument("inputs", nargs="+", help="files, directories, or manifest.json")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--cold", action="store_true", help="drop the files from the page cache before each baseline")
    ap.add_argument("--verify", action="store_true", help="sha256 of the loaded bytes vs the manifest (or the file)")
    ap.add_argument("--baselines", default=",".join(BASELINES), help=f"comma-separated subset of {','.join(BASELINES)}")
    ap.add_argument("--pt-dir", default=None, help="where the .pt twins go (default: a sibling directory, <dataset>.pt-twins)")
    args = ap.parse_args(argv)
    chosen = [b.strip() for b in args.baselines.split(",") if b.strip()]
    for b in chosen:
        if b not in BASELINES:
            ap.error(f"unknown baseline {b!r} (one of {', '.join(BASELINES)})")
    try:
        files = expand(args.inputs)
    except (OSError, ValueError, KeyError) as e:
        ap.error(str(e))
    if not files:
        ap.error("no files to load")
    expected = {p: s for p, s in files if s}
    target = "gpu" if args.device == "cuda" else "host"

    fatal = None
    try:
        import torch
    except ImportError:
        fatal = "torch is not installed (import torch failed): every baseline skipped"
    if fatal is None and args.device == "cuda" and not torch.cuda.is_available():
        fatal = "--device cuda: torch.cuda.is_available() is False: every baseline skipped"
    if fatal is not None:
        for b in chosen:
            print(json.dumps(skipped(b, target, fatal)), flush=True)
        print(f"torch_baselines: {fatal}", file=sys.stderr, flush=True)
        return 3

    if args.device == "cuda":
        torch.empty(1, device="cuda")  # the CUDA context, before any clock
        torch.cuda.synchronize()

        def sync():
            torch.cuda.synchronize()

    else:

        def sync():
            pass

    args.twin_of = {}
    makers = {
        "torch:safetensors": lambda: baseline_safetensors(args.device),
        "torch:load-mmap": lambda: baseline_load_mmap(args.device, args.twin_of),
        "numpy:fromfile": lambda: baseline_numpy(args.device),
        "python:read": lambda: baseline_read(args.device),
        "torch:gds": lambda: baseline_gds(args.device),
    }
    for b in chosen:
        if b == "torch:load-mmap":
            try:
                args.twin_of, msg = make_twins(files, args.pt_dir)
                note(msg)
            except Exception as e:  # noqa: BLE001
                print(json.dumps(skipped(b, target, f".pt twins could not be made: {type(e).__name__}: {e}")), flush=True)
                continue
        r = run_one(b, makers[b], files, args.device, target, args, sync, expected)
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
