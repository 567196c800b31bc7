// The part of autocannon's API the bench uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events';
  import type { ConnectionOptions } from 'node:tls';

  export interface Options {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    connections?: number;
    pipelining?: number;
    /** Seconds. */
    duration?: number;
    overallRate?: number;
    /** Seconds. */
    timeout?: number;
    /** A response body for which this returns false counts as a mismatch. */
    verifyBody?: (body: string) => boolean;
    tlsOptions?: ConnectionOptions;
  }

  export interface Result {
    errors: number;
    timeouts: number;
    mismatches: number;
    non2xx: number;
    requests: { total: number; sent: number };
  }

  export interface Instance extends EventEmitter {
    stop(): void;
    /** `response`: (client, statusCode, bytes, responseTimeMs). */
    on(
      event: 'response',
      listener: (client: unknown, statusCode: number, bytes: number, responseTimeMs: number) => void,
    ): this;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }

  export default function autocannon(
    options: Options,
    callback: (error: Error | null, result: Result) => void,
  ): Instance;
}
