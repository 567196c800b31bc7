// Asks the release's PostgreSQL whether it accepts a password: connect as the Secret's user to its
// database, authenticate, end (no query). node-postgres (`pg`) speaks the wire protocol, SCRAM-SHA-256
// and md5. Its errors are reduced to an outcome and a code name: a message could quote the input.
import pg from 'pg';
import { raceDeadline } from '../deadline.js';
import type { PasswordCheck, PasswordVerification } from '../admission/types.js';

/** Runs one authentication attempt; never rejects and never carries the password in what it returns. */
export type PasswordVerifier = (check: PasswordCheck) => Promise<PasswordVerification>;

export interface PostgresVerifierOptions {
  /** `host:port` with `{release}` and `{namespace}` placeholders, e.g. `{release}-postgresql.{namespace}.svc:5432`. */
  addressTemplate: string;
  timeoutMs: number;
}

/** SQLSTATEs of a refused login: invalid_password, invalid_authorization_specification. */
const REJECTED_SQLSTATES = new Set(['28P01', '28000']);

export function postgresVerifier(options: PostgresVerifierOptions): PasswordVerifier {
  return async (check) => {
    const address = expandAddress(options.addressTemplate, check.release, check.namespace);
    const target = parseAddress(address);
    if (!target) return { outcome: 'unreachable', detail: 'bad-address', address, timeoutMs: options.timeoutMs };
    const client = new pg.Client({
      host: target.host,
      port: target.port,
      user: check.user,
      database: check.database,
      password: check.password,
      connectionTimeoutMillis: options.timeoutMs,
      ssl: false,
      application_name: 'dify-guard',
    });
    // An error after connect (the server closing first) must not become an unhandled 'error' event.
    client.on('error', () => undefined);
    const result = await raceDeadline(
      authenticate(client),
      options.timeoutMs,
      (): Pick<PasswordVerification, 'outcome' | 'detail'> => {
        void client.end().catch(() => undefined);
        return { outcome: 'unreachable', detail: 'timeout' };
      },
    );
    return { ...result, address, timeoutMs: options.timeoutMs };
  };
}

async function authenticate(client: pg.Client): Promise<Pick<PasswordVerification, 'outcome' | 'detail'>> {
  try {
    await client.connect();
  } catch (fault) {
    return outcomeOf(fault);
  }
  await client.end().catch(() => undefined);
  return { outcome: 'accepted' };
}

/** The outcome of a failed connect, with a code name only (SQLSTATE, errno name or "timeout"). */
export function outcomeOf(fault: unknown): Pick<PasswordVerification, 'outcome' | 'detail'> {
  const code = (fault as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && REJECTED_SQLSTATES.has(code)) return { outcome: 'rejected', detail: code };
  if (typeof code === 'string' && /^[A-Z0-9_]{1,40}$/.test(code)) return { outcome: 'unreachable', detail: code };
  // pg's own connection timeout is an Error without a code; its text is pg's, never the input.
  if (fault instanceof Error && /timeout/i.test(fault.message)) return { outcome: 'unreachable', detail: 'timeout' };
  return { outcome: 'unreachable', detail: 'error' };
}

export function expandAddress(template: string, release: string, namespace: string): string {
  return template.replaceAll('{release}', release).replaceAll('{namespace}', namespace);
}

/** `host:port` or `[v6]:port`; undefined when it does not parse. */
export function parseAddress(address: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const port = Number(match?.[3]);
  if (!match || !(port >= 1 && port <= 65535)) return undefined;
  return { host: match[1] ?? match[2]!, port };
}
