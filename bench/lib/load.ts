// Load generators, all HTTP/1.1 over TLS with keep-alive, in the bench's own process (never the
// server's). Latencies are kept in microseconds in our own HDR histogram, recorded raw from each
// response (autocannon's own histogram is in whole milliseconds, and its rate mode "corrects" with
// an expected interval of ceil(1/rate) ms, i.e. 1 ms: it would invent samples at this scale).
//  - closedLoop: autocannon, fixed connections, as fast as the server answers: throughput.
//  - paced: open loop at a fixed rate, requests spread evenly (1 ms timer ticks) over a keep-alive
//    pool, each timed from the moment it is issued (so queueing in the pool counts): p99 at a rate.
//  - autocannonRate: autocannon's overallRate, for reference: it sends each connection's per-second
//    budget back to back at the start of every second (lib/httpClient.js), i.e. bursts.
import { Agent, request } from 'node:https';
import { connect } from 'node:tls';
import autocannon from 'autocannon';
import { microsecondHistogram, recordMs, summarizeHistogram, type LatencySummary } from './stats.js';

export interface Endpoint {
  host: string;
  port: number;
  path: string;
  /** CA of the serving certificate (checked by the paced client and the ALPN probe). */
  ca: Buffer;
}

/** What a generator sends, where, and how it checks each answer (the same answer as the first one). */
export interface LoadTarget {
  endpoint: Endpoint;
  body: string;
  sameAnswer: (body: string) => boolean;
}

export interface LoadResult {
  generator: 'autocannon-connections' | 'paced-open-loop' | 'autocannon-rate';
  connections: number;
  targetRate: number | null;
  seconds: number;
  requests: number;
  throughputRps: number;
  latency: LatencySummary;
  errors: number;
  timeouts: number;
  non2xx: number;
  /** Responses that are not the same answer as the single-request check done first (sameAnswerAs). */
  mismatches: number;
  /** CPU of the load generator's process over the run, in cores. */
  generatorCores: number;
  /** Paced only: how late the 1 ms ticks issued requests against the schedule, p99/max (us). */
  scheduleLagUs?: { p99: number; max: number };
}

const url = (e: Endpoint): string => `https://${e.host}:${e.port}${e.path}`;
const JSON_HEADERS = { 'content-type': 'application/json' };

function cpuSince(start: NodeJS.CpuUsage, seconds: number): number {
  const used = process.cpuUsage(start);
  return seconds > 0 ? (used.user + used.system) / 1e6 / seconds : 0;
}

/** The parts of an AdmissionReview answer that every answer to the same request must share. */
function answerOf(body: string): string {
  try {
    const { response } = JSON.parse(body) as {
      response?: {
        uid?: string;
        allowed?: boolean;
        patch?: string;
        patchType?: string;
        status?: { code?: number; reason?: string };
      };
    };
    const { uid, allowed, patch, patchType, status } = response ?? {};
    return JSON.stringify([uid, allowed, patch, patchType, status?.code, status?.reason]);
  } catch {
    return body;
  }
}

/**
 * Whether a response is the same answer as `expected` (the first answer of the same server to the same
 * body): the same uid, allowed, patch and patchType, and for a refusal the same status code (403) and
 * reason. A refusal's message is deliberately not compared: dify-guard's varies from one answer to the
 * next with the verification outcome and the per-Secret rate limit, and an exact body comparison counted
 * those correct denials as mismatches. Warnings are not compared either, for the same reason.
 */
export function sameAnswerAs(expected: string): (body: string) => boolean {
  const want = answerOf(expected);
  return (body) => answerOf(body) === want;
}

/** One POST, to check what a server answers before loading it. */
export function postOnce(endpoint: Endpoint, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: endpoint.host,
        port: endpoint.port,
        path: endpoint.path,
        method: 'POST',
        ca: endpoint.ca,
        agent: false,
        headers: { ...JSON_HEADERS, 'content-length': Buffer.byteLength(body) },
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`POST ${url(endpoint)} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** The protocol the server picks when offered h2 and http/1.1 over ALPN (false: it does not speak ALPN). */
export function negotiatedProtocol(endpoint: Endpoint): Promise<string | false> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: endpoint.host, port: endpoint.port, ca: endpoint.ca, ALPNProtocols: ['h2', 'http/1.1'] },
      () => {
        const protocol = socket.alpnProtocol ?? false;
        socket.end();
        resolve(protocol);
      },
    );
    socket.on('error', reject);
  });
}

function runAutocannon(
  { endpoint, body, sameAnswer }: LoadTarget,
  options: { connections: number; seconds: number; overallRate?: number },
): Promise<LoadResult> {
  const histogram = microsecondHistogram();
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  let responses = 0;
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: url(endpoint),
        method: 'POST',
        headers: JSON_HEADERS,
        body,
        connections: options.connections,
        pipelining: 1,
        duration: options.seconds,
        timeout: 10,
        verifyBody: sameAnswer,
        tlsOptions: { ca: endpoint.ca },
        ...(options.overallRate ? { overallRate: options.overallRate } : {}),
      },
      (error, result) => {
        if (error) return reject(error);
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        resolve({
          generator: options.overallRate ? 'autocannon-rate' : 'autocannon-connections',
          connections: options.connections,
          targetRate: options.overallRate ?? null,
          seconds,
          requests: responses,
          throughputRps: responses / seconds,
          latency: summarizeHistogram(histogram),
          errors: result.errors,
          timeouts: result.timeouts,
          non2xx: result.non2xx,
          mismatches: result.mismatches,
          generatorCores: cpuSince(cpu, seconds),
        });
      },
    );
    instance.on('response', (_client, statusCode, _bytes, responseTimeMs) => {
      responses += 1;
      if (statusCode >= 200 && statusCode < 300) recordMs(histogram, responseTimeMs);
    });
  });
}

export function closedLoop(target: LoadTarget, options: { connections: number; seconds: number }): Promise<LoadResult> {
  return runAutocannon(target, options);
}

export function autocannonRate(
  target: LoadTarget,
  options: { connections: number; seconds: number; rate: number },
): Promise<LoadResult> {
  return runAutocannon(target, {
    connections: options.connections,
    seconds: options.seconds,
    overallRate: options.rate,
  });
}

interface PacedCounts {
  errors: number;
  timeouts: number;
  non2xx: number;
  mismatches: number;
}

interface PacedClient {
  endpoint: Endpoint;
  agent: Agent;
  payload: Buffer;
  sameAnswer: (body: string) => boolean;
  histogram: ReturnType<typeof microsecondHistogram>;
  counts: PacedCounts;
}

/** One request, timed from the moment it is issued; `finish` is called once, whatever happens. */
function sendPaced(client: PacedClient, finish: () => void): void {
  const { endpoint, counts } = client;
  const start = process.hrtime.bigint();
  let done = false;
  const once = (): void => {
    if (!done) {
      done = true;
      finish();
    }
  };
  const headers = { ...JSON_HEADERS, 'content-length': String(client.payload.length) };
  const options = { ...endpoint, method: 'POST', agent: client.agent, headers, timeout: 10_000 };
  const req = request(options, (res) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => {
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) {
        recordMs(client.histogram, Number(process.hrtime.bigint() - start) / 1e6);
        if (!client.sameAnswer(Buffer.concat(chunks).toString('utf8'))) counts.mismatches += 1;
      } else {
        counts.non2xx += 1;
      }
      once();
    });
  });
  req.on('timeout', () => {
    counts.timeouts += 1;
    req.destroy(new Error('timeout'));
  });
  req.on('error', () => {
    counts.errors += 1;
    once();
  });
  req.end(client.payload);
}

export function paced(
  { endpoint, body, sameAnswer }: LoadTarget,
  options: { rate: number; seconds: number; sockets: number },
): Promise<LoadResult> {
  const total = Math.round(options.rate * options.seconds);
  const intervalNs = 1e9 / options.rate;
  const agent = new Agent({ keepAlive: true, maxSockets: options.sockets, keepAliveMsecs: 1000 });
  const counts: PacedCounts = { errors: 0, timeouts: 0, non2xx: 0, mismatches: 0 };
  const client: PacedClient = {
    endpoint,
    agent,
    payload: Buffer.from(body),
    sameAnswer,
    histogram: microsecondHistogram(),
    counts,
  };
  const lag = microsecondHistogram();
  const cpu = process.cpuUsage();
  let sent = 0;
  let finished = 0;
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const complete = (): void => {
      finished += 1;
      if (finished < total) return;
      agent.destroy();
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const lagSummary = summarizeHistogram(lag);
      resolve({
        generator: 'paced-open-loop',
        connections: options.sockets,
        targetRate: options.rate,
        seconds,
        requests: finished,
        throughputRps: finished / seconds,
        latency: summarizeHistogram(client.histogram),
        ...counts,
        generatorCores: cpuSince(cpu, seconds),
        scheduleLagUs: { p99: lagSummary.p99Us, max: lagSummary.maxUs },
      });
    };
    const tick = (): void => {
      const now = process.hrtime.bigint();
      const due = Math.min(total, Math.floor(Number(now - t0) / intervalNs) + 1);
      while (sent < due) {
        const intended = t0 + BigInt(Math.round(sent * intervalNs));
        lag.record(Math.max(1, Number((now - intended) / 1000n)));
        sent += 1;
        sendPaced(client, complete);
      }
      if (sent < total) setTimeout(tick, 1);
    };
    tick();
  });
}
