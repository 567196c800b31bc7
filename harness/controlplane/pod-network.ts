// Pod addresses this machine answers on, for pods whose containers the harness runs as real local
// processes (guard-pods.ts). A loopback range cannot be used: the API server refuses 127.0.0.0/8 in
// Endpoints and EndpointSlices ("may not be in the loopback range"), so the endpoint controllers could
// never publish such a pod. Instead each cluster takes one /24 of 198.18.0.0/15 (RFC 2544, benchmark
// networks, never routed on the Internet) and makes it local (`ip route add local ... dev lo`, table
// local): every address in it can be bound, and only this machine reaches it. Needs root (CAP_NET_ADMIN).
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireRoot } from '../programs/run.js';

const lockDir = join(tmpdir(), 'dify-guard-pod-ranges');
const held = new Map<string, string>();
process.once('exit', () => {
  for (const [cidr, file] of held) release(cidr, file);
});

function ownerAlive(file: string): boolean {
  try {
    process.kill(Number(readFileSync(file, 'utf8')), 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function route(verb: 'add' | 'del', cidr: string): void {
  execFileSync('ip', ['route', verb, 'local', cidr, 'dev', 'lo', 'table', 'local'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

function release(cidr: string, file: string): void {
  held.delete(cidr);
  try {
    route('del', cidr);
  } catch {
    /* already gone */
  }
  try {
    unlinkSync(file);
  } catch {
    /* already gone */
  }
}

/** Claims a lock file for slot `n`; a lock of a dead process (and the route it left) is taken over. */
function claim(n: number): string | undefined {
  const file = join(lockDir, String(n));
  try {
    const fd = openSync(file, 'wx');
    writeSync(fd, String(process.pid));
    closeSync(fd);
    return file;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || ownerAlive(file)) return undefined;
    try {
      route('del', cidrOf(n));
    } catch {
      /* no route left */
    }
    unlinkSync(file);
    return claim(n);
  }
}

const cidrOf = (n: number): string => `198.${18 + (n >> 8)}.${n & 255}.0/24`;

export interface LocalPodRange {
  /** e.g. 198.18.7.0/24: kwok's --cidr. */
  cidr: string;
  release(): void;
}

/** A /24 of pod addresses routed to this machine, held until `release()` or process exit. */
export function reserveLocalPodRange(): LocalPodRange {
  requireRoot('Serving pods on their own addresses (ip route add local)');
  mkdirSync(lockDir, { recursive: true });
  for (let n = 0; n < 512; n++) {
    const file = claim(n);
    if (!file) continue;
    const cidr = cidrOf(n);
    try {
      route('add', cidr);
    } catch (err) {
      unlinkSync(file);
      const why = String((err as { stderr?: Buffer }).stderr ?? err);
      throw new Error(`ip route add local ${cidr} dev lo failed (needs CAP_NET_ADMIN): ${why}`, { cause: err });
    }
    held.set(cidr, file);
    return {
      cidr,
      release: () => {
        if (held.has(cidr)) release(cidr, file);
      },
    };
  }
  throw new Error(`no free pod range in 198.18.0.0/15 (locks in ${lockDir})`);
}
