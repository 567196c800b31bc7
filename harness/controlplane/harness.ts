// A real etcd and kube-apiserver on loopback, started the way controller-runtime's envtest starts
// them (no kubelet, no controllers), with an audit log the tests read. One per test file.
import { mkdtempSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { binary } from '../binaries.js';
import { helmEnv } from '../helm-env.js';
import { run, runOk, waitFor, type CommandResult, type RunOptions } from '../commands.js';
import { reservePorts, type ReservedPort } from '../ports.js';
import { ManagedProcess, trackTempDir, type TeardownHost } from '../processes.js';
import { KubeRest } from '../kube-rest.js';
import { generateControlPlanePki, issueClientCert, type ControlPlanePki } from './pki.js';

/** The parts of an audit.k8s.io/v1 Event the tests look at. */
export interface AuditEvent {
  auditID: string;
  stage: string;
  verb: string;
  requestURI: string;
  user: { username: string; groups?: string[] };
  objectRef?: { resource?: string; namespace?: string; name?: string; apiGroup?: string; subresource?: string };
  responseStatus?: { code?: number; message?: string; reason?: string; status?: string };
  annotations?: Record<string, string>;
}

// Metadata for Secrets (every verb), and for every write elsewhere; reads, health probes and the
// API server's own loopback client are left out so the log stays small enough to scan.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:apiserver"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi*", "/api", "/apis", "/api/*", "/apis/*"]
  - level: Metadata
    resources: [{ group: "", resources: ["secrets"] }]
  - level: None
    verbs: ["get", "list", "watch"]
  - level: Metadata
`;

function kubeconfigYaml(server: string, pki: ControlPlanePki): string {
  return `apiVersion: v1
kind: Config
clusters:
  - name: dify-guard-test
    cluster:
      server: ${server}
      certificate-authority: ${pki.serving.caFile}
users:
  - name: admin
    user:
      client-certificate: ${pki.adminCertFile}
      client-key: ${pki.adminKeyFile}
contexts:
  - name: dify-guard-test
    context: { cluster: dify-guard-test, user: admin, namespace: default }
current-context: dify-guard-test
`;
}

function probe(
  url: string,
  tls?: { ca: Buffer; cert: Buffer; key: Buffer },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith('https:') ? request : httpRequest;
    const req = send(url, { method: 'GET', timeout: 2000, ...(tls ?? {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

export interface ControlPlaneOptions {
  /** Prefix of the temporary folder, to tell test files apart when DIFY_GUARD_KEEP_TMP=1. */
  name?: string;
  /**
   * Keeps the ServiceAccount admission plugin on, as on a real cluster: only where a controller
   * manager creates each namespace's service accounts (harness/controlplane/cluster.ts).
   */
  serviceAccountAdmission?: boolean;
  /** More kube-apiserver flags, given the certificates (each flag given once: none of the harness's own). */
  apiServerArgs?: (pki: ControlPlanePki) => string[];
}

export class ControlPlane {
  readonly dir: string;
  readonly pki: ControlPlanePki;
  readonly kubeconfigPath: string;
  readonly auditLogPath: string;
  readonly server: string;
  readonly etcdUrl: string;
  readonly etcd: ManagedProcess;
  readonly apiServer: ManagedProcess;
  private readonly ports: ReservedPort[];
  private readonly tmp: { release(): void };
  private stopped = false;

  private constructor(dir: string, tmp: { release(): void }, ports: ReservedPort[], options: ControlPlaneOptions) {
    this.dir = dir;
    this.tmp = tmp;
    this.ports = ports;
    const [etcdClient, etcdPeer, secure] = ports.map((p) => p.port) as [number, number, number];
    this.pki = generateControlPlanePki(join(dir, 'pki'));
    this.etcdUrl = `http://127.0.0.1:${etcdClient}`;
    this.server = `https://127.0.0.1:${secure}`;
    this.kubeconfigPath = join(dir, 'kubeconfig');
    this.auditLogPath = join(dir, 'audit.log');
    writeFileSync(this.kubeconfigPath, kubeconfigYaml(this.server, this.pki), { mode: 0o600 });
    const auditPolicyPath = join(dir, 'audit-policy.yaml');
    writeFileSync(auditPolicyPath, auditPolicy);
    const peer = `http://127.0.0.1:${etcdPeer}`;
    this.etcd = new ManagedProcess({
      name: 'etcd',
      dir,
      command: binary('etcd'),
      args: [
        '--name=test',
        `--data-dir=${join(dir, 'etcd-data')}`,
        `--listen-client-urls=${this.etcdUrl}`,
        `--advertise-client-urls=${this.etcdUrl}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=test=${peer}`,
        '--unsafe-no-fsync=true',
        '--log-level=warn',
      ],
    });
    this.apiServer = new ManagedProcess({
      name: 'kube-apiserver',
      dir,
      command: binary('kube-apiserver'),
      args: [
        `--etcd-servers=${this.etcdUrl}`,
        `--tls-cert-file=${this.pki.serving.certFile}`,
        `--tls-private-key-file=${this.pki.serving.keyFile}`,
        `--secure-port=${secure}`,
        '--bind-address=127.0.0.1',
        // Advertising loopback works on a machine without a default route; loopback is not a valid
        // Endpoints address, so the endpoint reconciler is off (the "kubernetes" Service has none).
        '--advertise-address=127.0.0.1',
        '--endpoint-reconciler-type=none',
        '--service-cluster-ip-range=10.0.0.0/24',
        '--allow-privileged=true',
        ...(options.serviceAccountAdmission ? [] : ['--disable-admission-plugins=ServiceAccount']),
        '--authorization-mode=RBAC',
        `--service-account-issuer=${this.server}/`,
        `--service-account-key-file=${this.pki.serviceAccountPublicKeyFile}`,
        `--service-account-signing-key-file=${this.pki.serviceAccountKeyFile}`,
        `--client-ca-file=${this.pki.clientCaFile}`,
        `--audit-policy-file=${auditPolicyPath}`,
        `--audit-log-path=${this.auditLogPath}`,
        '--audit-log-mode=blocking',
        ...(options.apiServerArgs?.(this.pki) ?? []),
      ],
    });
  }

  static async start(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
    const dir = mkdtempSync(join(tmpdir(), `dify-guard-${options.name ?? 'cp'}-`));
    const tmp = trackTempDir(dir);
    const ports = await reservePorts(3);
    let cp: ControlPlane | undefined;
    try {
      cp = new ControlPlane(dir, tmp, ports, options);
      await cp.startEtcd();
      await cp.startApiServer();
      return cp;
    } catch (err) {
      if (cp) await cp.stop();
      else {
        for (const p of ports) p.release();
        tmp.release();
      }
      throw err;
    }
  }

  async startEtcd(): Promise<void> {
    await this.etcd.startUntilReady(
      'etcd /health',
      async () => {
        const r = await probe(`${this.etcdUrl}/health`);
        return r.status === 200 && /"health":"true"/.test(r.body);
      },
      { timeoutMs: 30_000 },
    );
  }

  async stopEtcd(): Promise<void> {
    await this.etcd.stop();
  }

  async startApiServer(): Promise<void> {
    const tls = {
      ca: readFileSync(this.pki.serving.caFile),
      cert: readFileSync(this.pki.adminCertFile),
      key: readFileSync(this.pki.adminKeyFile),
    };
    await this.apiServer.startUntilReady(
      'kube-apiserver /readyz',
      async () => (await probe(`${this.server}/readyz`, tls)).status === 200,
      { timeoutMs: 90_000, intervalMs: 200 },
    );
  }

  async stopApiServer(): Promise<void> {
    await this.apiServer.stop();
  }

  /** Stops and starts kube-apiserver on the same port with the same etcd data, as a restart in a cluster would. */
  async restartApiServer(): Promise<void> {
    await this.stopApiServer();
    await this.startApiServer();
  }

  /** A fresh client-node KubeConfig for the admin user. */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromFile(this.kubeconfigPath);
    return kc;
  }

  /** A raw JSON client as admin (system:masters), or as another user signed by the client CA. */
  rest(user?: { name: string; groups: string[] }): KubeRest {
    const cert = user
      ? issueClientCert(join(this.dir, 'pki'), user.name, user.groups)
      : { certFile: this.pki.adminCertFile, keyFile: this.pki.adminKeyFile };
    return new KubeRest(this.server, {
      ca: readFileSync(this.pki.serving.caFile),
      cert: readFileSync(cert.certFile),
      key: readFileSync(cert.keyFile),
    });
  }

  /** A kubeconfig file for another user signed by the client CA (a controller's own identity); returns its path. */
  kubeconfigFor(user: string, groups: string[] = []): string {
    const cert = issueClientCert(join(this.dir, 'pki'), user, groups);
    const path = join(this.dir, `${user.replace(/[^a-z0-9-]/gi, '_')}.kubeconfig`);
    const pki = { ...this.pki, adminCertFile: cert.certFile, adminKeyFile: cert.keyFile };
    writeFileSync(path, kubeconfigYaml(this.server, pki), { mode: 0o600 });
    return path;
  }

  /** The environment for kubectl, helm or dify-guard to reach this API server as admin. */
  env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return helmEnv(this.dir, { KUBECONFIG: this.kubeconfigPath, HOME: this.dir, ...extra });
  }

  kubectl(args: string[], options: RunOptions = {}): Promise<CommandResult> {
    return run(binary('kubectl'), args, { env: this.env(), ...options });
  }

  helm(args: string[], options: RunOptions = {}): Promise<CommandResult> {
    return runOk(binary('helm'), args, { env: this.env(), ...options });
  }

  /** Every audit event written so far (the log is written synchronously: --audit-log-mode=blocking). */
  auditEvents(): AuditEvent[] {
    if (!existsSync(this.auditLogPath)) return [];
    return readFileSync(this.auditLogPath, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as AuditEvent);
  }

  /** Waits for an audit event (ResponseComplete is written once the response has gone out). */
  waitForAuditEvent(what: string, match: (e: AuditEvent) => boolean, timeoutMs = 15_000): Promise<AuditEvent> {
    return waitFor(`audit event: ${what}`, () => this.auditEvents().find(match), { timeoutMs, intervalMs: 100 });
  }

  /** The ResponseComplete audit event of one request, by the Audit-Id header of its response. */
  auditEventOf(auditId: string, timeoutMs = 15_000): Promise<AuditEvent> {
    if (!auditId) throw new Error('the response carried no Audit-Id header');
    return this.waitForAuditEvent(
      `auditID ${auditId}`,
      (e) => e.auditID === auditId && e.stage === 'ResponseComplete',
      timeoutMs,
    );
  }

  /** The last lines of each process's output, for a failing test's report. */
  diagnostics(lines = 30): string {
    return [this.etcd, this.apiServer].map((p) => `--- ${p.name} (${p.logPath})\n${p.tail(lines)}`).join('\n');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.apiServer.stop(5_000);
    await this.etcd.stop(5_000);
    for (const p of this.ports) p.release();
    this.tmp.release();
  }
}

/** Starts a control plane for one test file and stops it in the file's teardown. */
export async function startControlPlane(t: TeardownHost, options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const cp = await ControlPlane.start(options);
  t.teardown(() => cp.stop());
  return cp;
}
