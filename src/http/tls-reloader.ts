// The serving certificate, read from files and swapped into the running TLS server when they change.
// Kubernetes updates a Secret volume by replacing a `..data` symlink in the folder, so the folder is
// watched (not the files), with a slow poll as a fallback. A pair that does not load (half written,
// key not matching) leaves the previous one in place. Open connections keep the context they have.
import { createHash, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createSecureContext, type SecureContextOptions, type Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';

export const TLS_MIN_VERSION = 'TLSv1.2' as const;

export type ReloadResult = 'loaded' | 'unchanged' | 'failed';

export interface CertificateReloaderOptions {
  certFile: string;
  keyFile: string;
  log: Logger;
  /** Fallback re-read when no file event arrives (some volume types send none). */
  pollIntervalMs?: number;
  /** Events of one swap arrive in a burst; the pair is read once after it settles. */
  debounceMs?: number;
  onResult?: (result: ReloadResult) => void;
}

/** What is known about the loaded certificate (nothing secret). */
export interface CertificateInfo {
  fingerprint256: string;
  subject: string;
  issuer: string;
  validTo: string;
}

export class CertificateReloader extends EventEmitter<{ loaded: [CertificateInfo] }> {
  private context: SecureContextOptions | undefined;
  private contentHash: string | undefined;
  private failedHash: string | undefined;
  private info: CertificateInfo | undefined;
  private readonly servers = new Set<TlsServer>();
  private watchers: FSWatcher[] = [];
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<ReloadResult> | undefined;
  private rereading: Promise<ReloadResult> | undefined;
  private stopped = false;

  constructor(private readonly options: CertificateReloaderOptions) {
    super();
  }

  get loaded(): boolean {
    return this.context !== undefined;
  }

  get certificate(): CertificateInfo | undefined {
    return this.info;
  }

  /** Options for a TLS server's constructor: TLS 1.2 minimum, and the pair if one is loaded. */
  serverOptions(): SecureContextOptions {
    return { minVersion: TLS_MIN_VERSION, ...this.context };
  }

  /** Keeps a server's secure context in step with the files from now on. */
  attach(server: TlsServer): void {
    this.servers.add(server);
    if (this.context) server.setSecureContext({ minVersion: TLS_MIN_VERSION, ...this.context });
  }

  /** First load (a failure only leaves the reloader not loaded), then watch and poll. */
  async start(): Promise<ReloadResult> {
    this.stopped = false;
    const result = await this.reload();
    this.watchFolders();
    this.pollTimer = setInterval(() => {
      if (this.watchers.length === 0) this.watchFolders();
      void this.reload();
    }, this.options.pollIntervalMs ?? 60_000);
    this.pollTimer.unref();
    return result;
  }

  stop(): void {
    this.stopped = true;
    for (const watcher of this.watchers) watcher.close();
    this.watchers = [];
    clearInterval(this.pollTimer);
    clearTimeout(this.debounceTimer);
  }

  /**
   * Reads the pair and swaps it in if it changed and loads. A call during a read gets one more read
   * after it (the files may have changed since that read began); calls meanwhile share that one.
   */
  reload(): Promise<ReloadResult> {
    if (this.reloading) {
      this.rereading ??= this.reloading.then(() => {
        this.rereading = undefined;
        return this.reload();
      });
      return this.rereading;
    }
    this.reloading = this.readAndSwap().finally(() => {
      this.reloading = undefined;
    });
    return this.reloading;
  }

  private async readAndSwap(): Promise<ReloadResult> {
    const { certFile, log } = this.options;
    const pair = await readPair(certFile, this.options.keyFile);
    if ('problem' in pair) return this.failed(pair.problem, undefined);
    const hash = createHash('sha256').update(pair.cert).update('\0').update(pair.key).digest('hex');
    if (hash === this.contentHash) return 'unchanged';
    const info = certificateInfoOf(pair);
    if ('problem' in info) return this.failed(info.problem, hash);
    if (Date.parse(info.validTo) < Date.now())
      log.warn({ certFile, validTo: info.validTo }, 'the serving certificate has expired');
    this.swapIn(pair, hash, info);
    return 'loaded';
  }

  private swapIn(pair: CertificatePair, hash: string, info: CertificateInfo): void {
    const { cert, key } = pair;
    this.context = { cert, key };
    this.contentHash = hash;
    this.failedHash = undefined;
    this.info = info;
    for (const server of this.servers) server.setSecureContext({ minVersion: TLS_MIN_VERSION, cert, key });
    this.options.log.info(
      { certFile: this.options.certFile, keyFile: this.options.keyFile, ...info },
      'serving certificate loaded',
    );
    this.options.onResult?.('loaded');
    this.emit('loaded', info);
  }

  private failed(problem: string, hash: string | undefined): ReloadResult {
    // The same broken content is reported once, not at every poll.
    if (hash === undefined || hash !== this.failedHash) {
      this.options.log.error(
        { certFile: this.options.certFile, keyFile: this.options.keyFile, problem, keptPrevious: this.loaded },
        this.loaded
          ? 'new serving certificate rejected; the previous one stays in use'
          : 'no serving certificate could be loaded',
      );
      this.options.onResult?.('failed');
    }
    if (hash !== undefined) this.failedHash = hash;
    return 'failed';
  }

  private watchFolders(): void {
    if (this.stopped) return;
    const folders = new Set([dirname(this.options.certFile), dirname(this.options.keyFile)]);
    for (const folder of folders) {
      try {
        const watcher = watch(folder, { persistent: false }, () => this.scheduleReload());
        watcher.on('error', (error) => {
          this.options.log.warn(
            { folder, code: (error as NodeJS.ErrnoException).code },
            'certificate folder watch failed; polling continues',
          );
          watcher.close();
          this.watchers = this.watchers.filter((w) => w !== watcher);
        });
        this.watchers.push(watcher);
      } catch (error) {
        this.options.log.warn(
          { folder, code: (error as NodeJS.ErrnoException).code },
          'cannot watch the certificate folder; polling instead',
        );
      }
    }
  }

  private scheduleReload(): void {
    if (this.stopped) return;
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.reload(), this.options.debounceMs ?? 200);
    this.debounceTimer.unref();
  }
}

interface CertificatePair {
  cert: Buffer;
  key: Buffer;
}

async function readPair(certFile: string, keyFile: string): Promise<CertificatePair | { problem: string }> {
  try {
    const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
    return { cert, key };
  } catch (error) {
    return { problem: `cannot read the certificate files: ${(error as NodeJS.ErrnoException).code ?? 'error'}` };
  }
}

/** What the pair's certificate says, when the pair loads; else the problem. */
function certificateInfoOf({ cert, key }: CertificatePair): CertificateInfo | { problem: string } {
  try {
    // Throws on a broken PEM or on a key that does not belong to the certificate.
    createSecureContext({ cert, key, minVersion: TLS_MIN_VERSION });
    const x509 = new X509Certificate(cert);
    return { fingerprint256: x509.fingerprint256, subject: x509.subject, issuer: x509.issuer, validTo: x509.validTo };
  } catch (error) {
    // OpenSSL's reason (e.g. "key values mismatch") names the problem; it never quotes key material.
    return { problem: `the certificate and key do not load: ${String((error as Error).message).split('\n')[0]}` };
  }
}
