// HOMI GPU initiators: CUDA kernels that drive NVMe queue pairs themselves (device-initiated I/O).
//
// Two submission shapes over the same queue library (nvme_queue.cuh):
//  - homi_block_io: one thread block per queue, one slot per thread (uPCIe's shape). Every round each thread
//    writes the entry of slot (tail + threadIdx.x), thread 0 fences and rings the SQ tail once for the whole
//    block, each thread waits on the CQ position (head + threadIdx.x), the completions are matched to their
//    threads by command id, and thread 0 rings the CQ head once.
//  - homi_ticket_io: any grid; each warp shares one queue (warp w -> queue w % nqueues, warps numbered
//    block by block, a partial warp counting as one: a grid of one-thread blocks gives block b queue
//    b % nqueues). A thread takes a ticket
//    (one atomicAdd per warp, lanes ranked by popc), waits for its slot's turn and a free SQ entry, fills it,
//    marks it, and whichever thread holds the queue's SQ lock moves the tail over contiguous marked entries and
//    rings (BaM's shape). Completions are reaped by whichever waiting thread holds the CQ lock.
//  - homi_list_io: a given list of reads (homi load --path gpu: a file's extents, coalesced by the host), block
//    shape: block b takes its rounds of blockDim.x commands from the list, reads each into its slot, and the
//    whole block then copies every good slot to the command's destination with 16-byte loads and stores.
#include "nvme_queue.cuh"

#define HOMI_MAX_BLOCK 1024u
// Status field given to a completion whose command id is not one this block submitted (a malformed CQE).
#define HOMI_STATUS_BAD_CID 0x7fffu

__device__ __forceinline__ bool homi_past(uint64_t deadline) { return (uint64_t)clock64() > deadline; }
// Back-off between polls of a contended word (ns): spinning threads leave issue slots and the L2 to the
// thread that holds the lock.
#define HOMI_BACKOFF_NS 64u
// Test, then test-and-set: a thread only tries the atomic when the lock looks free.
__device__ __forceinline__ bool homi_try_lock(uint32_t* lock) { return homi_load_volatile(lock) == 0u && atomicCAS(lock, 0u, 1u) == 0u; }

extern "C" __global__ void __launch_bounds__(1024) homi_block_io(HomiGpuJob job) {
  __shared__ uint32_t s_status[HOMI_MAX_BLOCK];
  __shared__ unsigned long long s_end[HOMI_MAX_BLOCK];
  __shared__ uint32_t s_tail, s_head, s_broken;
  const uint32_t tid = threadIdx.x;
  const uint32_t n = blockDim.x;
  const HomiGpuQueue q = ((const HomiGpuQueue*)job.queues)[blockIdx.x % job.nqueues];
  HomiQueueState* st = (HomiQueueState*)q.state;
  HomiGpuResult* res = (HomiGpuResult*)job.result;
  const uint32_t E = q.entries;
  if (tid == 0) {
    s_tail = homi_load_volatile(&st->tail_ticket);
    s_head = homi_load_volatile(&st->cq_head);
    s_broken = homi_load_volatile(&st->broken);
  }
  __syncthreads();
  if (s_broken != 0u || n >= E) {
    if (tid == 0) atomicAdd(&res->timeouts, (unsigned long long)n * job.ios_per_thread);
    return;
  }
  uint64_t rng = homi_mix64(job.seed ^ ((uint64_t)(blockIdx.x * n + tid) << 20) ^ 0x5eedull) | 1ull;
  const uint64_t global = (uint64_t)blockIdx.x * n + tid;
  const uint64_t threads = (uint64_t)gridDim.x * n;
  for (uint32_t it = 0; it < job.ios_per_thread; it++) {
    const uint32_t tail = s_tail;
    const uint32_t slot = (tail + tid) % E;
    uint32_t opcode;
    uint64_t slba;
    homi_pick(job, rng, (uint64_t)it * threads + global, opcode, slba);
    uint64_t* buf = (uint64_t*)(q.data + (uint64_t)slot * q.slot_bytes);
    if (opcode == HOMI_OPC_WRITE && (job.flags & HOMI_JOB_VERIFY)) homi_fill(buf, job.seed, slba, job.blocks_per_io, q.lba_shift);
    homi_write_sqe(q, slot, opcode, slot, slba, job.blocks_per_io);
    s_status[tid] = HOMI_STATUS_BAD_CID;
    __syncthreads();
    if (tid == 0) homi_ring(q, q.sq_db, (tail + n) % E);
    const uint64_t start = clock64();
    const uint64_t deadline = start + job.timeout_cycles;
    const uint32_t pos = s_head + tid;
    const uint32_t want = homi_expected_phase(pos, E);
    uint32_t dw3 = 0;
    bool late = false;
    for (;;) {
      dw3 = homi_cqe_dw3(q, pos % E);
      if (((dw3 >> HOMI_CQE_DW3_PHASE_SHIFT) & 1u) == want) break;
      if (homi_past(deadline) || homi_load_volatile(&s_broken) != 0u) {
        late = true;
        break;
      }
    }
    if (late) {
      atomicExch(&s_broken, 1u);
    } else {
      const uint32_t owner = ((dw3 & HOMI_CQE_CID_MASK) + E - (tail % E)) % E;
      if (owner < n) {
        s_status[owner] = dw3 >> HOMI_CQE_DW3_STATUS_SHIFT;
        s_end[owner] = clock64();
      } else {
        atomicExch(&s_broken, 1u);
      }
    }
    __syncthreads();
    if (s_broken != 0u) {
      // Whatever this thread's command became, the queue is abandoned: count it as a timeout unless its
      // completion arrived.
      if (s_status[tid] == HOMI_STATUS_BAD_CID) atomicAdd(&res->timeouts, 1ull);
      if (tid == 0) homi_store_volatile(&st->broken, 1u);
      return;
    }
    const uint32_t status = s_status[tid];
    const uint64_t bytes = (uint64_t)job.blocks_per_io << q.lba_shift;
    if (status == 0u && opcode == HOMI_OPC_READ && (job.flags & HOMI_JOB_VERIFY)) {
      const uint64_t bad = homi_check(buf, job.seed, slba, job.blocks_per_io, q.lba_shift);
      if (bad != 0) homi_mismatch(res, bad - 1);
    }
    homi_record(res, status, bytes, s_end[tid] - start);
    __syncthreads();
    if (tid == 0) {
      s_head += n;
      s_tail += n;
      homi_ring(q, q.cq_db, s_head % E);
    }
    __syncthreads();
  }
  if (tid == 0) {
    homi_store_volatile(&st->tail_ticket, s_tail);
    homi_store_volatile(&st->cq_head, s_head);
    homi_store_volatile(&st->ticket, s_tail);
  }
}

// Reap every completion that has arrived (caller holds the CQ lock). The status words of HOMI_REAP_BATCH
// entries are loaded together (relaxed, overlapping round trips), then one acquire fence orders what follows
// (the payload reads of the threads woken) after them. Returns false on a malformed entry.
#define HOMI_REAP_BATCH 16u
__device__ bool homi_reap(const HomiGpuQueue& q, HomiQueueState* st) {
  const uint32_t E = q.entries;
  uint32_t* done = (uint32_t*)q.done;
  uint32_t* status = (uint32_t*)q.status;
  uint32_t h = homi_load_volatile(&st->cq_head);
  const uint32_t first = h;
  bool more = true;
  while (more && h - first < E) {
    uint32_t w[HOMI_REAP_BATCH];
#pragma unroll
    for (uint32_t k = 0; k < HOMI_REAP_BATCH; k++) w[k] = homi_cqe_dw3_relaxed(q, (h + k) % E);
    homi_acquire_fence(q);
    // the arrived prefix of the batch: statuses first, one fence, then the done marks (a fence per entry
    // would make the reaper, and so the whole queue, wait on one memory round trip per completion)
    uint32_t c = 0;
#pragma unroll
    for (uint32_t k = 0; k < HOMI_REAP_BATCH; k++) {
      if (c != k) break;
      if (((w[k] >> HOMI_CQE_DW3_PHASE_SHIFT) & 1u) != homi_expected_phase(h + k, E) || h + k - first >= E) break;
      const uint32_t cid = w[k] & HOMI_CQE_CID_MASK;
      if (cid >= E) return false;
      status[cid] = w[k] >> HOMI_CQE_DW3_STATUS_SHIFT;
      c++;
    }
    if (c == 0) break;
    __threadfence();
    // a slot's occupants complete one after another (the next takes the slot only after its predecessor saw
    // its completion), so the k-th completion of a slot is generation k - 1's: count, no load needed
#pragma unroll
    for (uint32_t k = 0; k < HOMI_REAP_BATCH; k++) {
      if (k < c) atomicAdd(&done[w[k] & HOMI_CQE_CID_MASK], 1u);
    }
    h += c;
    more = c == HOMI_REAP_BATCH;
  }
  if (h != first) {
    homi_store_volatile(&st->cq_head, h);
    homi_ring(q, q.cq_db, h % E);
  }
  return true;
}

// Move the SQ tail over contiguous filled entries and ring (caller holds the SQ lock). The marks are loaded
// HOMI_PUBLISH_BATCH at a time (independent loads, one L2 round trip per batch, not one per entry).
#define HOMI_PUBLISH_BATCH 16u
__device__ void homi_publish(const HomiGpuQueue& q, HomiQueueState* st) {
  const uint32_t E = q.entries;
  const uint32_t* filled = (const uint32_t*)q.filled;
  uint32_t tt = homi_load_volatile(&st->tail_ticket);
  const uint32_t first = tt;
  bool more = true;
  while (more && tt - first < E) {
    uint32_t m[HOMI_PUBLISH_BATCH];
#pragma unroll
    for (uint32_t k = 0; k < HOMI_PUBLISH_BATCH; k++) m[k] = homi_load_volatile(&filled[(tt + k) % E]);
#pragma unroll
    for (uint32_t k = 0; k < HOMI_PUBLISH_BATCH; k++) {
      if (!more) break;
      if (m[k] != (tt / E) + 1u || tt - first >= E) {
        more = false;
        break;
      }
      tt++;
    }
  }
  if (tt != first) {
    homi_ring(q, q.sq_db, tt % E);
    homi_store_volatile(&st->tail_ticket, tt);
  }
}

extern "C" __global__ void homi_ticket_io(HomiGpuJob job) {
  const uint64_t gtid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t lane = threadIdx.x & 31u;
  const uint64_t warp = (uint64_t)blockIdx.x * ((blockDim.x + 31u) >> 5) + (threadIdx.x >> 5);
  const HomiGpuQueue q = ((const HomiGpuQueue*)job.queues)[warp % job.nqueues];
  HomiQueueState* st = (HomiQueueState*)q.state;
  HomiGpuResult* res = (HomiGpuResult*)job.result;
  uint32_t* turn = (uint32_t*)q.turn;
  uint32_t* filled = (uint32_t*)q.filled;
  uint32_t* done = (uint32_t*)q.done;
  const uint32_t* status = (const uint32_t*)q.status;
  const uint32_t E = q.entries;
  const uint64_t threads = (uint64_t)gridDim.x * blockDim.x;
  uint64_t rng = homi_mix64(job.seed ^ (gtid << 20) ^ 0x71c4e7ull) | 1ull;
  for (uint32_t it = 0; it < job.ios_per_thread; it++) {
    if (homi_load_volatile(&st->broken) != 0u) {
      atomicAdd(&res->timeouts, (unsigned long long)(job.ios_per_thread - it));
      return;
    }
    // a ticket: one atomic per warp
    const uint32_t mask = __activemask();
    const uint32_t leader = __ffs(mask) - 1u;
    uint32_t base = 0;
    if (lane == leader) base = atomicAdd(&st->ticket, (uint32_t)__popc(mask));
    base = __shfl_sync(mask, base, leader);
    const uint32_t t = base + (uint32_t)__popc(mask & ((1u << lane) - 1u));
    const uint32_t slot = t % E;
    const uint32_t gen = t / E;
    const uint64_t start = clock64();
    const uint64_t deadline = start + job.timeout_cycles;
    bool late = false;
    // the slot's previous occupant completed, and fewer than E - 1 commands are outstanding (a full SQ)
    while (homi_load_volatile(&turn[slot]) != gen || t - homi_load_volatile(&st->completed) >= E - 1u) {
      if (homi_past(deadline) || homi_load_volatile(&st->broken) != 0u) {
        late = true;
        break;
      }
      __nanosleep(HOMI_BACKOFF_NS);
    }
    uint32_t opcode;
    uint64_t slba;
    homi_pick(job, rng, (uint64_t)it * threads + gtid, opcode, slba);
    uint64_t* buf = (uint64_t*)(q.data + (uint64_t)slot * q.slot_bytes);
    if (!late) {
      if (opcode == HOMI_OPC_WRITE && (job.flags & HOMI_JOB_VERIFY)) homi_fill(buf, job.seed, slba, job.blocks_per_io, q.lba_shift);
      homi_write_sqe(q, slot, opcode, slot, slba, job.blocks_per_io);
      if (q.flags & HOMI_QF_GPU_SCOPE) __threadfence();
      else __threadfence_system();
      homi_store_volatile(&filled[slot], gen + 1u);
      while (homi_load_volatile(&st->tail_ticket) - t - 1u >= 0x80000000u) {  // tail_ticket <= t
        if (homi_try_lock(&st->sq_lock)) {
          homi_publish(q, st);
          __threadfence();
          atomicExch(&st->sq_lock, 0u);
        } else {
          __nanosleep(HOMI_BACKOFF_NS);
        }
        if (homi_past(deadline) || homi_load_volatile(&st->broken) != 0u) {
          late = true;
          break;
        }
      }
    }
    while (!late && homi_load_volatile(&done[slot]) != gen + 1u) {
      if (homi_try_lock(&st->cq_lock)) {
        const bool ok = homi_reap(q, st);
        __threadfence();
        atomicExch(&st->cq_lock, 0u);
        if (!ok) {
          homi_store_volatile(&st->broken, 1u);
          late = true;
          break;
        }
      } else {
        __nanosleep(HOMI_BACKOFF_NS);
      }
      if (homi_past(deadline) || homi_load_volatile(&st->broken) != 0u) late = true;
    }
    if (late) {
      homi_store_volatile(&st->broken, 1u);
      atomicAdd(&res->timeouts, (unsigned long long)(job.ios_per_thread - it));
      return;
    }
    __threadfence();
    const uint32_t s = homi_load_volatile(&status[slot]);
    const uint64_t end = clock64();
    if (s == 0u && opcode == HOMI_OPC_READ && (job.flags & HOMI_JOB_VERIFY)) {
      const uint64_t bad = homi_check(buf, job.seed, slba, job.blocks_per_io, q.lba_shift);
      if (bad != 0) homi_mismatch(res, bad - 1);
    }
    homi_record(res, s, (uint64_t)job.blocks_per_io << q.lba_shift, end - start);
    atomicAdd(&st->completed, 1u);
    __threadfence();
    homi_store_volatile(&turn[slot], gen + 1u);
  }
}

__device__ __forceinline__ uint64_t homi_globaltimer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Copy `bytes` from a slot (written by the controller: loads bypass L1) to `dst`, with every thread of the block.
__device__ void homi_block_copy(uint8_t* dst, const uint8_t* src, uint32_t bytes) {
  const uint32_t tid = threadIdx.x;
  const uint32_t n = blockDim.x;
  const uint32_t vec = bytes / 16u;
  if ((((uint64_t)dst | (uint64_t)src) & 15u) == 0u) {
    for (uint32_t i = tid; i < vec; i += n) ((uint4*)dst)[i] = __ldcv((const uint4*)src + i);
  } else {
    for (uint32_t i = tid; i < vec * 16u; i += n) dst[i] = *(volatile const uint8_t*)(src + i);
  }
  for (uint32_t i = vec * 16u + tid; i < bytes; i += n) dst[i] = *(volatile const uint8_t*)(src + i);
}

extern "C" __global__ void __launch_bounds__(1024) homi_list_io(HomiListJob job) {
  __shared__ uint32_t s_status[HOMI_MAX_BLOCK];
  __shared__ uint32_t s_tail, s_head, s_broken;
  const uint32_t tid = threadIdx.x;
  const uint32_t n = blockDim.x;
  const HomiGpuQueue q = ((const HomiGpuQueue*)job.queues)[blockIdx.x % job.nqueues];
  HomiQueueState* st = (HomiQueueState*)q.state;
  HomiGpuResult* res = (HomiGpuResult*)job.result;
  HomiListCmd* cmds = (HomiListCmd*)job.cmds;
  const uint32_t E = q.entries;
  if (tid == 0) {
    s_tail = homi_load_volatile(&st->tail_ticket);
    s_head = homi_load_volatile(&st->cq_head);
    s_broken = homi_load_volatile(&st->broken);
  }
  __syncthreads();
  if (s_broken != 0u || n >= E) return;  // every command stays HOMI_LIST_NOT_RUN: the host reports it
  for (uint64_t base = (uint64_t)blockIdx.x * n; base < job.ncmds; base += (uint64_t)gridDim.x * n) {
    const uint32_t k = (uint32_t)min((uint64_t)n, job.ncmds - base);
    const uint32_t tail = s_tail;
    const uint32_t slot = (tail + tid) % E;
    const bool mine = tid < k;
    HomiListCmd* c = cmds + base + tid;
    uint32_t nlb = 0;
    if (mine) {
      nlb = c->nlb;
      c->start_ns = homi_globaltimer();
      homi_write_sqe(q, slot, HOMI_OPC_READ, slot, c->slba, nlb);
    }
    s_status[tid] = HOMI_STATUS_BAD_CID;
    __syncthreads();
    if (tid == 0) homi_ring(q, q.sq_db, (tail + k) % E);
    const uint64_t start = clock64();
    if (mine) {
      const uint64_t deadline = start + job.timeout_cycles;
      const uint32_t pos = s_head + tid;
      const uint32_t want = homi_expected_phase(pos, E);
      uint32_t dw3 = 0;
      bool late = false;
      for (;;) {
        dw3 = homi_cqe_dw3(q, pos % E);
        if (((dw3 >> HOMI_CQE_DW3_PHASE_SHIFT) & 1u) == want) break;
        if (homi_past(deadline) || homi_load_volatile(&s_broken) != 0u) {
          late = true;
          break;
        }
      }
      if (late) {
        atomicExch(&s_broken, 1u);
      } else {
        const uint32_t owner = ((dw3 & HOMI_CQE_CID_MASK) + E - (tail % E)) % E;
        if (owner < k) s_status[owner] = dw3 >> HOMI_CQE_DW3_STATUS_SHIFT;
        else atomicExch(&s_broken, 1u);
      }
    }
    __syncthreads();
    if (s_broken != 0u) {
      if (mine) {
        const uint32_t s = s_status[tid];
        c->status = s == HOMI_STATUS_BAD_CID ? HOMI_LIST_TIMEOUT : s;
        if (s == HOMI_STATUS_BAD_CID) atomicAdd(&res->timeouts, 1ull);
      }
      if (tid == 0) homi_store_volatile(&st->broken, 1u);
      return;
    }
    if (mine) homi_record(res, s_status[tid], (uint64_t)nlb << q.lba_shift, clock64() - start);
    // Every thread copies every good slot of this round (coalesced), then each command gets its status.
    for (uint32_t j = 0; j < k; j++) {
      if (s_status[j] != 0u) continue;
      const HomiListCmd* cj = cmds + base + j;
      const uint32_t sj = (tail + j) % E;
      homi_block_copy((uint8_t*)cj->dst, (const uint8_t*)(q.data + (uint64_t)sj * q.slot_bytes), cj->bytes);
    }
    __syncthreads();
    if (mine) {
      c->end_ns = homi_globaltimer();
      c->status = s_status[tid];
    }
    if (tid == 0) {
      s_head += k;
      s_tail += k;
      homi_ring(q, q.cq_db, s_head % E);
    }
    __syncthreads();
  }
  if (tid == 0) {
    homi_store_volatile(&st->tail_ticket, s_tail);
    homi_store_volatile(&st->cq_head, s_head);
    homi_store_volatile(&st->ticket, s_tail);
  }
}
