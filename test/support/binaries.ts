// Where the real kube-apiserver, etcd, kubectl, helm and promtool are. `npm test` provides them and sets
// DIFY_GUARD_BIN_DIR; a test file run on its own provides them the same way (never a skip).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

const BINARIES = ['kube-apiserver', 'etcd', 'kubectl', 'helm', 'promtool'] as const;

let cached: string | undefined;

export function binDir(): string {
  if (cached) return cached;
  let dir = process.env.DIFY_GUARD_BIN_DIR;
  if (!dir) {
    const out = execFileSync('bash', [join(repoRoot, 'test/controlplane/binaries/install.sh')], {
      encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
    });
    dir = out.trim().split('\n').pop() ?? '';
  }
  for (const name of BINARIES) {
    if (!existsSync(join(dir, name))) throw new Error(`${name} is missing from ${dir}: run test/controlplane/binaries/install.sh`);
  }
  cached = dir;
  return dir;
}

export const binary = (name: (typeof BINARIES)[number]): string => join(binDir(), name);
