/*
 * A fake libcuda.so.1 for the emulated P2P tests (a test double, not a driver): "device memory" is host memory
 * from malloc, a stream is a queue of copies run when an event after them is queried (the first query of each
 * recorded event answers CUDA_ERROR_NOT_READY) or the stream is synchronized. It checks what the CUDA copier
 * (src/emu/cuda-copier.ts) must get right: async copies only from registered host memory, only into allocated
 * device memory, a context made current before use, everything released at the end.
 *
 * The test compiles this file together with generated stubs (CUDA_ERROR_NOT_SUPPORTED) for every other function
 * src/sys/cuda.ts binds, and points HOMI_LIBCUDA at the result. fake_* functions are the test's controls.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

typedef unsigned long long u64;
#define OK 0
#define E_INVALID_VALUE 1
#define E_NOT_INITIALIZED 3
#define E_INVALID_CONTEXT 201
#define E_INVALID_HANDLE 400
#define E_NOT_READY 600
#define E_ILLEGAL_ADDRESS 700
#define E_HOST_MEMORY_ALREADY_REGISTERED 712
#define E_HOST_MEMORY_NOT_REGISTERED 713

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static int ctx_refs;
static int fail_copies;
static __thread void *current_ctx;
static long stat_htod_async, stat_dtoh_async, stat_bytes_htod, stat_events_recorded, stat_not_ready;

#define MAX_RANGES 64
struct range { u64 base, size; };
static struct range allocs[MAX_RANGES], registered[MAX_RANGES];

static int add_range(struct range *t, u64 base, u64 size) {
  for (int i = 0; i < MAX_RANGES; i++) if (t[i].size == 0) { t[i].base = base; t[i].size = size; return 1; }
  return 0;
}
static int find_range(struct range *t, u64 p, u64 len) {
  for (int i = 0; i < MAX_RANGES; i++) if (t[i].size != 0 && p >= t[i].base && p + len <= t[i].base + t[i].size) return i;
  return -1;
}
static int count_ranges(struct range *t) {
  int n = 0;
  for (int i = 0; i < MAX_RANGES; i++) n += t[i].size != 0;
  return n;
}

#define MAX_OPS 4096
struct op { int kind; u64 dst, src, bytes; void *event; }; /* kind 0: copy, 1: event record */
struct stream { struct op ops[MAX_OPS]; int head, tail; int flags; };
struct event { int recorded, complete, polls; struct stream *s; };
static int streams_alive, events_alive;
#define MAX_STREAMS 64
static struct stream *all_streams[MAX_STREAMS];

/* Run the stream's operations up to (and including) `until`'s record, or all when until is NULL. */
static int run_stream(struct stream *s, struct event *until) {
  while (s->head != s->tail) {
    struct op *o = &s->ops[s->head];
    if (o->kind == 0) {
      if (fail_copies) return E_ILLEGAL_ADDRESS;
      memcpy((void *)(uintptr_t)o->dst, (void *)(uintptr_t)o->src, o->bytes);
    } else {
      ((struct event *)o->event)->complete = 1;
    }
    s->head = (s->head + 1) % MAX_OPS;
    if (o->kind == 1 && o->event == until) return OK;
  }
  return OK;
}

int cuInit(unsigned flags) { (void)flags; initialized = 1; return OK; }
int cuDeviceGet(int *dev, int ordinal) {
  if (!initialized) return E_NOT_INITIALIZED;
  if (ordinal != 0) return 101; /* CUDA_ERROR_INVALID_DEVICE */
  *dev = 0;
  return OK;
}
int cuDevicePrimaryCtxRetain(void **ctx, int dev) { (void)dev; ctx_refs++; *ctx = (void *)0x1c7c; return OK; }
int cuDevicePrimaryCtxRelease_v2(int dev) { (void)dev; if (ctx_refs <= 0) return E_INVALID_CONTEXT; ctx_refs--; return OK; }
int cuCtxSetCurrent(void *ctx) { current_ctx = ctx; return OK; }
/* What GpuDevice.open asks of a device (homi load's GPU sink runs on this fake too). */
int cuDriverGetVersion(int *v) { *v = 13000; return OK; }
int cuDeviceGetCount(int *n) { *n = initialized ? 1 : 0; return initialized ? OK : E_NOT_INITIALIZED; }
int cuDeviceGetName(char *name, int len, int dev) { (void)dev; strncpy(name, "Fake GPU (test double)", (size_t)len); if (len > 0) name[len - 1] = 0; return OK; }
int cuDeviceGetAttribute(int *v, int attrib, int dev) { (void)dev; *v = attrib == 13 ? 1000000 : attrib == 16 ? 1 : attrib == 75 ? 9 : 0; return OK; }
int cuDeviceTotalMem_v2(u64 *bytes, int dev) { (void)dev; *bytes = 1ull << 34; return OK; }

int cuMemAlloc_v2(u64 *dptr, size_t bytes) {
  void *p = aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (p == NULL) return 2;
  memset(p, 0, bytes);
  pthread_mutex_lock(&mu);
  add_range(allocs, (u64)(uintptr_t)p, bytes);
  pthread_mutex_unlock(&mu);
  *dptr = (u64)(uintptr_t)p;
  return OK;
}
int cuMemFree_v2(u64 dptr) {
  pthread_mutex_lock(&mu);
  int i = find_range(allocs, dptr, 0);
  if (i >= 0 && allocs[i].base == dptr) allocs[i].size = 0; else i = -1;
  pthread_mutex_unlock(&mu);
  if (i < 0) return E_INVALID_VALUE;
  free((void *)(uintptr_t)dptr);
  return OK;
}
int cuMemGetAddressRange_v2(u64 *base, size_t *size, u64 dptr) {
  int i = find_range(allocs, dptr, 0);
  if (i < 0) return E_INVALID_VALUE;
  *base = allocs[i].base;
  *size = allocs[i].size;
  return OK;
}
int cuMemHostRegister_v2(u64 p, size_t bytes, unsigned flags) {
  if (current_ctx == NULL) return E_INVALID_CONTEXT;
  if (flags != 0x01 && flags != 0x03) return E_INVALID_VALUE; /* PORTABLE (the copier), or with DEVICEMAP (GpuDevice) */
  if (find_range(registered, p, 1) >= 0) return E_HOST_MEMORY_ALREADY_REGISTERED;
  add_range(registered, p, bytes);
  return OK;
}
int cuMemHostUnregister(u64 p) {
  int i = find_range(registered, p, 0);
  if (i < 0 || registered[i].base != p) return E_HOST_MEMORY_NOT_REGISTERED;
  registered[i].size = 0;
  return OK;
}
int cuMemHostGetDevicePointer_v2(u64 *dptr, u64 p, unsigned flags) {
  (void)flags;
  if (find_range(registered, p, 1) < 0) return E_INVALID_VALUE;
  *dptr = p;
  return OK;
}
int cuMemsetD8_v2(u64 dptr, uint8_t value, size_t bytes) {
  if (find_range(allocs, dptr, bytes) < 0) return E_INVALID_VALUE;
  memset((void *)(uintptr_t)dptr, value, bytes);
  return OK;
}
/* Synchronous copies: the test's own access to "device memory". */
int cuMemcpyHtoD_v2(u64 dst, const uint8_t *src, size_t bytes) {
  if (find_range(allocs, dst, bytes) < 0) return E_INVALID_VALUE;
  memcpy((void *)(uintptr_t)dst, src, bytes);
  return OK;
}
int cuMemcpyDtoH_v2(uint8_t *dst, u64 src, size_t bytes) {
  if (find_range(allocs, src, bytes) < 0) return E_INVALID_VALUE;
  memcpy(dst, (void *)(uintptr_t)src, bytes);
  return OK;
}
static int enqueue_copy(struct stream *s, u64 dst, u64 src, u64 bytes) {
  if (current_ctx == NULL) return E_INVALID_CONTEXT;
  if ((s->tail + 1) % MAX_OPS == s->head) run_stream(s, NULL);
  s->ops[s->tail] = (struct op){ 0, dst, src, bytes, NULL };
  s->tail = (s->tail + 1) % MAX_OPS;
  return OK;
}
int cuMemcpyHtoDAsync_v2(u64 dst, u64 src, size_t bytes, void *stream) {
  if (stream == NULL) return E_INVALID_HANDLE;
  if (find_range(registered, src, bytes) < 0) return E_INVALID_VALUE; /* async needs page-locked host memory */
  if (find_range(allocs, dst, bytes) < 0) return E_INVALID_VALUE;
  stat_htod_async++;
  stat_bytes_htod += bytes;
  return enqueue_copy(stream, dst, src, bytes);
}
int cuMemcpyDtoHAsync_v2(u64 dst, u64 src, size_t bytes, void *stream) {
  if (stream == NULL) return E_INVALID_HANDLE;
  if (find_range(registered, dst, bytes) < 0) return E_INVALID_VALUE;
  if (find_range(allocs, src, bytes) < 0) return E_INVALID_VALUE;
  stat_dtoh_async++;
  return enqueue_copy(stream, dst, src, bytes);
}
int cuStreamCreate(void **stream, unsigned flags) {
  if (current_ctx == NULL) return E_INVALID_CONTEXT;
  struct stream *s = calloc(1, sizeof *s);
  s->flags = flags;
  *stream = s;
  streams_alive++;
  for (int i = 0; i < MAX_STREAMS; i++) if (all_streams[i] == NULL) { all_streams[i] = s; break; }
  return OK;
}
int cuStreamDestroy_v2(void *stream) {
  for (int i = 0; i < MAX_STREAMS; i++) if (all_streams[i] == stream) all_streams[i] = NULL;
  free(stream);
  streams_alive--;
  return OK;
}
/* The context's work: every stream's queued copies. */
int cuCtxSynchronize(void) {
  for (int i = 0; i < MAX_STREAMS; i++) if (all_streams[i] != NULL) { int r = run_stream(all_streams[i], NULL); if (r != OK) return r; }
  return OK;
}
int cuStreamSynchronize(void *stream) { return run_stream(stream, NULL); }
int cuEventCreate(void **event, unsigned flags) {
  (void)flags;
  if (current_ctx == NULL) return E_INVALID_CONTEXT;
  *event = calloc(1, sizeof(struct event));
  events_alive++;
  return OK;
}
int cuEventDestroy_v2(void *event) { free(event); events_alive--; return OK; }
int cuEventRecord(void *event, void *stream) {
  struct event *e = event;
  struct stream *s = stream;
  e->recorded = 1;
  e->complete = 0;
  e->polls = 0;
  e->s = s;
  if ((s->tail + 1) % MAX_OPS == s->head) run_stream(s, NULL);
  s->ops[s->tail] = (struct op){ 1, 0, 0, 0, event };
  s->tail = (s->tail + 1) % MAX_OPS;
  stat_events_recorded++;
  return OK;
}
int cuEventQuery(void *event) {
  struct event *e = event;
  if (e->complete) return OK;
  if (e->polls++ == 0) {
    stat_not_ready++;
    return E_NOT_READY;
  }
  if (!e->recorded) return OK;
  int r = run_stream(e->s, e);
  if (r != OK) return r;
  return e->complete ? OK : E_NOT_READY;
}
int cuGetErrorName(int error, const char **name) {
  switch (error) {
    case E_INVALID_VALUE: *name = "CUDA_ERROR_INVALID_VALUE"; break;
    case E_ILLEGAL_ADDRESS: *name = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
    case E_INVALID_CONTEXT: *name = "CUDA_ERROR_INVALID_CONTEXT"; break;
    case 801: *name = "CUDA_ERROR_NOT_SUPPORTED"; break;
    default: *name = "CUDA_ERROR_UNKNOWN"; break;
  }
  return OK;
}
int cuGetErrorString(int error, const char **text) {
  *text = error == E_ILLEGAL_ADDRESS ? "an illegal memory access was encountered (fake libcuda)" : "fake libcuda error";
  return OK;
}

/* ---- the test's controls ---- */
void fake_set_fail_copies(int on) { fail_copies = on; }
/* 0 async HtoD copies, 1 async DtoH copies, 2 bytes HtoD, 3 events recorded, 4 NOT_READY answers, 5 primary context
 * references, 6 registered host ranges, 7 streams alive, 8 events alive, 9 device allocations */
long fake_stat(int which) {
  switch (which) {
    case 0: return stat_htod_async;
    case 1: return stat_dtoh_async;
    case 2: return stat_bytes_htod;
    case 3: return stat_events_recorded;
    case 4: return stat_not_ready;
    case 5: return ctx_refs;
    case 6: return count_ranges(registered);
    case 7: return streams_alive;
    case 8: return events_alive;
    case 9: return count_ranges(allocs);
  }
  return -1;
}
