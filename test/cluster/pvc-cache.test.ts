// The PVC cache with the list/watch layer injected, for the faults a real API server does not produce
// on demand: a 410 Gone, a broken stream, a list that never answers. (pvc-cache.apiserver.test.ts
// runs it against a real kube-apiserver.)
import t from 'tap';
import type { KubernetesListObject, V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { PvcCache, PVC_WATCH_PATH, type PvcListWatchSource } from '../../src/cluster/pvc-cache.js';
import { captureLog } from '../server/support.js';
import { eventually } from '../../harness/commands.js';
import type { TeardownHost } from '../../harness/processes.js';

type Pvc = V1PersistentVolumeClaim;
type WatchCallback = (phase: string, object: unknown) => void;

interface OpenWatch {
  path: string;
  params: Record<string, unknown>;
  send: WatchCallback;
  done: (error: unknown) => void;
  aborted: boolean;
}

const pvc = (namespace: string, name: string, resourceVersion = '1'): Pvc => ({
  metadata: { namespace, name, resourceVersion },
});

/** A scripted API server: lists answer from `pvcs` (or with `listFault`), watches stay open until told. */
class ScriptedSource implements PvcListWatchSource {
  pvcs: Pvc[] = [];
  resourceVersion = 100;
  listCalls = 0;
  listFault: (() => Promise<never>) | undefined;
  readonly watches: OpenWatch[] = [];

  list(): Promise<KubernetesListObject<Pvc>> {
    this.listCalls += 1;
    if (this.listFault) return this.listFault();
    return Promise.resolve({
      metadata: { resourceVersion: String(this.resourceVersion) },
      items: structuredClone(this.pvcs),
    });
  }

  readonly watch = {
    watch: async (
      path: string,
      params: Record<string, unknown>,
      send: WatchCallback,
      done: (error: unknown) => void,
    ): Promise<AbortController> => {
      const controller = new AbortController();
      const open: OpenWatch = { path, params, send, done, aborted: false };
      let finished = false;
      // Like the client's Watch: `done` is called once, also when the caller aborts.
      open.done = (error) => {
        if (!finished) {
          finished = true;
          done(error);
        }
      };
      controller.signal.addEventListener('abort', () => {
        open.aborted = true;
        open.done(new DOMException('This operation was aborted', 'AbortError'));
      });
      this.watches.push(open);
      return controller;
    },
  };

  get current(): OpenWatch {
    const open = this.watches.filter((w) => !w.aborted).at(-1);
    if (!open) throw new Error('no open watch');
    return open;
  }

  /** Makes every list wait until the returned function is called (a list that has not answered yet). */
  holdLists(): () => void {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const list = this.list.bind(this);
    this.list = async () => {
      await gate;
      return list();
    };
    return release;
  }

  openWatches(): number {
    return this.watches.filter((w) => !w.aborted).length;
  }
}

function makeCache(
  t: TeardownHost,
  source: ScriptedSource,
  options: Partial<ConstructorParameters<typeof PvcCache>[0]> = {},
) {
  const captured = captureLog();
  const cache = new PvcCache({
    source,
    log: captured.log,
    backoff: { initialMs: 10, maxMs: 40 },
    resyncIntervalMs: 3_600_000,
    ...options,
  });
  t.teardown(() => cache.stop());
  return { cache, captured };
}

/** A cache started on `source`, its first list served and its watch open. */
async function watchingCache(
  t: TeardownHost,
  source: ScriptedSource,
  options: Partial<ConstructorParameters<typeof PvcCache>[0]> = {},
) {
  const made = makeCache(t, source, options);
  made.cache.start();
  await made.cache.whenSynced();
  await eventually('the watch to open', () => source.openWatches() === 1);
  return made;
}

t.test('unknown until the first list, then answers from memory only', async (t) => {
  const source = new ScriptedSource();
  source.pvcs = [pvc('dify', 'data-dify-postgresql-0')];
  const release = source.holdLists();
  const { cache } = makeCache(t, source);
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'unknown', 'before start');
  cache.start();
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'unknown', 'while listing');
  t.equal(cache.synced, false);
  t.equal(cache.lastSyncTime, undefined);
  release();
  await cache.whenSynced();
  t.equal(cache.synced, true);
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'present');
  t.equal(cache.state('dify', 'data-other-postgresql-0'), 'absent');
  t.equal(cache.state('other', 'data-dify-postgresql-0'), 'absent', 'namespaces are kept apart');
  t.ok(cache.lastSyncTime instanceof Date);
  await eventually('the watch to open', () => source.watches.length === 1);
  t.equal(source.current.path, PVC_WATCH_PATH, 'cluster-wide PVC watch');
  t.equal(source.current.params.resourceVersion, '100', 'the watch resumes from the list');
  for (let i = 0; i < 1000; i++) cache.state('dify', `pvc-${i}`);
  t.equal(source.listCalls, 1, 'lookups make no API call');
  t.equal(source.watches.length, 1);
});

t.test('watch events keep the cache current', async (t) => {
  const source = new ScriptedSource();
  const { cache } = await watchingCache(t, source);
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'absent');
  source.current.send('ADDED', pvc('dify', 'data-dify-postgresql-0', '101'));
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'present');
  source.current.send('MODIFIED', pvc('dify', 'data-dify-postgresql-0', '102'));
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'present');
  source.current.send('DELETED', pvc('dify', 'data-dify-postgresql-0', '103'));
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'absent');
});

t.test('a broken watch: unknown from the error until a relist succeeds', async (t) => {
  const source = new ScriptedSource();
  source.pvcs = [pvc('dify', 'data-dify-postgresql-0')];
  const restarts: number[] = [];
  const { cache, captured } = await watchingCache(t, source, { onRestart: () => restarts.push(Date.now()) });

  // Fail closed for longer than one backoff: lists keep failing until released.
  source.listFault = () =>
    Promise.reject(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6443'), { code: 'ECONNREFUSED' }));
  source.pvcs = [];
  source.current.done(Object.assign(new TypeError('terminated'), { cause: { code: 'ECONNRESET' } }));
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'unknown', 'unknown at once after the error');
  t.equal(cache.synced, false);
  await eventually('two failed relists', () => restarts.length >= 3);
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'unknown', 'still unknown while lists fail');

  source.listFault = undefined;
  await cache.whenSynced();
  t.equal(
    cache.state('dify', 'data-dify-postgresql-0'),
    'absent',
    'the relist shows the PVC deleted during the outage',
  );
  const warnings = captured
    .lines()
    .filter((l) => l.msg === 'PVC list/watch failed: password changes are refused until it lists again');
  t.ok(warnings.length >= 3, 'each failure is logged');
  t.match(warnings[1], { error: { code: 'ECONNREFUSED' } });
});

t.test('410 Gone relists (a stale resourceVersion), as an HTTP status or a watch ERROR event', async (t) => {
  const source = new ScriptedSource();
  source.pvcs = [pvc('dify', 'data-dify-postgresql-0')];
  const { cache } = await watchingCache(t, source);

  source.pvcs = [pvc('dify', 'data-other-postgresql-0')];
  source.resourceVersion = 200;
  source.current.done(Object.assign(new Error('Gone'), { statusCode: 410 }));
  await eventually('a relist and a new watch', () => source.listCalls === 2 && source.openWatches() === 1);
  t.equal(source.current.params.resourceVersion, '200', 'the new watch starts from the relist');
  await eventually('the relist to be applied', () => cache.state('dify', 'data-other-postgresql-0') === 'present');
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'absent', 'objects missing from the relist are dropped');
  t.equal(cache.synced, true);

  source.pvcs = [];
  source.resourceVersion = 300;
  source.current.send('ERROR', { kind: 'Status', code: 410, reason: 'Expired', metadata: {} });
  source.current.done(null);
  await eventually('a relist after the ERROR event', () => source.listCalls === 3);
  await eventually('the relist to be applied', () => cache.state('dify', 'data-other-postgresql-0') === 'absent');
  t.equal(cache.synced, true);
});

t.test('a watch that ends normally resumes from its resourceVersion without a relist', async (t) => {
  const source = new ScriptedSource();
  const { cache } = await watchingCache(t, source);
  source.current.send('ADDED', pvc('dify', 'data-dify-postgresql-0', '150'));
  source.current.done(null);
  await eventually('a new watch', () => source.watches.length === 2, 5000);
  t.equal(source.watches[1]?.params.resourceVersion, '150');
  t.equal(source.listCalls, 1);
  t.equal(cache.synced, true);
  t.equal(cache.state('dify', 'data-dify-postgresql-0'), 'present');
});

t.test('the periodic resync relists into a new generation and retires the old watch', async (t) => {
  const source = new ScriptedSource();
  source.pvcs = [pvc('dify', 'data-dify-postgresql-0')];
  const { cache } = await watchingCache(t, source, { resyncIntervalMs: 50 });
  const firstWatch = source.current;
  // A watch that went quiet without an error (pepr#745): it never reports the deletion.
  source.pvcs = [];
  await eventually('a resync relist', () => source.listCalls >= 2);
  await eventually('the resync to be served', () => cache.state('dify', 'data-dify-postgresql-0') === 'absent');
  t.ok(firstWatch.aborted, "the old generation's watch is closed");
  t.equal(cache.synced, true, 'synced throughout');
  await eventually('one open watch', () => source.openWatches() === 1);
});

t.test('a list that never answers times out and is retried', async (t) => {
  const source = new ScriptedSource();
  source.listFault = () => new Promise<never>(() => {});
  const { cache, captured } = makeCache(t, source, { listTimeoutMs: 30 });
  cache.start();
  await eventually('a retry', () => source.listCalls >= 2);
  t.equal(cache.state('dify', 'x'), 'unknown');
  t.match(
    captured.lines().find((l) => l.msg?.toString().startsWith('PVC list/watch failed')),
    { error: { message: /timed out after 30 ms/ } },
  );
  source.listFault = undefined;
  await cache.whenSynced();
  t.equal(cache.state('dify', 'x'), 'absent');
});

t.test('restart delays double from the initial delay, are capped, and jittered', async (t) => {
  for (const [random, expected] of [
    [0, [5, 10, 20, 20, 20]],
    [0.999999, [10, 20, 40, 40, 40]],
  ] as const) {
    const source = new ScriptedSource();
    source.listFault = () => Promise.reject(new Error('unavailable'));
    const { cache, captured } = makeCache(t, source, { random: () => random });
    cache.start();
    await eventually('five failures', () => captured.lines().length >= 5);
    await cache.stop();
    const delays = captured
      .lines()
      .slice(0, 5)
      .map((l) => l.retryInMs);
    t.same(delays, expected, `random ${random}: ${expected.join(', ')} ms`);
  }
});

t.test('stop() closes the watch and answers unknown; nothing restarts afterwards', async (t) => {
  const source = new ScriptedSource();
  const { cache } = await watchingCache(t, source, { resyncIntervalMs: 20 });
  await cache.stop();
  t.equal(source.openWatches(), 0);
  t.equal(cache.state('dify', 'x'), 'unknown');
  const calls = source.listCalls;
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(source.listCalls, calls, 'no list after stop');
  t.equal(source.openWatches(), 0, 'no watch after stop');
});

t.test('a generation retired while listing never opens a watch', async (t) => {
  const source = new ScriptedSource();
  const release = source.holdLists();
  const { cache } = makeCache(t, source);
  cache.start();
  await cache.stop();
  release();
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(source.watches.length, 0);
});
