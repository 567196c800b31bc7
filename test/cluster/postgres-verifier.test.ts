// The password check against a real PostgreSQL 15: accepted, rejected (28P01) for a SCRAM-SHA-256 role and an md5
// role, unreachable for a closed port, a port that accepts TCP but never answers, and a name that does not
// resolve; then the Secret route with this verifier: a rotation made in the database first is allowed, and the
// fourth check of one Secret within the minute is refused as rate-limited without asking the database.
import { createServer, type Socket } from 'node:net';
import { pino } from 'pino';
import t from 'tap';
import { SECRET_KEYS } from '../../src/contract.js';
import { defaultGuardSettings } from '../../src/admission/settings.js';
import type { AdmissionRequest, PasswordCheck } from '../../src/admission/types.js';
import type { AuditRecord } from '../../src/audit/audit-trail.js';
import { expandAddress, parseAddress, postgresVerifier } from '../../src/cluster/postgres-verifier.js';
import { RateLimiter } from '../../src/http/rate-limit.js';
import { secretGuardHandler } from '../../src/http/secret-route.js';
import { createMetrics, METRIC_NAMES } from '../../src/metrics.js';
import { loadReview } from '../../harness/fixtures.js';
import { startLocalPostgres, sqlPassword } from '../../harness/programs/postgres.js';
import { reservePort } from '../../harness/ports.js';
import { captureOutput, testSecret } from '../../harness/secrets.js';

const pg = await startLocalPostgres('postgres-verifier');
t.teardown(() => pg.stop());
const scramPassword = testSecret();
const md5Password = testSecret();
await pg.sql(`SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD ${sqlPassword(scramPassword)};
  CREATE DATABASE scram_db OWNER scram_user;`);
await pg.sql(`SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD ${sqlPassword(md5Password)};
  CREATE DATABASE md5_db OWNER md5_user;`);

const local = postgresVerifier({ addressTemplate: `127.0.0.1:${pg.port}`, timeoutMs: 2000 });
const check = (user: string, database: string, password: string): PasswordCheck => ({
  namespace: 'dify',
  release: 'dify',
  secretKey: 'dify/dify-postgresql',
  user,
  database,
  password,
});

t.test('the roles are stored as SCRAM-SHA-256 and md5', async (t) => {
  // The kind of each stored secret, never the hash itself.
  const kinds = await pg.sql(
    "SELECT rolname || ':' || CASE WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' " +
      "WHEN rolpassword LIKE 'md5%' THEN 'md5' ELSE 'other' END FROM pg_authid WHERE rolname LIKE '%_user' ORDER BY 1",
  );
  t.equal(kinds.trim(), 'md5_user:md5\nscram_user:scram');
});

const roles = [
  ['SCRAM-SHA-256', 'scram_user', 'scram_db', scramPassword],
  ['md5', 'md5_user', 'md5_db', md5Password],
] as const;
for (const [mechanism, user, database, password] of roles) {
  t.test(`${mechanism} role: the right password is accepted, another one rejected with 28P01`, async (t) => {
    t.strictSame(await local(check(user, database, password)), {
      outcome: 'accepted',
      address: `127.0.0.1:${pg.port}`,
      timeoutMs: 2000,
    });
    const wrong = await local(check(user, database, testSecret()));
    t.strictSame(wrong, { outcome: 'rejected', detail: '28P01', address: `127.0.0.1:${pg.port}`, timeoutMs: 2000 });
    captureOutput('postgres-verifier-results.json', JSON.stringify([wrong]));
  });
}

t.test('after ALTER ROLE, the new password is accepted and the old one rejected', async (t) => {
  const next = testSecret();
  await pg.sql(`SET password_encryption = 'scram-sha-256'; ALTER ROLE scram_user PASSWORD ${sqlPassword(next)}`);
  t.equal((await local(check('scram_user', 'scram_db', next))).outcome, 'accepted');
  t.equal((await local(check('scram_user', 'scram_db', scramPassword))).outcome, 'rejected');
  await pg.sql(
    `SET password_encryption = 'scram-sha-256'; ALTER ROLE scram_user PASSWORD ${sqlPassword(scramPassword)}`,
  );
  t.equal(
    (await local(check('nobody', 'scram_db', scramPassword))).outcome,
    'rejected',
    'an unknown user is rejected too (28P01)',
  );
});

t.test('unreachable: a closed port, a silent port (timeout), a name that does not resolve', async (t) => {
  const closed = await reservePort();
  t.teardown(() => closed.release());
  const someone = check('scram_user', 'scram_db', scramPassword);
  const refused = await postgresVerifier({ addressTemplate: `127.0.0.1:${closed.port}`, timeoutMs: 2000 })(someone);
  t.match(refused, { outcome: 'unreachable', detail: 'ECONNREFUSED' });

  const sockets: Socket[] = [];
  const silent = createServer((socket) => {
    sockets.push(socket);
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const { port } = silent.address() as { port: number };
  const timedOut = await postgresVerifier({ addressTemplate: `127.0.0.1:${port}`, timeoutMs: 300 })(someone);
  t.strictSame(timedOut, { outcome: 'unreachable', detail: 'timeout', address: `127.0.0.1:${port}`, timeoutMs: 300 });
  t.ok(sockets.length >= 1, 'the TCP connection was accepted; nothing ever answered');

  const unresolved = await postgresVerifier({
    addressTemplate: '{release}-postgresql.{namespace}.invalid:5432',
    timeoutMs: 2000,
  })(someone);
  t.match(unresolved, { outcome: 'unreachable', address: 'dify-postgresql.dify.invalid:5432' });
  t.match(unresolved.detail, /^(ENOTFOUND|EAI_AGAIN|timeout)$/);
});

t.test('addresses: the template expanded per release and namespace; host:port and [IPv6]:port', async (t) => {
  t.equal(
    expandAddress('{release}-postgresql.{namespace}.svc:5432', 'prod', 'team-a'),
    'prod-postgresql.team-a.svc:5432',
  );
  t.strictSame(parseAddress('db.example:6432'), { host: 'db.example', port: 6432 });
  t.strictSame(parseAddress('[::1]:5432'), { host: '::1', port: 5432 });
  t.equal(parseAddress('db.example'), undefined);
  t.equal(parseAddress('db:70000'), undefined);
});

t.test(
  'through the Secret route: a rotation made in the database first is allowed; the fourth check is rate-limited',
  async (t) => {
    const dbPassword = testSecret();
    await pg.sql(`CREATE ROLE dify LOGIN PASSWORD ${sqlPassword(dbPassword)}; CREATE DATABASE dify OWNER dify;`);
    const metrics = createMetrics({ defaultMetrics: false });
    const records: AuditRecord[] = [];
    const logged: string[] = [];
    const log = pino(
      { level: 'info' },
      {
        write: (line: string) => {
          logged.push(line);
        },
      },
    );
    const handler = secretGuardHandler({
      settings: defaultGuardSettings,
      pvcStateOf: () => 'present',
      metrics,
      log,
      audit: {
        record: (entry) => {
          records.push(entry);
        },
      },
      verifier: local,
      rateLimiter: new RateLimiter({ perMinute: 3 }),
    });
    const request = (password: string): AdmissionRequest => {
      const review = loadReview('secret-postgresql-update-password').request;
      const data = review.object!.data as Record<string, string>;
      const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
      Object.assign(data, {
        [SECRET_KEYS.postgresPassword]: b64(password),
        [SECRET_KEYS.password]: b64(password),
        [SECRET_KEYS.postgresUsername]: b64('dify'),
        [SECRET_KEYS.postgresDatabase]: b64('dify'),
      });
      return review;
    };

    const plain = await handler(request(testSecret()));
    t.equal(plain.allowed, false, 'a password the database does not know: refused');
    t.match(plain.status?.message, 'does not accept this password yet (28P01)');
    const rotated = await handler(request(dbPassword));
    t.equal(rotated.allowed, true, 'the password the database already has: allowed');
    t.match(rotated.auditAnnotations, { decision: 'allowed', reason: 'PasswordRotationVerified' });
    t.match(records.at(-1), { decision: 'allowed', reason: 'PasswordRotationVerified', verification: 'accepted' });
    const dry = request(dbPassword);
    dry.dryRun = true;
    t.equal((await handler(dry)).allowed, true, 'a dry run: same decision, and it counts');
    const limited = await handler(request(dbPassword));
    t.equal(limited.allowed, false, 'the fourth check in a minute: refused without asking');
    t.match(limited.status?.message, /Retry in \d+ s/);
    t.match(records.at(-1), { decision: 'denied', reason: 'PasswordChangeUnderPvc', verification: 'rate-limited' });

    const text = await metrics.registry.metrics();
    t.match(text, `${METRIC_NAMES.verifications}{outcome="rejected"} 1`);
    t.match(text, `${METRIC_NAMES.verifications}{outcome="accepted"} 2`);
    t.match(text, `${METRIC_NAMES.verifications}{outcome="rate-limited"} 1`);
    t.match(text, `${METRIC_NAMES.verifiedRotations} 1`, 'the dry run is not a rotation');
    const output = [logged.join(''), JSON.stringify(records), JSON.stringify([plain, rotated, limited]), text].join(
      '\n',
    );
    captureOutput('postgres-verifier-route.txt', output);
    t.notOk(output.includes(dbPassword), 'no password in logs, records, answers or metrics');
  },
);
