// HOMI device-side NVMe queue library: GPU threads build submission entries, claim slots, ring the SQ tail
// doorbell, poll completion phase tags and ring the CQ head doorbell on queue pairs the host provisioned.
//
// Memory rules (measured on the H200: no host-native atomics over PCIe):
//  - queue memory (SQ, CQ) and doorbells may live in host memory registered with the GPU (an embedded
//    controller's memfds) or in GPU memory (the GPU-resident controller). They only ever see plain stores and
//    loads from GPU threads: SQE stores, a release store of a doorbell, acquire loads of CQE status words.
//  - every lock, ticket, turn and completion mark lives in GPU memory (HomiQueueState), where atomics are native.
//  - every wait has a deadline in clock64() cycles: a stalled controller gives a timeout, never a hung kernel.
//
// The layouts below are mirrored by src/gpu/layout.ts (offsets checked by a CI test against this header's
// HOMI_LAYOUT comments).
#pragma once
#if defined(__CUDACC_RTC__)
// NVRTC (npm run build:gpu without nvcc) has no host headers: the two fixed-width types used here.
typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#else
#include <stdint.h>
#endif

// ---- NVMe constants (NVM Express Base 2.x, NVM Command Set) ----
#define HOMI_SQE_BYTES 64u
#define HOMI_CQE_BYTES 16u
#define HOMI_OPC_WRITE 0x01u
#define HOMI_OPC_READ 0x02u
#define HOMI_CQE_DW3_PHASE_SHIFT 16u
#define HOMI_CQE_DW3_STATUS_SHIFT 17u
#define HOMI_CQE_CID_MASK 0xffffu
#define HOMI_SQE_CID_SHIFT 16u

// ---- queue flags ----
// The queue and doorbells live in GPU memory: GPU-scope ordering suffices (the GPU-resident controller).
#define HOMI_QF_GPU_SCOPE 1u

// Per-queue state kept in GPU memory (zeroed by the host before the first launch, kept across launches).
// HOMI_LAYOUT HomiQueueState 64
struct HomiQueueState {
  uint32_t ticket;       // 0  next ticket (ticket mode)
  uint32_t sq_lock;      // 4  held by the thread moving the SQ tail
  uint32_t tail_ticket;  // 8  tickets published to the controller (the SQ tail, unwrapped)
  uint32_t cq_lock;      // 12 held by the thread reaping completions
  uint32_t cq_head;      // 16 completions consumed (the CQ head, unwrapped)
  uint32_t completed;    // 20 commands whose completion its thread has seen
  uint32_t broken;       // 24 nonzero once a wait timed out: the queue is abandoned
  uint32_t pad[9];       // 28
};

// One queue pair as GPU threads see it. All pointers are device pointers (for host memory registered with
// CU_MEMHOSTREGISTER_DEVICEMAP, equal to the host address).
// HOMI_LAYOUT HomiGpuQueue 128
struct HomiGpuQueue {
  uint64_t sq;          // 0   SQ entries (64 B each)
  uint64_t cq;          // 8   CQ entries (16 B each)
  uint64_t sq_db;       // 16  SQ tail doorbell (32-bit)
  uint64_t cq_db;       // 24  CQ head doorbell (32-bit)
  uint64_t data;        // 32  data region as GPU threads address it
  uint64_t data_bus;    // 40  the controller's address of the data region's first byte
  uint64_t prp2;        // 48  per-slot PRP2 values (uint64 x entries, GPU memory), or 0 when a slot fits 2 pages
  uint64_t state;       // 56  HomiQueueState (GPU memory)
  uint64_t turn;        // 64  uint32 x entries (GPU memory): generation allowed into each slot (ticket mode)
  uint64_t filled;      // 72  uint32 x entries (GPU memory): generation + 1 of the slot's filled entry
  uint64_t done;        // 80  uint32 x entries (GPU memory): generation + 1 of the slot's completed entry
  uint64_t status;      // 88  uint32 x entries (GPU memory): status field of the slot's completion
  uint32_t entries;     // 96  SQ and CQ entries
  uint32_t nsid;        // 100
  uint32_t lba_shift;   // 104 log2 of the LBA data size
  uint32_t slot_bytes;  // 108 data bytes per slot (slot i at data + i * slot_bytes)
  uint32_t page_bytes;  // 112 controller memory page size (PRP entry granularity)
  uint32_t flags;       // 116 HOMI_QF_*
  uint32_t pad[2];      // 120
};

// Results of a launch (GPU memory, accumulated with atomics).
#define HOMI_LAT_SUB_BITS 4u
#define HOMI_LAT_BUCKETS 1024u
// HOMI_LAYOUT HomiGpuResult 4160
struct HomiGpuResult {
  unsigned long long ios;         // 0    completed commands (any status)
  unsigned long long errors;      // 8    completions with a non-zero status
  unsigned long long timeouts;    // 16   waits that ran past the deadline
  unsigned long long mismatches;  // 24   verified reads whose bytes differ from the pattern
  unsigned long long bytes;       // 32   bytes moved by successful commands
  unsigned long long lat_sum;     // 40   sum of latencies (cycles)
  unsigned long long lat_max;     // 48   largest latency (cycles)
  uint32_t first_status;          // 56   status field of the first failed completion
  uint32_t first_mismatch_lba;    // 60   low 32 bits of the first mismatching LBA
  uint32_t hist[HOMI_LAT_BUCKETS];// 64   log-linear latency histogram (cycles)
};

// The work of a launch.
#define HOMI_JOB_RANDOM 1u
#define HOMI_JOB_VERIFY 2u
// HOMI_LAYOUT HomiGpuJob 80
struct HomiGpuJob {
  uint64_t queues;          // 0  HomiGpuQueue[nqueues] (GPU memory)
  uint64_t result;          // 8  HomiGpuResult (GPU memory)
  uint64_t lba_base;        // 16 first LBA of the region
  uint64_t lba_span;        // 24 LBAs in the region (a multiple of blocks_per_io)
  uint64_t seed;            // 32 pattern and random seed
  uint64_t timeout_cycles;  // 40 deadline of one wait, clock64 cycles
  uint32_t nqueues;         // 48
  uint32_t ios_per_thread;  // 52
  uint32_t blocks_per_io;   // 56
  uint32_t read_percent;    // 60 0..100: share of reads (100 = all reads, 0 = all writes)
  uint32_t flags;           // 64 HOMI_JOB_*
  uint32_t threads_per_queue; // 68 ticket mode: how many threads share a queue (0 = all threads over nqueues)
  uint32_t pad[2];          // 72
};

// A file load (homi load --path gpu): one read of `nlb` blocks at `slba`, whose first `bytes` bytes the block
// copies to `dst` (GPU memory, or host memory registered with the GPU). The kernel fills status and the
// %globaltimer times; the host set status to HOMI_LIST_NOT_RUN before the launch.
#define HOMI_LIST_NOT_RUN 0xffffffffu
#define HOMI_LIST_TIMEOUT 0xfffffffeu
// HOMI_LAYOUT HomiListCmd 48
struct HomiListCmd {
  uint64_t slba;      // 0
  uint64_t dst;       // 8   where the bytes go
  uint64_t start_ns;  // 16  %globaltimer when the command was submitted
  uint64_t end_ns;    // 24  %globaltimer when its bytes had been copied
  uint32_t nlb;       // 32  blocks (1 .. slot_bytes >> lba_shift)
  uint32_t bytes;     // 36  bytes kept (<= nlb << lba_shift)
  uint32_t file;      // 40  the host's file index (not read by the kernel)
  uint32_t status;    // 44  completion status field, HOMI_LIST_TIMEOUT, or HOMI_LIST_NOT_RUN
};
// HOMI_LAYOUT HomiListJob 48
struct HomiListJob {
  uint64_t queues;          // 0  HomiGpuQueue[nqueues] (GPU memory)
  uint64_t result;          // 8  HomiGpuResult (GPU memory)
  uint64_t cmds;            // 16 HomiListCmd[ncmds] (GPU memory)
  uint64_t timeout_cycles;  // 24 deadline of one wait, clock64 cycles
  uint32_t nqueues;         // 32
  uint32_t ncmds;           // 36
  uint32_t pad[2];          // 40
};

// ---- memory access helpers ----
__device__ __forceinline__ void homi_store_release_sys(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ void homi_store_release_gpu(uint32_t* p, uint32_t v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t homi_load_acquire_sys(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t homi_load_acquire_gpu(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t homi_load_relaxed_sys(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.relaxed.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t homi_load_relaxed_gpu(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t homi_load_volatile(const uint32_t* p) { return *(volatile const uint32_t*)p; }
__device__ __forceinline__ void homi_store_volatile(uint32_t* p, uint32_t v) { *(volatile uint32_t*)p = v; }

__device__ __forceinline__ void homi_ring(const HomiGpuQueue& q, uint64_t db, uint32_t value) {
  if (q.flags & HOMI_QF_GPU_SCOPE) {
    __threadfence();
    homi_store_release_gpu((uint32_t*)db, value);
  } else {
    __threadfence_system();
    homi_store_release_sys((uint32_t*)db, value);
  }
}
__device__ __forceinline__ uint32_t homi_cqe_dw3(const HomiGpuQueue& q, uint32_t index) {
  const uint32_t* p = (const uint32_t*)(q.cq + (uint64_t)index * HOMI_CQE_BYTES + 12);
  return (q.flags & HOMI_QF_GPU_SCOPE) ? homi_load_acquire_gpu(p) : homi_load_acquire_sys(p);
}
// The status word of a CQE without ordering: loads of several entries overlap (one PCIe round trip for a batch
// instead of one per entry); the caller fences (homi_acquire_fence) before it reads what they publish.
__device__ __forceinline__ uint32_t homi_cqe_dw3_relaxed(const HomiGpuQueue& q, uint32_t index) {
  const uint32_t* p = (const uint32_t*)(q.cq + (uint64_t)index * HOMI_CQE_BYTES + 12);
  return (q.flags & HOMI_QF_GPU_SCOPE) ? homi_load_relaxed_gpu(p) : homi_load_relaxed_sys(p);
}
__device__ __forceinline__ void homi_acquire_fence(const HomiGpuQueue& q) {
  if (q.flags & HOMI_QF_GPU_SCOPE) asm volatile("fence.acq_rel.gpu;" ::: "memory");
  else asm volatile("fence.acq_rel.sys;" ::: "memory");
}
// Expected phase tag of the completion at unwrapped CQ position `pos`: 1 on the first pass, flipping each wrap.
__device__ __forceinline__ uint32_t homi_expected_phase(uint32_t pos, uint32_t entries) { return ((pos / entries) & 1u) ^ 1u; }

// ---- submission entries ----
__device__ __forceinline__ void homi_write_sqe(const HomiGpuQueue& q, uint32_t slot, uint32_t opcode, uint32_t cid, uint64_t slba, uint32_t nblocks) {
  uint64_t bytes = (uint64_t)nblocks << q.lba_shift;
  uint64_t prp1 = q.data_bus + (uint64_t)slot * q.slot_bytes;
  uint64_t prp2 = 0;
  if (bytes > q.page_bytes) {
    if (bytes <= 2ull * q.page_bytes) prp2 = prp1 + q.page_bytes;
    else prp2 = ((const uint64_t*)q.prp2)[slot];
  }
  uint4* e = (uint4*)(q.sq + (uint64_t)slot * HOMI_SQE_BYTES);
  uint4 w0 = make_uint4(opcode | (cid << HOMI_SQE_CID_SHIFT), q.nsid, 0u, 0u);
  uint4 w1 = make_uint4(0u, 0u, (uint32_t)prp1, (uint32_t)(prp1 >> 32));
  uint4 w2 = make_uint4((uint32_t)prp2, (uint32_t)(prp2 >> 32), (uint32_t)slba, (uint32_t)(slba >> 32));
  uint4 w3 = make_uint4(nblocks - 1u, 0u, 0u, 0u);
  e[0] = w0;
  e[1] = w1;
  e[2] = w2;
  e[3] = w3;
}

// ---- data pattern (the same function as src/gpu/pattern.ts) ----
__device__ __forceinline__ uint64_t homi_mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}
// The 64-bit word at byte `offset` (a multiple of 8) of LBA `lba`.
__device__ __forceinline__ uint64_t homi_pattern_word(uint64_t seed, uint64_t lba, uint32_t offset) { return homi_mix64(seed ^ (lba * 0x9e3779b97f4a7c15ull) ^ (uint64_t)offset); }

__device__ void homi_fill(uint64_t* buf, uint64_t seed, uint64_t slba, uint32_t nblocks, uint32_t lba_shift) {
  uint32_t words = (nblocks << lba_shift) >> 3;
  uint32_t per = (1u << lba_shift) >> 3;
  for (uint32_t i = 0; i < words; i++) buf[i] = homi_pattern_word(seed, slba + i / per, (i % per) << 3);
}
// Returns the first mismatching LBA + 1, or 0. Loads bypass L1 (ld.cv): the bytes were written by the
// controller (CPU stores, the copy engine, or another SM), and an earlier command may have left this slot's
// old contents in this SM's cache.
__device__ uint64_t homi_check(const uint64_t* buf, uint64_t seed, uint64_t slba, uint32_t nblocks, uint32_t lba_shift) {
  uint32_t words = (nblocks << lba_shift) >> 3;
  uint32_t per = (1u << lba_shift) >> 3;
  for (uint32_t i = 0; i < words; i++) {
    if (__ldcv((const unsigned long long*)buf + i) != homi_pattern_word(seed, slba + i / per, (i % per) << 3)) return slba + i / per + 1;
  }
  return 0;
}

// ---- per-thread random numbers ----
__device__ __forceinline__ uint64_t homi_next(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// ---- results ----
__device__ __forceinline__ uint32_t homi_lat_bucket(uint64_t cycles) {
  if (cycles < (1u << HOMI_LAT_SUB_BITS)) return (uint32_t)cycles;
  uint32_t msb = 63u - __clzll(cycles);
  uint32_t sub = (uint32_t)(cycles >> (msb - HOMI_LAT_SUB_BITS)) & ((1u << HOMI_LAT_SUB_BITS) - 1u);
  uint32_t b = ((msb - HOMI_LAT_SUB_BITS + 1u) << HOMI_LAT_SUB_BITS) + sub;
  return b < HOMI_LAT_BUCKETS ? b : HOMI_LAT_BUCKETS - 1u;
}
__device__ void homi_record(HomiGpuResult* r, uint32_t status, uint64_t bytes, uint64_t cycles) {
  atomicAdd(&r->ios, 1ull);
  if (status != 0) {
    if (atomicAdd(&r->errors, 1ull) == 0) r->first_status = status;
  } else {
    atomicAdd(&r->bytes, bytes);
  }
  atomicAdd(&r->lat_sum, cycles);
  atomicMax(&r->lat_max, cycles);
  atomicAdd(&r->hist[homi_lat_bucket(cycles)], 1u);
}
__device__ void homi_mismatch(HomiGpuResult* r, uint64_t lba) {
  if (atomicAdd(&r->mismatches, 1ull) == 0) r->first_mismatch_lba = (uint32_t)lba;
}

// The command of the i-th I/O of a thread: opcode and starting LBA.
__device__ __forceinline__ void homi_pick(const HomiGpuJob& job, uint64_t& rng, uint64_t seq_index, uint32_t& opcode, uint64_t& slba) {
  uint64_t units = job.lba_span / job.blocks_per_io;
  uint64_t unit = (job.flags & HOMI_JOB_RANDOM) ? homi_next(rng) % units : seq_index % units;
  slba = job.lba_base + unit * job.blocks_per_io;
  if (job.read_percent >= 100u) opcode = HOMI_OPC_READ;
  else if (job.read_percent == 0u) opcode = HOMI_OPC_WRITE;
  else opcode = (uint32_t)(homi_next(rng) % 100u) < job.read_percent ? HOMI_OPC_READ : HOMI_OPC_WRITE;
}
