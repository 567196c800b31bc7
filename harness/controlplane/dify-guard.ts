// The real dify-guard process (src/main.ts, the image's entrypoint) run against a test control plane:
// HTTPS with a certificate from certs/generate.sh, KUBECONFIG of the harness, JSON log lines kept
// in a file the tests read.
import { readFileSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { CONFIG_FILE_ENV, SETTINGS } from '../../src/config.js';
import { repoRoot } from '../binaries.js';
import { waitFor } from '../commands.js';
import { reservePorts, type ReservedPort } from '../ports.js';
import { ManagedProcess } from '../processes.js';
import type { ControlPlane } from './harness.js';
import type { TeardownHost } from '../processes.js';
import { generateServingCert, type ServingCert } from './pki.js';

export type JsonLine = { [key: string]: unknown };

export interface DifyGuardOptions {
  /** Extra DIFY_GUARD_* settings (the chart's Deployment sets the same variables). */
  env?: Record<string, string>;
  /**
   * 'source' runs src/main.ts through the TypeScript loader tap itself uses (no build step);
   * 'dist' runs `node dist/src/main.js` as the image does (needs `npm run build`).
   * Default: DIFY_GUARD_ENTRY, else 'source'.
   */
  entry?: 'source' | 'dist';
}

function healthGet(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** node's arguments for src/main.ts ('source', through tap's TypeScript loader) or dist/src/main.js ('dist'). */
export function guardArgs(entry?: 'source' | 'dist'): string[] {
  const chosen = entry ?? (process.env.DIFY_GUARD_ENTRY === 'dist' ? 'dist' : 'source');
  const args =
    chosen === 'dist'
      ? [join(repoRoot, 'dist/src/main.js')]
      : ['--import', '@tapjs/typescript/import', join(repoRoot, 'src/main.ts')];
  if (chosen === 'dist' && !existsSync(args[0] as string))
    throw new Error('dist/src/main.js is missing: run `npm run build` first');
  return args;
}

/** This process's environment without any dify-guard setting: settings come only from the test, never the calling shell. */
export function guardBaseEnv(): NodeJS.ProcessEnv {
  const ours = new Set(Object.values(SETTINGS).map((s) => s.env));
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !ours.has(k) && k !== CONFIG_FILE_ENV),
  );
  return { ...inherited, TS_NODE_TRANSPILE_ONLY: '1', TS_NODE_PROJECT: join(repoRoot, 'tsconfig.json') };
}

export class DifyGuard {
  readonly certs: ServingCert;
  readonly port: number;
  readonly healthPort: number;
  readonly process: ManagedProcess;
  private readonly ports: ReservedPort[];
  private stopped = false;

  private constructor(
    readonly cp: ControlPlane,
    ports: ReservedPort[],
    options: DifyGuardOptions,
  ) {
    this.ports = ports;
    const [port, healthPort] = ports.map((p) => p.port) as [number, number];
    this.port = port;
    this.healthPort = healthPort;
    this.certs = generateServingCert(join(cp.dir, 'dify-guard-tls'), 'dify-guard', 'dify');
    this.process = new ManagedProcess({
      name: 'dify-guard',
      dir: cp.dir,
      cwd: repoRoot,
      command: process.execPath,
      args: guardArgs(options.entry),
      env: {
        ...guardBaseEnv(),
        KUBECONFIG: cp.kubeconfigPath,
        [SETTINGS.port.env]: String(port),
        [SETTINGS.healthPort.env]: String(healthPort),
        [SETTINGS.bindAddress.env]: '127.0.0.1',
        [SETTINGS.tlsCertFile.env]: this.certs.certFile,
        [SETTINGS.tlsKeyFile.env]: this.certs.keyFile,
        [SETTINGS.logLevel.env]: 'info',
        [SETTINGS.shutdownTimeoutSeconds.env]: '5',
        // The delay lets a Service stop routing to a terminating pod; the API server here calls the URL directly.
        [SETTINGS.shutdownDelaySeconds.env]: '0',
        ...options.env,
      },
    });
  }

  static async start(cp: ControlPlane, options: DifyGuardOptions = {}): Promise<DifyGuard> {
    const ports = await reservePorts(2);
    const guard = new DifyGuard(cp, ports, options);
    try {
      await guard.start();
    } catch (err) {
      await guard.stop();
      throw err;
    }
    return guard;
  }

  /** The URL the API server calls for a webhook path, e.g. `/mutate/pods`. */
  url(path: string): string {
    return `https://127.0.0.1:${this.port}${path}`;
  }

  /** The CA that signed the serving certificate, base64, as a webhook's clientConfig.caBundle. */
  get caBundle(): string {
    return readFileSync(this.certs.caFile).toString('base64');
  }

  /** Starts the process and waits for /readyz (which waits for the PVC cache to sync). */
  async start(): Promise<void> {
    await this.process.startUntilReady(
      'dify-guard /readyz',
      async () => (await healthGet(this.healthPort, '/readyz')) === 200,
      { timeoutMs: 60_000, intervalMs: 150 },
    );
  }

  /** SIGTERM (graceful shutdown), as Kubernetes stops a pod. */
  async stopProcess(): Promise<void> {
    await this.process.stop(15_000);
  }

  /**
   * POSTs an AdmissionReview straight to the webhook over HTTPS (verifying its certificate against
   * the CA), as an API server would; for moments when no API server is up to send it.
   */
  review(path: string, admissionRequest: JsonLine): Promise<JsonLine> {
    const body = JSON.stringify({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: admissionRequest,
    });
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: this.port,
          path,
          method: 'POST',
          ca: readFileSync(this.certs.caFile),
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
          timeout: 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode !== 200) {
              reject(new Error(`POST ${path}: ${res.statusCode} ${text}`));
              return;
            }
            resolve((JSON.parse(text) as { response: JsonLine }).response);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`POST ${path} timed out`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** GET on the plain-HTTP health port: /healthz, /readyz or /metrics. */
  health(path: string): Promise<number> {
    return healthGet(this.healthPort, path);
  }

  /** The value of one unlabelled gauge from /metrics (e.g. dify_guard_pvc_cache_synced). */
  async gauge(name: string): Promise<number | undefined> {
    const text = await (await fetch(`http://127.0.0.1:${this.healthPort}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.slice(name.length + 1));
  }

  /** Every JSON line dify-guard has written so far (non-JSON output is skipped). */
  logLines(): JsonLine[] {
    const lines: JsonLine[] = [];
    for (const line of this.process.log().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        lines.push(JSON.parse(line) as JsonLine);
      } catch {
        /* a line cut by a crash */
      }
    }
    return lines;
  }

  waitForLog(what: string, match: (line: JsonLine) => boolean, timeoutMs = 15_000): Promise<JsonLine> {
    return waitFor(`dify-guard log line: ${what}`, () => this.logLines().find(match), { timeoutMs });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.process.stop(15_000);
    for (const p of this.ports) p.release();
  }
}

/** Starts dify-guard for one test file and stops it in the file's teardown. */
export async function startDifyGuard(
  t: TeardownHost,
  cp: ControlPlane,
  options: DifyGuardOptions = {},
): Promise<DifyGuard> {
  const guard = await DifyGuard.start(cp, options);
  t.teardown(() => guard.stop());
  return guard;
}
