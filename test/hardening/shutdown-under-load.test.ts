// SIGTERM to the real dify-guard process while it judges a continuous load over keep-alive and fresh
// connections, with the load generator acting as a Kubernetes Service would: it polls /readyz every
// 100 ms and, once it sees the replica unready, stops routing new requests to it after the moment
// endpoint removal takes to propagate. Within DIFY_GUARD_SHUTDOWN_DELAY_SECONDS dify-guard keeps
// judging; no request started is lost (no reset, no hang-up, no 5xx); /readyz turns 503 while the
// admission port still accepts; then the port closes and the process exits 0 within its timeout.
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { SETTINGS } from '../../src/config.js';
import { startControlPlane, type ControlPlane } from '../../harness/controlplane/harness.js';
import { startDifyGuard, type DifyGuard } from '../../harness/controlplane/dify-guard.js';
import { byProblem, healthStatus, sleep, startLoad } from './load.js';
import { connectResult } from '../server/support.js';

const SHUTDOWN_DELAY_SECONDS = 2;
const SHUTDOWN_TIMEOUT_SECONDS = 10;
const READINESS_POLL_MS = 100;
/** From the replica turning unready to the API server no longer picking it (endpoints, then its cache). */
const ENDPOINT_PROPAGATION_MS = 1000;
const LOAD_BEFORE_SIGTERM_MS = 2000;
/** Slack over the shutdown timeout for the process to be reaped and seen exiting: a bound, not a timing. */
const EXIT_SLACK_MS = 5000;

interface Observation {
  at: number;
  result: number | string;
}

/**
 * The Service in front of the replica: polls /readyz; routes while the replica is ready, and stops
 * routing a propagation delay after it is first seen unready.
 */
class Service {
  routing = true;
  readonly readiness: Observation[] = [];
  unreadySeenAt: number | undefined;
  private polling = true;
  readonly polled: Promise<void>;

  constructor(healthPort: number) {
    this.polled = this.poll(healthPort);
  }

  private async poll(healthPort: number): Promise<void> {
    while (this.polling) {
      const result = await healthStatus(healthPort, '/readyz');
      this.readiness.push({ at: Date.now(), result });
      if (result !== 200 && this.unreadySeenAt === undefined) {
        this.unreadySeenAt = Date.now();
        setTimeout(() => {
          this.routing = false;
        }, ENDPOINT_PROPAGATION_MS);
      }
      await sleep(READINESS_POLL_MS);
    }
  }

  stop(): void {
    this.polling = false;
    this.routing = false;
  }
}

/** The admission port, probed until it refuses (closed after the delay, or gone with the process). */
async function probeUntilRefused(port: number, observations: Observation[]): Promise<void> {
  for (;;) {
    const result = await connectResult(port);
    observations.push({ at: Date.now(), result });
    if (result !== 'connected') return;
    await sleep(50);
  }
}

type Exit = 'never' | 'still running' | { code: number | null; at: number };

/** When the process exits, with its exit code (it never does before SIGTERM: 'never' is for the type only). */
function exitOf(guard: DifyGuard): Promise<Exit> {
  return guard.process.failOnExit().then(
    () => 'never' as const,
    (error: Error) => {
      const code = /exited \(code (-?\d+|null)\)/.exec(error.message)?.[1];
      return { code: code === undefined || code === 'null' ? null : Number(code), at: Date.now() };
    },
  );
}

/** As when kubelet stops the container again (a second delete with a shorter grace period, a drain racing an eviction). */
async function sigtermAgain(guard: DifyGuard, pid: number): Promise<void> {
  await sleep(SHUTDOWN_DELAY_SECONDS * 500);
  if (guard.process.running) process.kill(pid, 'SIGTERM');
}

/** Whether the port still accepted a connection after `at` (false when `at` is unknown). */
const connectedAfter = (port: Observation[], at: number | undefined): boolean =>
  at !== undefined && port.some((o) => o.result === 'connected' && o.at > at);

/** The requests started after `at` (none when `at` is unknown). */
const startedAfter = <T extends { startedAt: number }>(records: T[], at: number | undefined): T[] =>
  at === undefined ? [] : records.filter((r) => r.startedAt > at);

const lastStartOf = (records: { startedAt: number }[]): number | undefined =>
  records.length > 0 ? Math.max(...records.map((r) => r.startedAt)) : undefined;

/** The figures of one shutdown as comments (never asserted: no timings in tests). */
function commentTimeline(
  t: Test,
  sigtermAt: number,
  seen: { counts: string; first503?: number; lastStart?: number; closed?: Observation; exit: Exit },
): void {
  const since = (at: number | undefined): string => (at === undefined ? '-' : String(at - sigtermAt));
  const exitInfo = typeof seen.exit === 'object' ? seen.exit : undefined;
  t.comment(`requests: ${seen.counts}`);
  t.comment(
    `SIGTERM -> /readyz 503 seen: ${since(seen.first503)} ms; -> last request started: ${since(seen.lastStart)} ms; ` +
      `-> admission port ${seen.closed?.result ?? 'open'}: ${since(seen.closed?.at)} ms; -> exit: ${since(exitInfo?.at)} ms`,
  );
  t.comment(
    `exit code: ${exitInfo ? String(exitInfo.code) : String(seen.exit)}; delay ${SHUTDOWN_DELAY_SECONDS} s, ` +
      `timeout ${SHUTDOWN_TIMEOUT_SECONDS} s, endpoint propagation modelled as ${ENDPOINT_PROPAGATION_MS} ms`,
  );
}

/** One replica's shutdown under load; `repeat` sends SIGTERM again halfway through the delay. */
async function shutdownUnderLoad(t: Test, cp: ControlPlane, repeat: boolean): Promise<void> {
  const guard = await startDifyGuard(t, cp, {
    env: {
      [SETTINGS.shutdownDelaySeconds.env]: String(SHUTDOWN_DELAY_SECONDS),
      [SETTINGS.shutdownTimeoutSeconds.env]: String(SHUTDOWN_TIMEOUT_SECONDS),
      // No tap instrumentation in dify-guard (NODE_OPTIONS): coverage recording would slow the load it serves.
      NODE_OPTIONS: '',
    },
  });
  const ca = readFileSync(guard.certs.caFile);
  // Every dify-guard of this control plane appends to the same log file.
  const stopLines = (): number => guard.logLines().filter((l) => l.msg === 'dify-guard stopped').length;
  const stoppedBefore = stopLines();
  const pid = guard.process.pid as number;

  const service = new Service(guard.healthPort);
  const load = startLoad({
    port: guard.port,
    ca,
    keepAliveWorkers: 4,
    freshWorkers: 4,
    keepGoing: () => service.routing,
  });
  t.teardown(async () => {
    service.stop();
    await Promise.all([load.done, service.polled]);
    for (const agent of load.agents) agent.destroy();
  });
  const { readiness } = service;

  await sleep(LOAD_BEFORE_SIGTERM_MS);
  t.ok(readiness.length > 0 && readiness.every((o) => o.result === 200), 'ready all along before SIGTERM');
  const exited = exitOf(guard);
  const sigtermAt = Date.now();
  process.kill(pid, 'SIGTERM');
  const again = repeat ? sigtermAgain(guard, pid) : Promise.resolve();

  const admissionPort: Observation[] = [];
  const portProber = probeUntilRefused(guard.port, admissionPort);

  const bound = SHUTDOWN_TIMEOUT_SECONDS * 1000 + EXIT_SLACK_MS;
  const exit = await Promise.race([exited, sleep(bound).then(() => 'still running' as const)]);
  service.stop();
  await Promise.all([load.done, service.polled, portProber, again]);
  const unreadySeenAt = service.unreadySeenAt;

  const records = load.records;
  const failures = records.filter((r) => r.problem !== undefined);
  const beforeSigterm = records.filter((r) => r.startedAt < sigtermAt);
  const afterSigterm = records.filter((r) => r.startedAt >= sigtermAt);
  const answeredAfterSigterm = afterSigterm.filter((r) => r.problem === undefined);
  const first503 = readiness.find((o) => o.at >= sigtermAt && o.result === 503);
  const closed = admissionPort.find((o) => o.result !== 'connected');
  const acceptedAfter503 = connectedAfter(admissionPort, first503?.at);
  const startedAfterUnready = startedAfter(records, unreadySeenAt);
  const exitInfo = typeof exit === 'object' ? exit : undefined;

  commentTimeline(t, sigtermAt, {
    counts:
      `${beforeSigterm.length} started before SIGTERM, ${afterSigterm.length} after ` +
      `(${answeredAfterSigterm.length} answered); failures: ${failures.length}`,
    first503: first503?.at,
    lastStart: lastStartOf(records),
    closed,
    exit,
  });
  t.same(
    byProblem(failures, (r) => `request ${r.id} (${r.lane})`),
    {},
    'no request started was lost: every one answered 200 with a valid review',
  );
  t.ok(beforeSigterm.length > 100, 'a real load ran before SIGTERM');
  t.ok(answeredAfterSigterm.length > 0, 'requests started after SIGTERM were still judged (the delay kept answering)');
  t.ok(first503, '/readyz answered 503 after SIGTERM');
  t.ok(acceptedAfter503, 'the admission port still accepted connections after /readyz turned 503');
  t.equal(closed?.result, 'ECONNREFUSED', 'then the admission port refused connections');
  t.ok(
    first503 !== undefined && closed !== undefined && first503.at < closed.at,
    '/readyz went 503 before the listener closed',
  );
  t.same(
    startedAfterUnready.filter((r) => r.problem === undefined && r.connection !== 'close').map((r) => r.id),
    [],
    'every answer to a request started once unready closed its connection',
  );
  t.not(
    exit,
    'still running',
    `the process exited within the shutdown timeout (${SHUTDOWN_TIMEOUT_SECONDS} s, +${EXIT_SLACK_MS / 1000} s slack)`,
  );
  t.equal(exitInfo?.code, 0, 'with exit code 0');
  t.equal(stopLines(), stoppedBefore + 1, 'having logged its orderly stop once');
}

t.test('shutdown under load', async (t) => {
  const cp = await startControlPlane(t, { name: 'shutdown' });
  await t.test('SIGTERM: readiness off, the delay keeps judging, nothing started is lost, exit 0', (t) =>
    shutdownUnderLoad(t, cp, false),
  );
  await t.test('SIGTERM again during the delay: the same orderly shutdown', (t) => shutdownUnderLoad(t, cp, true));
});
