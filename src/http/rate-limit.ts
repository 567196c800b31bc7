// Per-Secret token buckets for database checks: without a limit, anyone allowed to update the Secret could use
// dify-guard to test password guesses against PostgreSQL. In memory, per replica; the clock is injected for tests.

export type LimitAnswer = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export interface RateLimiterOptions {
  /** Attempts per key per minute; also the burst (a full bucket). */
  perMinute: number;
  now?: () => number;
  /** Buckets kept before full ones are dropped (a full bucket is the same as none). */
  maxKeys?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(private readonly options: RateLimiterOptions) {
    this.perMs = options.perMinute / 60_000;
    this.now = options.now ?? Date.now;
    this.maxKeys = options.maxKeys ?? 10_000;
  }

  get perMinute(): number {
    return this.options.perMinute;
  }

  /** Takes one attempt for `key` if its bucket has one; else says when the next one will be there. */
  take(key: string): LimitAnswer {
    const now = this.now();
    const tokens = this.tokensAt(this.buckets.get(key), now);
    if (tokens >= 1) {
      this.buckets.set(key, { tokens: tokens - 1, at: now });
      if (this.buckets.size > this.maxKeys) this.dropFull(now);
      return { allowed: true };
    }
    this.buckets.set(key, { tokens, at: now });
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - tokens) / this.perMs / 1000)) };
  }

  private tokensAt(bucket: Bucket | undefined, now: number): number {
    if (!bucket) return this.options.perMinute;
    return Math.min(this.options.perMinute, bucket.tokens + Math.max(0, now - bucket.at) * this.perMs);
  }

  private dropFull(now: number): void {
    for (const [key, bucket] of this.buckets) {
      if (this.tokensAt(bucket, now) >= this.options.perMinute) this.buckets.delete(key);
    }
  }
}
