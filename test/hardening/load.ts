// Shared by the hardening tests: the real dify-guard process on a real control plane, a check that an
// answer is a well-formed AdmissionReview, a load generator over keep-alive and fresh connections,
// and the process's resident memory.
import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { contract } from '../../src/contract.js';
import { startControlPlane, type ControlPlane } from '../../harness/controlplane/harness.js';
import type { TeardownHost } from '../../harness/processes.js';
import { startDifyGuard, type DifyGuard, type DifyGuardOptions } from '../../harness/controlplane/dify-guard.js';
import { loadReview, type AdmissionReview } from '../../harness/fixtures.js';
import { isObject } from '../../harness/manifests.js';
import { httpsRequest } from '../server/support.js';

export const MUTATE_PODS = contract.webhook.mutatePodsPath;
export const VALIDATE_SECRETS = contract.webhook.validateSecretsPath;

export interface GuardedPlane {
  cp: ControlPlane;
  guard: DifyGuard;
  ca: Buffer;
}

/** A control plane (dify-guard's readiness waits for its PVC cache's first list) and dify-guard on it. */
export async function startGuardedPlane(
  t: TeardownHost,
  name: string,
  options: DifyGuardOptions = {},
): Promise<GuardedPlane> {
  const cp = await startControlPlane(t, { name });
  const guard = await startDifyGuard(t, cp, options);
  return { cp, guard, ca: readFileSync(guard.certs.caFile) };
}

// ---- answers ---------------------------------------------------------------------------------------

export interface Answer {
  status: number;
  text: string;
  json: unknown;
  fingerprint256: string;
  reusedSocket: boolean;
  socket: TLSSocket;
  connection: string | undefined;
}

export interface SendOptions {
  port: number;
  ca: Buffer;
  path: string;
  body?: Buffer | string;
  /** Content-Type header; `null` sends none. Default application/json. */
  contentType?: string | null;
  /** Sent chunked (no Content-Length) when true. */
  chunked?: boolean;
  /** More request headers (e.g. Expect, Content-Encoding). */
  headers?: Record<string, string>;
  agent?: Agent | false;
}

const toBuffer = (body: Buffer | string | undefined): Buffer | undefined =>
  body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');

/** The request headers: Content-Type (application/json unless given or null), Content-Length unless chunked. */
function headersOf(options: SendOptions, body: Buffer | undefined): Record<string, string | number> {
  const headers: Record<string, string | number> = { ...options.headers };
  const contentType = options.contentType === undefined ? 'application/json' : options.contentType;
  if (contentType !== null) headers['content-type'] = contentType;
  if (!options.chunked) headers['content-length'] = body?.length ?? 0;
  return headers;
}

/** The body as a streaming client sends it chunked: pieces of 16 KiB. */
const chunksOf = (body: Buffer): Buffer[] =>
  Array.from({ length: Math.ceil(body.length / 16_384) }, (_, i) => body.subarray(i * 16_384, (i + 1) * 16_384));

/** One POST over TLS (verifying the certificate against the CA); rejects on any transport error. */
export async function send(options: SendOptions): Promise<Answer> {
  const body = toBuffer(options.body);
  const chunks = body !== undefined && options.chunked ? chunksOf(body) : undefined;
  const res = await httpsRequest({
    port: options.port,
    path: options.path,
    ca: options.ca,
    headers: headersOf(options, body),
    ...(options.agent ? { agent: options.agent } : {}),
    ...(chunks ? { chunks } : body !== undefined ? { body } : {}),
  });
  const connection = res.headers.connection;
  return {
    status: res.status,
    text: res.text,
    json: res.json as unknown,
    fingerprint256: res.fingerprint256,
    reusedSocket: res.reusedSocket,
    socket: res.socket,
    connection,
  };
}

/** A 4xx must carry an AdmissionReview status with a message. */
function problemWithRefusal(status: number, json: unknown): string | undefined {
  if (!isObject(json) || !isObject(json.response) || !isObject(json.response.status))
    return `${status} without a status in an AdmissionReview`;
  const message = json.response.status.message;
  return typeof message === 'string' && message.trim() !== '' ? undefined : `${status} with no message`;
}

const JSON_PATCH_OPS = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);

/** A patch, when there is one: JSONPatch, base64 of a non-empty array of JSON Patch operations. */
function problemWithPatch(response: Record<string, unknown>): string | undefined {
  if (response.patch === undefined && response.patchType === undefined) return undefined;
  if (response.patchType !== 'JSONPatch') return '200 with a patch but patchType is not JSONPatch';
  if (typeof response.patch !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(response.patch))
    return '200 whose patch is not base64';
  let operations: unknown;
  try {
    operations = JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8'));
  } catch {
    return '200 whose patch is not JSON';
  }
  if (!Array.isArray(operations) || operations.length === 0) return '200 whose patch is not a non-empty JSON array';
  const isOperation = (op: unknown): boolean =>
    isObject(op) && typeof op.op === 'string' && JSON_PATCH_OPS.has(op.op) && typeof op.path === 'string';
  return operations.every(isOperation)
    ? undefined
    : '200 whose patch holds something that is not a JSON Patch operation';
}

/** A 200 must carry a valid AdmissionReview: uid echoed, allowed boolean, a patch only as problemWithPatch says. */
function problemWithReview(json: unknown, requestUid: string | undefined): string | undefined {
  if (!isObject(json)) return '200 whose body is not a JSON object';
  if (json.apiVersion !== 'admission.k8s.io/v1') return '200 with a wrong apiVersion';
  if (json.kind !== 'AdmissionReview') return '200 with a wrong kind';
  const response = json.response;
  if (!isObject(response)) return '200 without a response';
  if (requestUid !== undefined && response.uid !== requestUid) return '200 whose response.uid is not the request uid';
  if (typeof response.allowed !== 'boolean') return '200 whose response.allowed is not a boolean';
  return problemWithPatch(response);
}

/**
 * What is wrong with an answer, or undefined when it is one a webhook may give: 200 with a valid
 * AdmissionReview (uid echoed, allowed boolean, a patch only as base64 of a JSON Patch array), or a
 * 4xx naming the problem. A 5xx is always wrong.
 */
export function problemWithAnswer(
  answer: { status: number; json: unknown },
  requestUid: string | undefined,
): string | undefined {
  const { status, json } = answer;
  if (status >= 400 && status < 500) return problemWithRefusal(status, json);
  if (status !== 200) return `status ${status}`;
  return problemWithReview(json, requestUid);
}

// ---- load --------------------------------------------------------------------------------------------

/** The realistic mix of the load: pod CREATEs (mutated and not) and PostgreSQL Secret UPDATEs. */
export const LOAD_MIX: { path: string; fixture: string }[] = [
  { path: MUTATE_PODS, fixture: 'pod-api-literal' },
  { path: VALIDATE_SECRETS, fixture: 'secret-postgresql-update-unchanged' },
  { path: MUTATE_PODS, fixture: 'pod-worker' },
  { path: VALIDATE_SECRETS, fixture: 'secret-postgresql-update-password' },
  { path: MUTATE_PODS, fixture: 'pod-web' },
  { path: VALIDATE_SECRETS, fixture: 'secret-redis-update' },
];

export interface LoadRequestRecord {
  id: number;
  lane: 'keep-alive' | 'fresh';
  worker: number;
  /** Values of `epoch()` when the request started and when it ended. */
  startEpoch: number;
  endEpoch: number;
  startedAt: number;
  fingerprint256?: string;
  socket?: TLSSocket;
  reusedSocket?: boolean;
  connection?: string | undefined;
  problem?: string;
}

export interface LoadOptions {
  port: number;
  ca: Buffer;
  /** Workers that each keep one keep-alive connection (an API server's connection pool). */
  keepAliveWorkers: number;
  /** Workers that open a new connection (a new TLS handshake) for every request. */
  freshWorkers: number;
  /** Asked before each request; false ends the worker. */
  keepGoing: () => boolean;
  /** A number the test moves forward at the moments it cares about (rotations); recorded per request. */
  epoch?: () => number;
}

export interface LoadRun {
  records: LoadRequestRecord[];
  /** Resolves when every worker has stopped and every started request has ended. */
  done: Promise<void>;
  agents: Agent[];
  started(): number;
}

/** Starts the load; every request is a fixture review with a unique uid, checked with problemWithAnswer. */
export function startLoad(options: LoadOptions): LoadRun {
  const bodies = LOAD_MIX.map(({ path, fixture }) => ({ path, review: loadReview(fixture) }));
  const records: LoadRequestRecord[] = [];
  const epoch = options.epoch ?? ((): number => 0);
  let next = 0;
  const agents: Agent[] = [];

  const worker = async (lane: LoadRequestRecord['lane'], index: number, agent: Agent | false): Promise<void> => {
    while (options.keepGoing()) {
      const id = next++;
      const { path, review } = bodies[id % bodies.length] as { path: string; review: AdmissionReview };
      const uid = `load-${id}`;
      const body = JSON.stringify({ ...review, request: { ...review.request, uid } });
      const record: LoadRequestRecord = {
        id,
        lane,
        worker: index,
        startEpoch: epoch(),
        endEpoch: -1,
        startedAt: Date.now(),
      };
      records.push(record);
      try {
        const answer = await send({ port: options.port, ca: options.ca, path, body, agent });
        Object.assign(record, {
          fingerprint256: answer.fingerprint256,
          socket: answer.socket,
          reusedSocket: answer.reusedSocket,
          connection: answer.connection,
        });
        const problem =
          problemWithAnswer(answer, uid) ?? (answer.status === 200 ? undefined : `status ${answer.status}`);
        if (problem) record.problem = problem;
      } catch (error) {
        record.problem = `transport: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`;
      }
      record.endEpoch = epoch();
    }
  };

  const workers: Promise<void>[] = [];
  for (let i = 0; i < options.keepAliveWorkers; i++) {
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: options.ca });
    agents.push(agent);
    workers.push(worker('keep-alive', i, agent));
  }
  for (let i = 0; i < options.freshWorkers; i++) workers.push(worker('fresh', i, false));
  return {
    records,
    agents,
    started: () => next,
    done: Promise.all(workers).then(() => undefined),
  };
}

// ---- probes ------------------------------------------------------------------------------------------

/** Resident memory of a process in bytes, from /proc/<pid>/status (VmRSS). */
export function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  if (!line) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(/(\d+)/.exec(line)?.[1]) * 1024;
}

/** Counter values of one metric from /metrics on the health port, by their label text (e.g. `result="loaded"`). */
export async function counterValues(healthPort: number, name: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
  const values: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const match = new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`).exec(line);
    if (match) values[match[1] as string] = Number(match[2]);
  }
  return values;
}

/** Status of GET on the health port, or the transport error's code. */
export async function healthStatus(port: number, path: string): Promise<number | string> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status;
  } catch (error) {
    const cause = (error as { cause?: NodeJS.ErrnoException }).cause;
    return cause?.code ?? (error as Error).name;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Groups ids by their problem, for a failure report that names cases only (never bodies). */
export function byProblem<T extends { problem?: string | undefined }>(
  items: T[],
  idOf: (item: T) => string,
): Record<string, string[]> {
  const grouped: Record<string, string[]> = {};
  for (const item of items) {
    if (!item.problem) continue;
    (grouped[item.problem] ??= []).push(idOf(item));
  }
  for (const key of Object.keys(grouped)) {
    const ids = grouped[key] as string[];
    if (ids.length > 20) grouped[key] = [...ids.slice(0, 20), `... ${ids.length - 20} more`];
  }
  return grouped;
}
