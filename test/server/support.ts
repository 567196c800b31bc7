// Shared by the server's tests: certificates from certs/generate.sh, a log that is captured line by
// line, stand-ins for the PVC cache and the audit sink, a server on loopback ports, and an HTTPS
// client that reports which certificate it saw.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { pino, type Logger } from 'pino';
import type { PvcState } from '../../src/admission/types.js';
import type { AuditRecord, AuditSink } from '../../src/audit/audit-trail.js';
import type { AdmissionReviewResponse } from '../../src/http/admission-review.js';
import { buildServer, type DifyGuardServer, type ServerOptions } from '../../src/server.js';
import { defaultGuardSettings } from '../../src/admission/settings.js';
import { repoRoot } from '../../harness/binaries.js';
import { isObject } from '../../harness/manifests.js';
import type { TeardownHost } from '../../harness/processes.js';

export interface CertDir {
  dir: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

export function tempDir(t: TeardownHost, prefix = 'dify-guard-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs certs/generate.sh into `dir` (a new CA with `newCa`, else the CA already there is reused). */
export function generateCerts(dir: string, options: { newCa?: boolean } = {}): CertDir {
  execFileSync('bash', [join(repoRoot, 'certs/generate.sh'), '--out', dir, ...(options.newCa ? ['--new-ca'] : [])], {
    stdio: 'ignore',
  });
  return { dir, caFile: join(dir, 'ca.crt'), certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key') };
}

export interface CapturedLog {
  log: Logger;
  lines(): Record<string, unknown>[];
  text(): string;
}

/** A pino logger at `level` whose every line is kept (synchronously) for the test to read. */
export function captureLog(level = 'trace'): CapturedLog {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString('utf8'));
      callback();
    },
  });
  const log = pino({ level }, stream);
  const text = (): string => chunks.join('');
  return {
    log,
    text,
    lines: () =>
      text()
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

/** A PVC cache stand-in: `present` names `namespace/name`s that exist; everything else is absent. */
export class FakePvcCache {
  synced = true;
  hasSynced = true;
  readonly present = new Set<string>();
  lookups = 0;
  constructor(present: string[] = []) {
    for (const pvc of present) this.present.add(pvc);
  }

  state(namespace: string, name: string): PvcState {
    this.lookups += 1;
    if (!this.synced) return 'unknown';
    return this.present.has(`${namespace}/${name}`) ? 'present' : 'absent';
  }
}

/** The audit fields of a refused password change of release dify's PostgreSQL Secret (fixture secret-postgresql-update-password). */
export const PASSWORD_CHANGE_REFUSED = {
  decision: 'denied',
  operation: 'UPDATE',
  namespace: 'dify',
  name: 'dify-postgresql',
  reason: 'PasswordChangeUnderPvc',
  pvc: 'dify/data-dify-postgresql-0',
  dryRun: false,
} as const satisfies Partial<AuditRecord>;

export function captureAudit(): AuditSink & { records: AuditRecord[] } {
  const records: AuditRecord[] = [];
  return {
    records,
    record: (entry) => {
      records.push(entry);
    },
  };
}

export interface StartedServer {
  server: DifyGuardServer;
  port: number;
  healthPort: number;
}

/** buildServer with defaults for what a test does not care about, listening on loopback ports. */
export async function startServer(
  t: TeardownHost,
  options: Partial<ServerOptions> & { tls?: ServerOptions['tls'] },
): Promise<StartedServer> {
  const server = buildServer({
    settings: defaultGuardSettings,
    log: options.log ?? pino({ level: 'silent' }),
    pvcCache: options.pvcCache ?? new FakePvcCache(),
    audit: options.audit ?? captureAudit(),
    ...options,
  });
  t.teardown(() => server.close(2000));
  const ports = await server.listen({ host: '127.0.0.1', port: 0, healthPort: 0 });
  return { server, ...ports };
}

export interface HttpsResponse {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The body parsed as JSON; undefined when it is not JSON (read it with reviewOf or answerOf). */
  json: unknown;
  /** SHA-256 fingerprint of the certificate the server presented on this connection. */
  fingerprint256: string;
  reusedSocket: boolean;
  socket: TLSSocket;
}

export interface HttpsRequestOptions {
  port: number;
  path: string;
  method?: string;
  ca: string | Buffer;
  body?: string | Buffer;
  headers?: Record<string, string | number>;
  agent?: Agent;
  /** Body sent in these pieces (chunked, no Content-Length) when given. */
  chunks?: Buffer[];
}

export function httpsRequest(options: HttpsRequestOptions): Promise<HttpsResponse> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...options.headers };
    if (options.body !== undefined && headers['content-length'] === undefined)
      headers['content-length'] = Buffer.byteLength(options.body);
    const req = request(
      {
        host: '127.0.0.1',
        servername: 'localhost',
        port: options.port,
        path: options.path,
        method: options.method ?? 'POST',
        ca: options.ca,
        headers,
        agent: options.agent ?? false,
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        const fingerprint256 = socket.getPeerCertificate().fingerprint256;
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json,
            fingerprint256,
            reusedSocket: req.reusedSocket,
            socket,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (options.chunks) {
      for (const chunk of options.chunks) req.write(chunk);
      req.end();
    } else {
      req.end(options.body);
    }
  });
}

/** POSTs an AdmissionReview as the API server does. */
export function postReview(
  port: number,
  path: string,
  ca: string | Buffer,
  review: unknown,
  agent?: Agent,
): Promise<HttpsResponse> {
  return httpsRequest({
    port,
    path,
    ca,
    body: JSON.stringify(review),
    headers: { 'content-type': 'application/json' },
    ...(agent ? { agent } : {}),
  });
}

/** A body as the AdmissionReview dify-guard answers with; undefined when it is not one. */
export function reviewOf(json: unknown): AdmissionReviewResponse | undefined {
  return isObject(json) && json.kind === 'AdmissionReview' && isObject(json.response)
    ? (json as unknown as AdmissionReviewResponse)
    : undefined;
}

/** The `response` of an AdmissionReview answer; throws, failing the test, when the body is not one. */
export function answerOf(res: { status: number; json: unknown }): AdmissionReviewResponse['response'] {
  const review = reviewOf(res.json);
  if (!review) throw new Error(`HTTP ${res.status}: the body is not an AdmissionReview`);
  return review.response;
}

/** Given as the value of an edit, removes the field. */
export const REMOVE = Symbol('remove');

/**
 * A copy of `value` with each edit made: `['request.uid', '']` sets a field (its path dotted), `['kind', REMOVE]`
 * removes one. For bodies broken on purpose, whatever their type says.
 */
export function withEdits(value: object, ...edits: [path: string, to: unknown][]): Record<string, unknown> {
  const copy = structuredClone(value) as Record<string, unknown>;
  for (const [path, to] of edits) {
    const keys = path.split('.');
    const last = keys.pop() ?? '';
    let node = copy;
    for (const key of keys) {
      const next = node[key];
      if (!isObject(next)) throw new Error(`withEdits: no object at ${key} of ${path}`);
      node = next;
    }
    if (to === REMOVE) delete node[last];
    else node[last] = to;
  }
  return copy;
}

/** 'connected' or the error code of a TCP connect (ECONNREFUSED once a listener is closed). */
export function connectResult(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}
