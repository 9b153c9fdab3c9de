/**
 * The homid wire format. One frame is one message:
 *
 *   u32 little-endian length   bytes that follow (version + flags + payload), 2 ..= maxFrame
 *   u8  version                PROTOCOL_VERSION (1)
 *   u8  flags                  bit 0 (FLAG_FDS): file descriptors are attached (SCM_RIGHTS); other bits reserved, 0
 *   ... payload                UTF-8 JSON, one request or response object
 *
 * A frame's descriptors travel as one SCM_RIGHTS message attached to the frame's first byte (the sender passes
 * them with the sendmsg that carries the frame's start; receivers never read past a frame's end in one
 * recvmsg, so descriptors can be matched to their frame exactly).
 */
export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 6;
/** Bytes of the length field's own header part (version + flags) counted in `length`. */
export const LENGTH_OVERHEAD = 2;
export const FLAG_FDS = 0x01;
export const KNOWN_FLAGS = FLAG_FDS;
/** Default limit on a frame's length field (1 MiB). */
export const DEFAULT_MAX_FRAME = 1024 * 1024;
/** Most descriptors one frame may carry (the kernel's SCM_MAX_FD is 253). */
export const MAX_FDS_PER_FRAME = 64;

/** Encode `message` as a frame. Throws RangeError when it is larger than `maxFrame`. */
export function encodeFrame(message: unknown, hasFds: boolean, maxFrame = DEFAULT_MAX_FRAME): Uint8Array {
  const json = Buffer.from(JSON.stringify(message), 'utf8');
  const length = json.length + LENGTH_OVERHEAD;
  if (length > maxFrame) throw new RangeError(`message of ${length} bytes exceeds the frame limit of ${maxFrame} bytes`);
  const out = new Uint8Array(HEADER_SIZE + json.length);
  new DataView(out.buffer).setUint32(0, length, true);
  out[4] = PROTOCOL_VERSION;
  out[5] = hasFds ? FLAG_FDS : 0;
  out.set(json, HEADER_SIZE);
  return out;
}

/** A raw frame header (for tests and tools that build frames by hand). */
export function frameHeader(length: number, version = PROTOCOL_VERSION, flags = 0): Uint8Array {
  const h = new Uint8Array(HEADER_SIZE);
  new DataView(h.buffer).setUint32(0, length >>> 0, true);
  h[4] = version & 0xff;
  h[5] = flags & 0xff;
  return h;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decode a frame payload: the parsed JSON value, or why not. */
export function decodePayload(payload: Uint8Array): { ok: true; value: unknown } | { ok: false; message: string } {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    return { ok: false, message: 'payload is not valid UTF-8' };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (e) {
    return { ok: false, message: `payload is not valid JSON: ${(e as Error).message}` };
  }
}
