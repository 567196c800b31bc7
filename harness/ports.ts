// Free loopback ports that parallel test files (separate processes) do not hand out twice: a port
// is claimed by creating a lock file exclusively, then checked by binding it. Ports come from
// below Linux's ephemeral range (32768+) so outgoing connections never occupy them meanwhile.
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';

const lockDir = join(tmpdir(), 'dify-guard-ports');
const first = 20000;
const last = 32000;

const held = new Set<string>();
process.once('exit', () => {
  for (const file of held)
    try {
      unlinkSync(file);
    } catch {
      /* already gone */
    }
});

function ownerAlive(file: string): boolean {
  try {
    const pid = Number(readFileSync(file, 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0) return false;
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function claim(port: number): string | undefined {
  const file = join(lockDir, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      held.add(file);
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A lock left by a process that died (SIGKILL) is taken over once.
      if (ownerAlive(file)) return undefined;
      try {
        unlinkSync(file);
      } catch {
        /* another process took it over first */
      }
    }
  }
  return undefined;
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A loopback port held for this process until `release()` or exit. */
export interface ReservedPort {
  port: number;
  release(): void;
}

export async function reservePort(): Promise<ReservedPort> {
  mkdirSync(lockDir, { recursive: true });
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = randomInt(first, last);
    const file = claim(port);
    if (!file) continue;
    if (await canBind(port)) {
      return {
        port,
        release: () => {
          if (!held.delete(file)) return;
          try {
            unlinkSync(file);
          } catch {
            /* already gone */
          }
        },
      };
    }
    held.delete(file);
    unlinkSync(file);
  }
  throw new Error(`no free loopback port found in ${first}-${last}`);
}

export async function reservePorts(count: number): Promise<ReservedPort[]> {
  const ports: ReservedPort[] = [];
  for (let i = 0; i < count; i++) ports.push(await reservePort());
  return ports;
}
