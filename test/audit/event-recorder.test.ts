// Warning Events with the Events API injected: the body, aggregation of repeats into a series, and
// emission that never blocks or fails the caller (errors, hangs, overload).
import t from 'tap';
import type { JsonObject } from '../../src/admission/types.js';
import {
  EVENT_NOTE_LIMIT_BYTES,
  SecretEventRecorder,
  microTime,
  truncateUtf8,
  type EventsApi,
  type SecretEvent,
} from '../../src/audit/event-recorder.js';
import { captureLog } from '../server/support.js';

interface Call {
  verb: 'create' | 'patch';
  namespace: string;
  name?: string;
  body: JsonObject;
}

class RecordingApi implements EventsApi {
  readonly calls: Call[] = [];
  fail: ((call: Call) => Promise<void>) | undefined;
  async create(namespace: string, event: JsonObject): Promise<void> {
    const call: Call = { verb: 'create', namespace, body: structuredClone(event) };
    this.calls.push(call);
    if (this.fail) await this.fail(call);
  }
  async patch(namespace: string, name: string, mergePatch: JsonObject): Promise<void> {
    const call: Call = { verb: 'patch', namespace, name, body: structuredClone(mergePatch) };
    this.calls.push(call);
    if (this.fail) await this.fail(call);
  }
}

const denial: SecretEvent = {
  namespace: 'dify',
  secretName: 'dify-postgresql',
  secretUid: '7e1c3a9f-5b2d-4e8c-a6f0-9d3b1e7c5a24',
  reason: 'PasswordChangeUnderPvc',
  action: 'DenyUpdate',
  note: 'Secret dify/dify-postgresql: refused, ...',
};

function setup(options: Partial<ConstructorParameters<typeof SecretEventRecorder>[0]> = {}) {
  const api = new RecordingApi();
  const captured = captureLog();
  let clock = Date.parse('2026-11-24T12:00:00.000Z');
  let failures = 0;
  const recorder = new SecretEventRecorder({
    api,
    log: captured.log,
    reportingController: 'dify-guard.io/admission-webhook',
    reportingInstance: 'dify-guard-7c9f-x2',
    now: () => clock,
    onFailure: () => {
      failures += 1;
    },
    ...options,
  });
  return {
    api,
    captured,
    recorder,
    advance: (ms: number) => {
      clock += ms;
    },
    failures: () => failures,
  };
}

t.test('the first record creates an events.k8s.io/v1 Warning Event regarding the Secret', async (t) => {
  const { api, recorder } = setup();
  recorder.record(denial);
  await recorder.idle();
  t.equal(api.calls.length, 1);
  const [call] = api.calls;
  t.equal(call?.verb, 'create');
  t.equal(call?.namespace, 'dify');
  t.match(call?.body, {
    apiVersion: 'events.k8s.io/v1',
    kind: 'Event',
    metadata: { name: /^dify-postgresql\.[0-9a-f]+$/, namespace: 'dify' },
    eventTime: '2026-11-24T12:00:00.000000Z',
    reportingController: 'dify-guard.io/admission-webhook',
    reportingInstance: 'dify-guard-7c9f-x2',
    action: 'DenyUpdate',
    reason: 'PasswordChangeUnderPvc',
    type: 'Warning',
    note: denial.note,
    regarding: { apiVersion: 'v1', kind: 'Secret', namespace: 'dify', name: 'dify-postgresql', uid: denial.secretUid },
  });
  t.notOk('series' in (call?.body ?? {}), 'no series on the first occurrence');
});

t.test('repeats within the window are counted into one series patch; after it, a new Event', async (t) => {
  const { api, recorder, advance } = setup({ aggregationWindowMs: 10 * 60_000 });
  recorder.record(denial);
  advance(60_000);
  recorder.record(denial);
  advance(9 * 60_000);
  recorder.record(denial);
  await recorder.idle();
  t.same(
    api.calls.map((c) => c.verb),
    ['create', 'patch'],
    'two repeats, one write',
  );
  const name = (api.calls[0]?.body.metadata as { name: string }).name;
  t.equal(api.calls[1]?.name, name, 'the patch updates the created Event');
  t.same(api.calls[1]?.body, { series: { count: 3, lastObservedTime: '2026-11-24T12:10:00.000000Z' } });

  advance(60_000);
  recorder.record(denial);
  await recorder.idle();
  t.same(
    api.calls.at(-1)?.body,
    { series: { count: 4, lastObservedTime: '2026-11-24T12:11:00.000000Z' } },
    'the next repeat continues the count',
  );

  advance(10 * 60_000 + 1);
  recorder.record(denial);
  await recorder.idle();
  t.equal(api.calls.at(-1)?.verb, 'create', 'a quiet window starts a new Event');
  t.not((api.calls.at(-1)?.body.metadata as { name: string }).name, name);
});

t.test('a burst of repeats is written once the flush interval has passed, without anyone waiting', async (t) => {
  const { api, recorder } = setup({ seriesFlushMs: 30 });
  recorder.record(denial);
  for (let i = 0; i < 50; i++) recorder.record(denial);
  await new Promise((r) => setTimeout(r, 300));
  t.same(
    api.calls.map((c) => c.verb),
    ['create', 'patch'],
    '51 refusals, two API calls',
  );
  t.match(api.calls[1]?.body, { series: { count: 51 } });
  await recorder.idle();
  t.equal(api.calls.length, 2, 'nothing left to write');
});

t.test('another reason or another Secret is another Event', async (t) => {
  const { api, recorder } = setup();
  recorder.record(denial);
  recorder.record({ ...denial, reason: 'PasswordKeysDiverge' });
  recorder.record({ ...denial, secretName: 'other-postgresql' });
  recorder.record(denial);
  await recorder.idle();
  t.same(
    api.calls.map((c) => c.verb),
    ['create', 'create', 'create', 'patch'],
  );
});

t.test('an Event gone since (TTL, deleted) is created again', async (t) => {
  const { api, recorder, failures } = setup();
  recorder.record(denial);
  await recorder.idle();
  api.fail = async (call) => {
    if (call.verb === 'patch') throw Object.assign(new Error('HTTP-Code: 404'), { code: 404 });
  };
  recorder.record(denial);
  await recorder.idle();
  t.same(
    api.calls.map((c) => c.verb),
    ['create', 'patch', 'create'],
  );
  t.equal(failures(), 0, 'not a failure');
});

t.test('an API error is logged and counted, and never reaches the caller', async (t) => {
  const { api, recorder, captured, failures } = setup();
  api.fail = async () => {
    throw Object.assign(new Error('HTTP-Code: 403\nMessage: Unknown API Status Code!\nBody: ...'), {
      code: 403,
      body: JSON.stringify({
        kind: 'Status',
        reason: 'Forbidden',
        message: 'events.events.k8s.io is forbidden: User "x" cannot create resource',
      }),
    });
  };
  t.doesNotThrow(() => recorder.record(denial));
  await recorder.idle();
  t.equal(failures(), 1);
  const line = captured.lines().find((l) => l.msg === 'could not emit a Warning Event on the Secret');
  t.match(line, {
    namespace: 'dify',
    secret: 'dify-postgresql',
    reason: 'PasswordChangeUnderPvc',
    error: { code: 403, reason: 'Forbidden', message: /forbidden/ },
  });
  t.notMatch(captured.text(), denial.note, 'the note is not repeated in the log');
});

t.test('a hanging API call is cut at the timeout; record() returns at once', async (t) => {
  const { api, recorder, captured, failures } = setup({ timeoutMs: 50 });
  api.fail = () => new Promise<void>(() => {});
  // record() returns nothing to wait on: not a promise, so the admission answer never waits on the API.
  t.equal(recorder.record(denial), undefined, 'record() did not wait');
  await recorder.idle();
  t.equal(failures(), 1);
  t.match(captured.lines().at(-1), { error: { message: 'timed out after 50 ms' } });
});

t.test('beyond maxPending in flight, records are dropped and counted', async (t) => {
  const { api, recorder, failures } = setup({ maxPending: 2, timeoutMs: 50 });
  api.fail = () => new Promise<void>(() => {});
  for (let i = 0; i < 5; i++) recorder.record({ ...denial, secretName: `s${i}` });
  t.equal(api.calls.length <= 2, true, 'at most two calls started');
  t.equal(failures(), 3, 'three dropped');
  await recorder.idle();
  t.equal(failures(), 5, 'and the two in flight timed out');
});

t.test('notes are cut to the API limit on a character boundary', async (t) => {
  const { api, recorder } = setup();
  const long = `パスワード変更は拒否されました。${'x'.repeat(2000)}`;
  recorder.record({ ...denial, note: long });
  await recorder.idle();
  const note = api.calls[0]?.body.note as string;
  t.ok(Buffer.byteLength(note, 'utf8') <= EVENT_NOTE_LIMIT_BYTES);
  t.ok(note.endsWith('…'));
  t.ok(long.startsWith(note.slice(0, -1)), 'a prefix of the message');
  const cutInside = truncateUtf8('ああああ', 8);
  t.equal(cutInside, 'あ…', 'never half a character');
  t.equal(truncateUtf8('short', 1024), 'short');
});

t.test('microTime has six fractional digits', async (t) => {
  t.equal(microTime(Date.parse('2026-01-02T03:04:05.678Z')), '2026-01-02T03:04:05.678000Z');
});
