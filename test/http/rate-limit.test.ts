// The per-Secret limit on database checks (a token bucket): the burst, the refill, when to retry, keys apart.
import t from 'tap';
import { RateLimiter } from '../../src/http/rate-limit.js';

t.test('3 per minute: a burst of 3, then refused with when to retry; one more every 20 s', async (t) => {
  let now = 1_000_000;
  const limiter = new RateLimiter({ perMinute: 3, now: () => now });
  for (let i = 0; i < 3; i += 1) t.same(limiter.take('dify/dify-postgresql'), { allowed: true }, `attempt ${i + 1}`);
  t.same(
    limiter.take('dify/dify-postgresql'),
    { allowed: false, retryAfterSeconds: 20 },
    'the fourth waits for a token',
  );
  now += 5_000;
  t.same(limiter.take('dify/dify-postgresql'), { allowed: false, retryAfterSeconds: 15 }, 'a refusal takes nothing');
  now += 15_000;
  t.same(limiter.take('dify/dify-postgresql'), { allowed: true }, 'one token back after 20 s');
  t.same(limiter.take('dify/dify-postgresql'), { allowed: false, retryAfterSeconds: 20 });
  now += 600_000;
  for (let i = 0; i < 3; i += 1)
    t.same(limiter.take('dify/dify-postgresql'), { allowed: true }, 'full again, never more than 3');
  t.equal(limiter.take('dify/dify-postgresql').allowed, false);
});

t.test('each Secret has its own bucket; full buckets are dropped past maxKeys', async (t) => {
  let now = 0;
  const limiter = new RateLimiter({ perMinute: 1, now: () => now, maxKeys: 2 });
  t.equal(limiter.take('a/dify-postgresql').allowed, true);
  t.equal(limiter.take('b/dify-postgresql').allowed, true, 'another namespace: another bucket');
  t.equal(limiter.take('a/dify-postgresql').allowed, false);
  now += 60_000;
  t.equal(limiter.take('c/dify-postgresql').allowed, true, 'a third key drops the refilled ones');
  t.equal(limiter.take('c/dify-postgresql').allowed, false, 'the new key keeps its state');
  t.equal(limiter.take('a/dify-postgresql').allowed, true, 'a dropped bucket was full anyway');
});
