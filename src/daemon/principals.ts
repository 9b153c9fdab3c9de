/**
 * Who a peer is (SO_PEERCRED uid/gid) in terms of the config: initiator class and raw-queue permission.
 *
 * Fails closed: the user and group database (/etc/passwd, /etc/group) is read once and kept while both files
 * are unchanged (stat needs no descriptor, so a homid short of descriptors keeps identifying peers); when it
 * cannot be read, identify() throws 'identity' and the peer is refused. A peer is never put into the
 * default class because its memberships could not be looked up.
 */
import * as fs from 'node:fs';
import type { ClassConfig, HomidConfig } from './config.js';
import { HomidError } from './errors.js';

export interface Peer {
  pid: number;
  uid: number;
  gid: number;
}

interface Db {
  users: Map<number, string>;
  groups: { name: string; gid: number; members: string[] }[];
}

export const PASSWD_PATH = '/etc/passwd';
export const GROUP_PATH = '/etc/group';

/** Where the database lives (tests point it elsewhere to show the refusal). */
export const dbPaths = { passwd: PASSWD_PATH, group: GROUP_PATH };

let cached: { key: string; db: Db } | null = null;

function stamp(p: string): string {
  const st = fs.statSync(p, { bigint: true });
  return `${p}:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
}

function parseDb(passwd: string, group: string): Db {
  const users = new Map<number, string>();
  const groups: Db['groups'] = [];
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && /^\d+$/.test(f[2]!)) users.set(Number(f[2]), f[0]!);
  }
  for (const line of group.split('\n')) {
    const f = line.split(':');
    if (f.length >= 4 && /^\d+$/.test(f[2]!)) groups.push({ name: f[0]!, gid: Number(f[2]), members: f[3]!.split(',').filter(Boolean) });
  }
  return { users, groups };
}

/** The user and group database, or HomidError 'identity' when it cannot be read. */
function readDb(): Db {
  try {
    const key = `${stamp(dbPaths.passwd)}|${stamp(dbPaths.group)}`;
    if (cached !== null && cached.key === key) return cached.db;
    const db = parseDb(fs.readFileSync(dbPaths.passwd, 'utf8'), fs.readFileSync(dbPaths.group, 'utf8'));
    cached = { key, db };
    return db;
  } catch (e) {
    throw new HomidError('identity', `cannot establish the client's identity: the user and group database is unreadable (${(e as Error).message}); refused rather than guessed`);
  }
}

/** Forget the cached database (tests). */
export function resetIdentityCache(): void {
  cached = null;
}

export interface Identity {
  uid: number;
  user: string | null;
  gids: Set<number>;
  groupNames: Set<string>;
}

/** The peer's user name and groups. Throws HomidError 'identity' when they cannot be looked up. */
export function identify(peer: Peer): Identity {
  const db = readDb();
  const user = db.users.get(peer.uid) ?? null;
  const gids = new Set<number>([peer.gid]);
  const groupNames = new Set<string>();
  for (const g of db.groups) {
    if (g.gid === peer.gid || (user !== null && g.members.includes(user))) {
      gids.add(g.gid);
      groupNames.add(g.name);
    }
  }
  return { uid: peer.uid, user, gids, groupNames };
}

function matches(id: Identity, users: (string | number)[], groups: (string | number)[]): boolean {
  for (const u of users) if (u === id.uid || (id.user !== null && u === id.user) || u === String(id.uid)) return true;
  for (const g of groups) if ((typeof g === 'number' && id.gids.has(g)) || (typeof g === 'string' && id.groupNames.has(g))) return true;
  return false;
}

/** The first class (in config order, "default" last) whose users / groups match; else "default". */
export function classFor(cfg: HomidConfig, id: Identity): ClassConfig {
  for (const c of cfg.classes.values()) if (c.name !== 'default' && matches(id, c.users, c.groups)) return c;
  return cfg.classes.get('default')!;
}

/** Whether `id` is one of `users` (user names or uids; config lists such as device_memory_users). */
export function listedUser(id: Identity, users: (string | number)[]): boolean {
  return matches(id, users, []);
}

export function mayHoldRaw(cfg: HomidConfig, id: Identity): boolean {
  return matches(id, cfg.raw.users, cfg.raw.groups);
}
