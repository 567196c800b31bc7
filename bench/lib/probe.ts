// The bench's view of a measured server process: snapshots from bench/support/server-probe.mjs
// (process.cpuUsage, memory, outgoing HTTP requests), asked for with SIGUSR2, and RSS sampled from
// /proc while a run lasts (peak within the run, without touching the process).
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const SERVER_PROBE_PRELOAD = fileURLToPath(new URL('../support/server-probe.mjs', import.meta.url));

/** What server-probe.mjs writes. */
export interface ProbeSnapshot {
  pid: number;
  seq: number;
  atNs: string;
  cpuUsage: { user: number; system: number };
  rssBytes: number;
  heapUsedBytes: number;
  maxRssKiB: number;
  calls: Record<string, number>;
}

export interface ProbeDelta {
  wallSeconds: number;
  /** CPU seconds (user + system) over the interval. */
  cpuSeconds: number;
  /** CPU seconds per wall second: 1.0 = one core busy. */
  cores: number;
  /** Outgoing HTTP requests over the interval, by `METHOD /path`. */
  calls: Record<string, number>;
  rssBytesAfter: number;
  heapUsedBytesAfter: number;
  maxRssKiBAfter: number;
}

/** `NODE_OPTIONS` (and env) that load the probe into a server process. */
export function probeEnv(file: string, extraNodeOptions: string[] = []): Record<string, string> {
  return { NODE_OPTIONS: [`--import=${SERVER_PROBE_PRELOAD}`, ...extraNodeOptions].join(' '), BENCH_PROBE_FILE: file };
}

export class ServerProbe {
  constructor(readonly name: string, private readonly pidOf: () => number | undefined, readonly file: string) {}

  get pid(): number {
    const pid = this.pidOf();
    if (!pid) throw new Error(`${this.name} is not running`);
    return pid;
  }

  private read(): ProbeSnapshot | undefined {
    if (!existsSync(this.file)) return undefined;
    return JSON.parse(readFileSync(this.file, 'utf8')) as ProbeSnapshot;
  }

  /** A fresh snapshot from the process (SIGUSR2, then wait for the file to change). */
  async snapshot(timeoutMs = 5_000): Promise<ProbeSnapshot> {
    const before = this.read()?.seq ?? 0;
    process.kill(this.pid, 'SIGUSR2');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const current = this.read();
      if (current && current.seq > before) return current;
      if (Date.now() > deadline) throw new Error(`${this.name}: no probe snapshot within ${timeoutMs} ms (is ${this.file} written?)`);
      await sleep(5);
    }
  }

  /** Current and peak RSS of the process's life, from /proc (bytes). */
  memoryFromProc(): { rssBytes: number; hwmBytes: number } {
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    return { rssBytes: kib('VmRSS') * 1024, hwmBytes: kib('VmHWM') * 1024 };
  }

  /** Samples VmRSS every intervalMs until the returned stop() is called; stop() gives the peak. */
  sampleRss(intervalMs = 100): () => { peakRssBytes: number; lastRssBytes: number; samples: number } {
    let peak = 0;
    let last = 0;
    let samples = 0;
    const take = (): void => {
      try {
        last = this.memoryFromProc().rssBytes;
        peak = Math.max(peak, last);
        samples += 1;
      } catch { /* the process is gone: the caller will find out */ }
    };
    take();
    const timer = setInterval(take, intervalMs);
    return () => {
      clearInterval(timer);
      take();
      return { peakRssBytes: peak, lastRssBytes: last, samples };
    };
  }
}

export function deltaOf(before: ProbeSnapshot, after: ProbeSnapshot): ProbeDelta {
  const wallSeconds = Number(BigInt(after.atNs) - BigInt(before.atNs)) / 1e9;
  const cpuSeconds = (after.cpuUsage.user - before.cpuUsage.user + after.cpuUsage.system - before.cpuUsage.system) / 1e6;
  const calls: Record<string, number> = {};
  for (const [key, count] of Object.entries(after.calls)) {
    const diff = count - (before.calls[key] ?? 0);
    if (diff > 0) calls[key] = diff;
  }
  return {
    wallSeconds, cpuSeconds, cores: wallSeconds > 0 ? cpuSeconds / wallSeconds : 0, calls,
    rssBytesAfter: after.rssBytes, heapUsedBytesAfter: after.heapUsedBytes, maxRssKiBAfter: after.maxRssKiB,
  };
}

/** Outgoing calls sorted into what they are for. */
export function classifyCalls(calls: Record<string, number>): { pvcReads: number; eventWrites: number; other: number; total: number } {
  let pvcReads = 0;
  let eventWrites = 0;
  let other = 0;
  for (const [key, count] of Object.entries(calls)) {
    const [method = '', path = ''] = key.split(' ');
    if (/persistentvolumeclaims/.test(path) && method === 'GET') pvcReads += count;
    else if (/\/events(\/|$|\?)/.test(path) && method !== 'GET') eventWrites += count;
    else other += count;
  }
  return { pvcReads, eventWrites, other, total: pvcReads + eventWrites + other };
}
