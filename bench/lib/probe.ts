// The bench's view of a measured server process: snapshots from bench/support/server-probe.mjs
// (process.cpuUsage, memory, outgoing HTTP requests), asked for with SIGUSR2, and RSS sampled from
// /proc while a run lasts (peak within the run, without touching the process).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
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
  heapTotalBytes: number;
  externalBytes: number;
  arrayBuffersBytes: number;
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
  /** process.memoryUsage() at the end of the interval. */
  memoryAfter: {
    rssBytes: number;
    heapUsedBytes: number;
    heapTotalBytes: number;
    externalBytes: number;
    arrayBuffersBytes: number;
  };
  maxRssKiBAfter: number;
}

/** `NODE_OPTIONS` (and env) that load the probe into a server process. */
export function probeEnv(file: string, extraNodeOptions: string[] = []): Record<string, string> {
  return { NODE_OPTIONS: [`--import=${SERVER_PROBE_PRELOAD}`, ...extraNodeOptions].join(' '), BENCH_PROBE_FILE: file };
}

export class ServerProbe {
  constructor(
    readonly name: string,
    private readonly pidOf: () => number | undefined,
    readonly file: string,
  ) {}

  get pid(): number {
    const pid = this.pidOf();
    if (!pid) throw new Error(`${this.name} is not running`);
    return pid;
  }

  private read(): ProbeSnapshot | undefined {
    if (!existsSync(this.file)) return undefined;
    return JSON.parse(readFileSync(this.file, 'utf8')) as ProbeSnapshot;
  }

  /** Has the process start (`profile-start`) or stop and write (`profile-stop <file>`) a CPU profile, then snapshot. */
  async command(command: string, timeoutMs = 30_000): Promise<ProbeSnapshot> {
    writeFileSync(`${this.file}.cmd`, command);
    return this.snapshot(timeoutMs);
  }

  /** A fresh snapshot from the process (SIGUSR2, then wait for the file to change). */
  async snapshot(timeoutMs = 5_000): Promise<ProbeSnapshot> {
    const before = this.read()?.seq ?? 0;
    process.kill(this.pid, 'SIGUSR2');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const current = this.read();
      if (current && current.seq > before) return current;
      if (Date.now() > deadline)
        throw new Error(`${this.name}: no probe snapshot within ${timeoutMs} ms (is ${this.file} written?)`);
      await sleep(5);
    }
  }

  /**
   * Waits until the process has made no outgoing request for quietMs (e.g. Events still queued
   * from a flood of denials), so one run's backlog is not measured in the next one.
   */
  async settle(quietMs = 1_000, timeoutMs = 60_000): Promise<{ waitedMs: number; drained: boolean }> {
    const started = Date.now();
    const total = (s: ProbeSnapshot): number => Object.values(s.calls).reduce((sum, n) => sum + n, 0);
    let last = total(await this.snapshot());
    let quietSince = Date.now();
    while (Date.now() - quietSince < quietMs) {
      if (Date.now() - started > timeoutMs) return { waitedMs: Date.now() - started, drained: false };
      await sleep(200);
      const now = total(await this.snapshot());
      if (now !== last) {
        last = now;
        quietSince = Date.now();
      }
    }
    return { waitedMs: Date.now() - started, drained: true };
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
      } catch {
        /* the process is gone: the caller will find out */
      }
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
  const cpuSeconds =
    (after.cpuUsage.user - before.cpuUsage.user + after.cpuUsage.system - before.cpuUsage.system) / 1e6;
  const calls: Record<string, number> = {};
  for (const [key, count] of Object.entries(after.calls)) {
    const diff = count - (before.calls[key] ?? 0);
    if (diff > 0) calls[key] = diff;
  }
  return {
    wallSeconds,
    cpuSeconds,
    cores: wallSeconds > 0 ? cpuSeconds / wallSeconds : 0,
    calls,
    memoryAfter: {
      rssBytes: after.rssBytes,
      heapUsedBytes: after.heapUsedBytes,
      heapTotalBytes: after.heapTotalBytes,
      externalBytes: after.externalBytes,
      arrayBuffersBytes: after.arrayBuffersBytes,
    },
    maxRssKiBAfter: after.maxRssKiB,
  };
}

export interface CallClasses {
  /** GETs of one named object (e.g. a PVC by name): what a webhook without a cache would do per request. */
  lookups: number;
  /** LIST or WATCH of a whole collection: keeping the cache filled (start, resync, a watch re-opened). */
  cacheListWatch: number;
  /** Creates and patches of Events (the audit trail of refusals). */
  eventWrites: number;
  other: number;
  total: number;
}

/** What one outgoing call is for, from its method and path (see CallClasses). */
function classOf(method: string, path: string): Exclude<keyof CallClasses, 'total'> {
  const segments = path
    .replace(/\?watch$/, '')
    .split('/')
    .filter(Boolean);
  // /api/v1/<resource>[/<name>] or /api/v1/namespaces/<ns>/<resource>[/<name>]; groups add one segment.
  const base = segments[0] === 'apis' ? 3 : 2;
  const rest = segments.slice(base);
  const afterNamespace = rest[0] === 'namespaces' && rest.length >= 3 ? rest.slice(2) : rest;
  if (method === 'GET') return afterNamespace.length >= 2 ? 'lookups' : 'cacheListWatch';
  return afterNamespace[0] === 'events' ? 'eventWrites' : 'other';
}

/** Outgoing calls sorted into what they are for (paths like /api/v1/namespaces/ns/persistentvolumeclaims/name). */
export function classifyCalls(calls: Record<string, number>): CallClasses {
  const classes: CallClasses = { lookups: 0, cacheListWatch: 0, eventWrites: 0, other: 0, total: 0 };
  for (const [key, count] of Object.entries(calls)) {
    const [method = '', path = ''] = key.split(' ');
    classes[classOf(method, path)] += count;
    classes.total += count;
  }
  return classes;
}
