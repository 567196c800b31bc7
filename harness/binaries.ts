// Where the real kube-apiserver, etcd, kubectl, helm, promtool (and, for the cluster tier,
// kube-controller-manager, kube-scheduler, kwok and kwok's stages file) are. `npm test` provides them
// and sets DIFY_GUARD_BIN_DIR; a test file run on its own provides them the same way (never a skip).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const repoRoot = fileURLToPath(new URL('..', import.meta.url));

const BINARIES = [
  'kube-apiserver',
  'etcd',
  'kubectl',
  'helm',
  'promtool',
  'kube-controller-manager',
  'kube-scheduler',
  'kwok',
  'kwok-stages.yaml',
] as const;

let cached: string | undefined;

export function binDir(): string {
  if (cached) return cached;
  let dir = process.env.DIFY_GUARD_BIN_DIR;
  if (!dir) {
    const out = execFileSync('bash', [join(repoRoot, 'harness/binaries/install.sh')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    dir = out.trim().split('\n').pop() ?? '';
  }
  for (const name of BINARIES) {
    if (!existsSync(join(dir, name)))
      throw new Error(`${name} is missing from ${dir}: run harness/binaries/install.sh`);
  }
  cached = dir;
  return dir;
}

export type BinaryName = (typeof BINARIES)[number];

/** The path of one of the files install.sh provides (`kwok-stages.yaml` is kwok's stage configuration). */
export const binary = (name: BinaryName): string => join(binDir(), name);
