// Every password a test makes comes from here, so that one scan at the end of `npm test` can find
// any of them in what the suite captured (harness/leak-scan.ts), without a list of values.
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/**
 * The prefix of every test password. Six bytes, so the base64 of a password starts with a fixed
 * text as well; the scanner also looks for it at the two other base64 alignments.
 */
export const TEST_SECRET_MARKER = 'dgtest';

/** A random password for a test: the marker, then 32 hex digits (alphanumeric, so every check of the chart accepts it). */
export const testSecret = (): string => TEST_SECRET_MARKER + randomBytes(16).toString('hex');

/** Where `npm test` collects captured output to scan (unset when a test file runs on its own). */
const captureDir = (): string | undefined => process.env.DIFY_GUARD_CAPTURE_DIR || undefined;

let sequence = 0;
function capturePath(name: string): string | undefined {
  const dir = captureDir();
  if (!dir) return undefined;
  mkdirSync(dir, { recursive: true });
  sequence += 1;
  return join(dir, `${process.pid}-${sequence}-${basename(name).replace(/[^A-Za-z0-9._-]/g, '_')}`);
}

/** Keeps output a test captured in memory (a command's stdout, say) for the end-of-suite scan. */
export function captureOutput(name: string, text: string): void {
  const path = capturePath(name);
  if (path) writeFileSync(path, text);
}

/** Keeps the log files of a temporary folder (process logs, the API server's audit log) before it is removed. */
export function captureLogs(dir: string): void {
  if (!captureDir() || !existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.log')) continue;
    const path = capturePath(`${basename(dir)}-${entry.name}`);
    if (path)
      try {
        copyFileSync(join(dir, entry.name), path);
      } catch {
        /* removed meanwhile */
      }
  }
}
