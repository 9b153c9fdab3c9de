/** Who a peer is (SO_PEERCRED uid/gid) in terms of the config: initiator class and raw-queue permission. */
import * as fs from 'node:fs';
import type { ClassConfig, HomidConfig } from './config.js';

export interface Peer {
  pid: number;
  uid: number;
  gid: number;
}

interface Db {
  users: Map<number, string>;
  groups: { name: string; gid: number; members: string[] }[];
}

function readDb(): Db {
  const users = new Map<number, string>();
  const groups: Db['groups'] = [];
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f.length >= 3) users.set(Number(f[2]), f[0]!);
    }
  } catch {
    // no passwd: uids only
  }
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f.length >= 4) groups.push({ name: f[0]!, gid: Number(f[2]), members: f[3]!.split(',').filter(Boolean) });
    }
  } catch {
    // no group file
  }
  return { users, groups };
}

export interface Identity {
  uid: number;
  user: string | null;
  gids: Set<number>;
  groupNames: Set<string>;
}

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

export function mayHoldRaw(cfg: HomidConfig, id: Identity): boolean {
  return matches(id, cfg.raw.users, cfg.raw.groups);
}
