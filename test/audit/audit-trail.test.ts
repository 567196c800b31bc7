// The audit trail: exactly the listed fields in one JSON line, and a Warning Event unless dry-run.
import t from 'tap';
import { createAuditTrail, recordTemplateAudit, type AuditRecord } from '../../src/audit/audit-trail.js';
import type { SecretEvent, SecretEventRecorder } from '../../src/audit/event-recorder.js';
import { captureLog, PASSWORD_CHANGE_REFUSED } from '../server/support.js';

const record: AuditRecord = {
  ...PASSWORD_CHANGE_REFUSED,
  uid: '2c7f0b4e',
  user: 'kubernetes-admin',
  groups: ['system:authenticated'],
  message: 'Secret dify/dify-postgresql: refused',
};

function setup() {
  const captured = captureLog('info');
  const events: SecretEvent[] = [];
  const recorder = {
    record: (e: SecretEvent) => {
      events.push(e);
    },
  } as unknown as SecretEventRecorder;
  return { captured, events, trail: createAuditTrail({ log: captured.log, events: recorder }) };
}

t.test('one JSON line with the audit fields and nothing else', async (t) => {
  const { captured, trail } = setup();
  // Fields beyond the record's are ignored even if a caller passes them.
  trail.record({ ...record, object: { data: { password: 'c2VjcmV0' } } } as AuditRecord, { uid: 'secret-uid' });
  const lines = captured.lines();
  t.equal(lines.length, 1);
  const { level, time, msg, audit, pid, hostname, ...fields } = lines[0]!;
  t.equal(level, 40, 'warn');
  t.ok(time && pid && hostname, "pino's own fields");
  t.equal(msg, 'Secret change denied');
  t.equal(audit, true, 'marked as an audit line');
  t.same(
    fields,
    record,
    'exactly uid, user, groups, operation, namespace, name, reason, pvc, dryRun, message, decision',
  );
  t.notMatch(captured.text(), 'c2VjcmV0');
});

t.test('a verified rotation: the line adds what the database answered; the Event says Allow', async (t) => {
  const { captured, events, trail } = setup();
  trail.record({
    ...record,
    decision: 'allowed',
    reason: 'PasswordRotationVerified',
    verification: 'accepted',
    message: 'allowed',
  });
  const line = captured.lines()[0]!;
  t.equal(line.msg, 'Secret change allowed under audit');
  t.match(line, { reason: 'PasswordRotationVerified', verification: 'accepted' });
  t.match(events, [{ reason: 'PasswordRotationVerified', action: 'AllowUpdate' }]);
});

t.test('a Warning Event unless dry-run, naming who made the change first', async (t) => {
  const { events, trail } = setup();
  trail.record(record, { uid: 'secret-uid' });
  trail.record({ ...record, dryRun: true });
  trail.record({ ...record, decision: 'allowed', operation: 'DELETE', reason: 'DeleteUnderPvc' });
  t.same(events, [
    {
      namespace: 'dify',
      secretName: 'dify-postgresql',
      secretUid: 'secret-uid',
      reason: 'PasswordChangeUnderPvc',
      action: 'DenyUpdate',
      note: `kubernetes-admin: ${record.message}`,
    },
    {
      namespace: 'dify',
      secretName: 'dify-postgresql',
      secretUid: undefined,
      reason: 'DeleteUnderPvc',
      action: 'AllowDelete',
      note: `kubernetes-admin: ${record.message}`,
    },
  ]);
  trail.record({ ...record, user: '' });
  t.match(events[2]?.note, /^unknown user: /, 'a request without a username still says so');
});

t.test('with Events disabled, only the log line', async (t) => {
  const captured = captureLog('info');
  const trail = createAuditTrail({ log: captured.log });
  trail.record(record);
  t.equal(captured.lines().length, 1);
});

t.test('a template audit line: names and findings only', async (t) => {
  const captured = captureLog('info');
  recordTemplateAudit(captured.log, {
    decision: 'allowed',
    uid: 'u1',
    user: 'alice',
    groups: ['g'],
    operation: 'CREATE',
    kind: 'Deployment',
    namespace: 'dify',
    name: 'api',
    mode: 'warn',
    findings: [{ container: 'api', variable: 'DB_PASSWORD', finding: 'literal_password' }],
    dryRun: false,
  });
  const [line] = captured.lines();
  t.equal(line?.level, 40);
  t.equal(line?.audit, true);
  t.same(line?.findings, [{ container: 'api', variable: 'DB_PASSWORD', finding: 'literal_password' }]);
  t.equal(line?.user, 'alice');
});
