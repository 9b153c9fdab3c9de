// A controller that runs on the GPU itself: a persistent kernel on a few SMs serving NVMe queue pairs whose
// SQs, CQs and doorbells live in GPU memory, with a null or GPU-memory namespace. It measures HOMI's
// device-side submission machinery (nvme_queue.cuh, initiator.cu) at the GPU's own speed, without the CPU
// controller as the limit. It is not a product controller: no admin queue (the host sets the queues up in its
// memory), NVM read and write only, PRP1 / PRP2 / one PRP list page.
//
// Each warp serves the queues q with q % warps == its index. Per round it reads the SQ tail doorbell, lets
// lane i take entry (head + i), checks and executes it, and posts its completion at CQ position (tail + i)
// with the phase tag stored last (release at GPU scope), as many at once as the CQ has room for.
#include "nvme_queue.cuh"

#define HOMI_SC_INVALID_OPCODE 0x01u
#define HOMI_SC_INVALID_FIELD 0x02u
#define HOMI_SC_INVALID_NS 0x0bu
#define HOMI_SC_LBA_RANGE 0x80u
#define HOMI_STOP_POLL_EVERY 256u

// HOMI_LAYOUT HomiCtrlQueue 48
struct HomiCtrlQueue {
  uint64_t sq;        // 0  SQ entries (GPU memory)
  uint64_t cq;        // 8  CQ entries (GPU memory)
  uint64_t sq_db;     // 16 SQ tail doorbell (GPU memory)
  uint64_t cq_db;     // 24 CQ head doorbell (GPU memory)
  uint32_t entries;   // 32
  uint32_t qid;       // 36
  uint32_t sq_head;   // 40 kept across launches (wrapped)
  uint32_t cq_tail;   // 44 completions posted (unwrapped)
};

// HOMI_LAYOUT HomiCtrlJob 64
struct HomiCtrlJob {
  uint64_t queues;       // 0  HomiCtrlQueue[nqueues] (GPU memory)
  uint64_t stop;         // 8  uint32: the host stores nonzero to stop (host memory registered with the GPU)
  uint64_t media;        // 16 namespace bytes (GPU memory), or 0: a null namespace (no data moved)
  uint64_t ns_blocks;    // 24 namespace size in LBAs
  uint64_t stats;        // 32 uint64 x 4 (GPU memory): commands, reads, writes, errors
  uint32_t nqueues;      // 40
  uint32_t lba_shift;    // 44
  uint32_t page_bytes;   // 48
  uint32_t nsid;         // 52
  uint32_t pad[2];       // 56
};

__device__ __forceinline__ void homi_copy16(uint64_t dst, uint64_t src, uint32_t bytes) {
  for (uint32_t o = 0; o < bytes; o += 16) *(uint4*)(dst + o) = __ldcv((const uint4*)(src + o));
}

// Move `bytes` between the namespace at `off` and the PRPs (device pointers). Returns false on a bad PRP.
__device__ bool homi_ctrl_transfer(const HomiCtrlJob& job, bool toHost, uint64_t off, uint64_t prp1, uint64_t prp2, uint32_t bytes) {
  const uint32_t page = job.page_bytes;
  uint32_t first = page - (uint32_t)(prp1 & (page - 1));
  if (first > bytes) first = bytes;
  if ((prp1 & 15u) != 0) return false;
  uint64_t media = job.media + off;
  if (toHost) homi_copy16(prp1, media, first);
  else homi_copy16(media, prp1, first);
  uint32_t done = first;
  if (done == bytes) return true;
  const uint32_t rest = bytes - done;
  if (rest <= page) {
    if ((prp2 & (page - 1)) != 0) return false;
    if (toHost) homi_copy16(prp2, media + done, rest);
    else homi_copy16(media + done, prp2, rest);
    return true;
  }
  if ((prp2 & 7u) != 0) return false;
  for (uint32_t i = 0; done < bytes; i++) {
    const uint64_t p = __ldcv((const unsigned long long*)prp2 + i);
    if ((p & (page - 1)) != 0 || i >= page / 8u - 1u) return false;
    const uint32_t n = bytes - done < page ? bytes - done : page;
    if (toHost) homi_copy16(p, media + done, n);
    else homi_copy16(media + done, p, n);
    done += n;
  }
  return true;
}

extern "C" __global__ void homi_gpu_controller(HomiCtrlJob job) {
  const uint32_t lane = threadIdx.x & 31u;
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const uint32_t warps = (gridDim.x * blockDim.x) >> 5;
  HomiCtrlQueue* queues = (HomiCtrlQueue*)job.queues;
  unsigned long long commands = 0, reads = 0, writes = 0, errors = 0;
  for (uint32_t round = 0;; round++) {
    if ((round % HOMI_STOP_POLL_EVERY) == 0 && homi_load_acquire_sys((const uint32_t*)job.stop) != 0u) break;
    for (uint32_t qi = warp; qi < job.nqueues; qi += warps) {
      HomiCtrlQueue* q = &queues[qi];
      const uint32_t E = q->entries;
      const uint32_t head = q->sq_head;
      const uint32_t tail = homi_load_acquire_gpu((const uint32_t*)q->sq_db);
      if (tail == head || tail >= E) continue;
      const uint32_t avail = (tail + E - head) % E;
      const uint32_t cqHead = homi_load_acquire_gpu((const uint32_t*)q->cq_db);
      const uint32_t inFlight = (q->cq_tail % E + E - cqHead % E) % E;
      uint32_t n = E - 1u - inFlight;
      if (n > avail) n = avail;
      if (n > 32u) n = 32u;
      if (n == 0) continue;
      if (lane < n) {
        const uint32_t slot = (head + lane) % E;
        const uint4* e = (const uint4*)(q->sq + (uint64_t)slot * HOMI_SQE_BYTES);
        const uint4 w0 = __ldcv(e), w1 = __ldcv(e + 1), w2 = __ldcv(e + 2), w3 = __ldcv(e + 3);
        const uint32_t opcode = w0.x & 0xffu;
        const uint32_t cid = w0.x >> HOMI_SQE_CID_SHIFT;
        const uint64_t prp1 = (uint64_t)w1.z | ((uint64_t)w1.w << 32);
        const uint64_t prp2 = (uint64_t)w2.x | ((uint64_t)w2.y << 32);
        const uint64_t slba = (uint64_t)w2.z | ((uint64_t)w2.w << 32);
        const uint32_t nlb = (w3.x & 0xffffu) + 1u;
        uint32_t status = 0;
        if (opcode != HOMI_OPC_READ && opcode != HOMI_OPC_WRITE) status = HOMI_SC_INVALID_OPCODE;
        else if (w0.y != job.nsid) status = HOMI_SC_INVALID_NS;
        else if (slba + nlb > job.ns_blocks || slba + nlb < slba) status = HOMI_SC_LBA_RANGE;
        else if (job.media != 0 && !homi_ctrl_transfer(job, opcode == HOMI_OPC_READ, slba << job.lba_shift, prp1, prp2, nlb << job.lba_shift)) status = HOMI_SC_INVALID_FIELD;
        if (status != 0) errors++;
        else if (opcode == HOMI_OPC_READ) reads++;
        else writes++;
        commands++;
        const uint32_t pos = q->cq_tail + lane;
        uint32_t* c = (uint32_t*)(q->cq + (uint64_t)(pos % E) * HOMI_CQE_BYTES);
        c[0] = 0u;
        c[1] = 0u;
        c[2] = ((head + n) % E) | (q->qid << 16);
        __threadfence();
        homi_store_release_gpu(c + 3, cid | (homi_expected_phase(pos, E) << HOMI_CQE_DW3_PHASE_SHIFT) | (status << HOMI_CQE_DW3_STATUS_SHIFT));
      }
      __syncwarp();
      if (lane == 0) {
        q->sq_head = (head + n) % E;
        q->cq_tail += n;
      }
      __syncwarp();
    }
  }
  unsigned long long* stats = (unsigned long long*)job.stats;
  atomicAdd(&stats[0], commands);
  atomicAdd(&stats[1], reads);
  atomicAdd(&stats[2], writes);
  atomicAdd(&stats[3], errors);
}
