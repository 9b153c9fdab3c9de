/**
 * The catalogue the IPC layer's own tests serve: homid's requests, with loose results (a handler echoes what
 * a test checks: the peer's credentials, the file read through a passed descriptor, a blob to make a frame
 * large). homid's catalogue (src/ipc/messages.ts) has exact results; these tests exercise the framing, the
 * descriptors and the limits, not homid's messages.
 */
import { z } from 'zod';
import { catalogue, type Catalogue } from '../../src/ipc/index.js';

export const testCatalogue = {
  hello: { ...catalogue.hello, result: z.looseObject({ version: z.number().int().positive(), server: z.string() }) },
  listDevices: {
    ...catalogue.listDevices,
    result: z.looseObject({ devices: z.array(z.looseObject({ device: z.string(), model: z.string().optional() })) }),
  },
  openQueuePair: { ...catalogue.openQueuePair, result: z.looseObject({ grantId: z.string() }) },
  closeQueuePair: { ...catalogue.closeQueuePair, result: z.looseObject({}) },
  resolveExtents: {
    ...catalogue.resolveExtents,
    result: z.looseObject({
      size: z.number().nonnegative(),
      extents: z.array(z.looseObject({ logical: z.number(), physical: z.number(), length: z.number() })),
    }),
  },
  status: { ...catalogue.status, result: z.looseObject({}) },
} as const satisfies Catalogue;
export type TestCatalogue = typeof testCatalogue;
