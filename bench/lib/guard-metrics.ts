// dify-guard's own request-duration histogram (GET /metrics on its health port), read before and
// after a run: the time from receiving an AdmissionReview to answering it, as the server sees it.
// A cross-check of the client's latencies that a stalled load generator cannot inflate (but
// that leaves out TLS and HTTP parsing in Node's core). Buckets are coarse: percentiles are
// interpolated within a bucket, as Prometheus' histogram_quantile does.
import { METRIC_NAMES } from '../../src/metrics.js';

/** Upper bound (seconds, Infinity for +Inf) -> cumulative count, for one route. */
export type Buckets = Map<number, number>;

export interface ServerSideLatency {
  count: number;
  p50Ms: number;
  p99Ms: number;
  /** Share of requests answered within 5 ms (the 5 ms bucket). */
  within5ms: number;
}

export async function scrapeBuckets(healthPort: number, route: string): Promise<Buckets> {
  const text = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
  const buckets: Buckets = new Map();
  const prefix = `${METRIC_NAMES.requestDuration}_bucket{`;
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const labels = line.slice(prefix.length, line.indexOf('}'));
    if (!labels.includes(`route="${route}"`)) continue;
    const le = /le="([^"]+)"/.exec(labels)?.[1];
    if (!le) continue;
    const bound = le === '+Inf' ? Infinity : Number(le);
    buckets.set(bound, (buckets.get(bound) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return buckets;
}

function quantile(sorted: [number, number][], total: number, q: number): number {
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [bound, count] of sorted) {
    if (count >= rank) {
      if (!Number.isFinite(bound)) return lowerBound * 1000;
      const inBucket = count - lowerCount;
      return (lowerBound + (bound - lowerBound) * (inBucket > 0 ? (rank - lowerCount) / inBucket : 0)) * 1000;
    }
    lowerBound = bound;
    lowerCount = count;
  }
  return lowerBound * 1000;
}

export function serverSideLatency(before: Buckets, after: Buckets): ServerSideLatency {
  const delta: [number, number][] = [...after.entries()]
    .map(([bound, count]) => [bound, count - (before.get(bound) ?? 0)] as [number, number])
    .sort((a, b) => a[0] - b[0]);
  const total = delta.find(([bound]) => !Number.isFinite(bound))?.[1] ?? 0;
  if (total === 0) return { count: 0, p50Ms: 0, p99Ms: 0, within5ms: 0 };
  const within = delta.find(([bound]) => bound === 0.005)?.[1] ?? 0;
  return {
    count: total,
    p50Ms: Math.round(quantile(delta, total, 0.5) * 1000) / 1000,
    p99Ms: Math.round(quantile(delta, total, 0.99) * 1000) / 1000,
    within5ms: within / total,
  };
}
