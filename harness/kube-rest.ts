// A raw JSON client for the API server: objects travel as plain JSON (no typed model drops a field),
// every patch type can be sent, and the response's Warning headers are kept for assertions.
import { request } from 'node:https';
import type { Json } from './manifests.js';

export type { Json };

export interface KubeResponse {
  status: number;
  body: Json;
  /** The texts of the `Warning: 299 - "..."` headers, in order. */
  warnings: string[];
  /** The API server's Audit-Id header: the auditID of this request's audit events. */
  auditId: string;
}

export interface KubeRequest {
  body?: unknown;
  contentType?: string;
  query?: Record<string, string>;
}

export const PATCH = {
  json: 'application/json-patch+json',
  merge: 'application/merge-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  apply: 'application/apply-patch+yaml',
} as const;

function parseWarning(value: string): string {
  // RFC 7234 warn-value: 299 - "text" (quotes and backslashes escaped with a backslash).
  const m = /^\d{3} \S+ "((?:[^"\\]|\\.)*)"/.exec(value);
  return m?.[1] ? m[1].replace(/\\(.)/g, '$1') : value;
}

export class KubeRest {
  constructor(
    readonly server: string,
    private readonly tls: { ca: Buffer; cert: Buffer; key: Buffer },
  ) {}

  request(method: string, path: string, { body, contentType, query }: KubeRequest = {}): Promise<KubeResponse> {
    const url = new URL(path, this.server);
    for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, v);
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          ...this.tls,
          timeout: 30_000,
          headers: {
            accept: 'application/json',
            ...(payload !== undefined
              ? { 'content-type': contentType ?? 'application/json', 'content-length': Buffer.byteLength(payload) }
              : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const warnings: string[] = [];
            for (let i = 0; i < res.rawHeaders.length; i += 2) {
              if (res.rawHeaders[i]?.toLowerCase() === 'warning')
                warnings.push(parseWarning(res.rawHeaders[i + 1] ?? ''));
            }
            let parsed: Json;
            try {
              parsed = text ? (JSON.parse(text) as Json) : {};
            } catch {
              parsed = { raw: text };
            }
            const auditId = res.headers['audit-id'];
            resolve({
              status: res.statusCode ?? 0,
              body: parsed,
              warnings,
              auditId: typeof auditId === 'string' ? auditId : '',
            });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${url.pathname} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  get(path: string): Promise<KubeResponse> {
    return this.request('GET', path);
  }
  create(path: string, body: unknown, query?: Record<string, string>): Promise<KubeResponse> {
    return this.request('POST', path, { body, ...(query ? { query } : {}) });
  }
  replace(path: string, body: unknown, query?: Record<string, string>): Promise<KubeResponse> {
    return this.request('PUT', path, { body, ...(query ? { query } : {}) });
  }
  patch(path: string, type: keyof typeof PATCH, body: unknown, query?: Record<string, string>): Promise<KubeResponse> {
    return this.request('PATCH', path, { body, contentType: PATCH[type], ...(query ? { query } : {}) });
  }
  delete(path: string, query?: Record<string, string>): Promise<KubeResponse> {
    return this.request('DELETE', path, query ? { query } : {});
  }

  /** Like `request`, but anything other than 2xx is an error carrying the API server's message. */
  async ok(method: string, path: string, req: KubeRequest = {}): Promise<Json> {
    const res = await this.request(method, path, req);
    if (res.status < 200 || res.status > 299) {
      throw new Error(`${method} ${path}: ${res.status} ${String(res.body.message ?? JSON.stringify(res.body))}`);
    }
    return res.body;
  }
}

/** REST paths of the core objects the tests use. */
export const paths = {
  namespaces: '/api/v1/namespaces',
  namespace: (ns: string) => `/api/v1/namespaces/${ns}`,
  pods: (ns: string) => `/api/v1/namespaces/${ns}/pods`,
  pod: (ns: string, name: string) => `/api/v1/namespaces/${ns}/pods/${name}`,
  secrets: (ns: string) => `/api/v1/namespaces/${ns}/secrets`,
  secret: (ns: string, name: string) => `/api/v1/namespaces/${ns}/secrets/${name}`,
  pvcs: (ns: string) => `/api/v1/namespaces/${ns}/persistentvolumeclaims`,
  pvc: (ns: string, name: string) => `/api/v1/namespaces/${ns}/persistentvolumeclaims/${name}`,
  events: (ns: string) => `/api/v1/namespaces/${ns}/events`,
};
