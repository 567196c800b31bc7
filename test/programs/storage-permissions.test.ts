// The api pods' storage-permissions init container, its command as `helm template` renders it, run for real
// as the container runs it: root with only the capabilities the chart grants (setpriv's bounding set), on a
// folder laid out as a volume that fsGroup did not fix (entries of root and of another uid, a 0700 folder, a
// symbolic link to a file outside). The one edit: /app/api/storage becomes that folder. Debian's sh and GNU
// find stand in for the PostgreSQL image's (POSIX find options only: ! -user, -group, -exec {} +, chown -h).
import t, { type Test } from 'tap';
import { chownSync, lstatSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { contract } from '../../src/contract.js';
import { initContainersOf } from '../../harness/helm.js';
import { named, renderChart } from '../chart/support.js';
import { privateDir, requireRoot, runProgram } from '../../harness/programs/run.js';

requireRoot('the storage-permissions init container (root with CHOWN and DAC_OVERRIDE)');

async function renderedCommand(t: Test): Promise<{ script: string; caps: string[] }> {
  const { objects } = await renderChart();
  const api = named(objects, 'Deployment', 'component', contract.components.api);
  const init = initContainersOf(api).find((c) => c.name === 'storage-permissions')!;
  const command = init.command as string[];
  const caps = (init.securityContext as { capabilities: { add: string[] } }).capabilities.add;
  t.same(command.slice(0, 2), ['/bin/sh', '-c'], 'a shell command');
  return { script: command[2]!, caps };
}

function volume(dir: string): { root: string; outside: string } {
  const root = join(dir, 'storage');
  mkdirSync(join(root, 'upload_files', 'tenant'), { recursive: true });
  writeFileSync(join(root, 'upload_files', 'tenant', 'a.pdf'), 'x');
  mkdirSync(join(root, 'private'), { mode: 0o700 });
  writeFileSync(join(root, 'private', 'b.txt'), 'y', { mode: 0o600 });
  chownSync(join(root, 'private', 'b.txt'), 4242, 4242);
  chownSync(join(root, 'private'), 4242, 4242);
  const outside = join(dir, 'outside.txt');
  writeFileSync(outside, 'not on the volume');
  symlinkSync(outside, join(root, 'link'));
  return { root, outside };
}

const owner = (path: string): string => {
  const s = lstatSync(path);
  return `${s.uid}:${s.gid}`;
};
const asContainer = (caps: string[], script: string): { command: string; args: string[] } => ({
  command: 'setpriv',
  args: [
    `--bounding-set=-all,${caps.map((c) => `+${c.toLowerCase()}`).join(',')}`,
    '--inh-caps=-all',
    '--',
    'sh',
    '-c',
    script,
  ],
});

t.test(
  'it hands every entry of the volume to uid 1001, follows no link, and needs exactly its two capabilities',
  async (t) => {
    const { script, caps } = await renderedCommand(t);
    t.same(caps, ['CHOWN', 'DAC_OVERRIDE']);
    const dir = privateDir('storage-permissions');
    const { root, outside } = volume(dir);
    const local = script.replaceAll('/app/api/storage', root);
    t.not(local, script, 'the command names /app/api/storage');

    const withoutDac = await runProgram({ name: 'storage-permissions-chown-only', ...asContainer(['CHOWN'], local) });
    t.not(withoutDac.status, 0, 'CHOWN alone cannot enter a 0700 folder of another user');
    t.equal(owner(join(root, 'private', 'b.txt')), '4242:4242', 'and leaves what is inside as it was');

    const run = await runProgram({ name: 'storage-permissions', ...asContainer(caps, local) });
    if (run.status !== 0) t.comment(run.stderr);
    t.equal(run.status, 0, 'the rendered command succeeds');
    for (const entry of [
      '',
      'upload_files',
      'upload_files/tenant',
      'upload_files/tenant/a.pdf',
      'private',
      'private/b.txt',
      'link',
    ]) {
      t.equal(owner(join(root, entry)), '1001:1001', `${entry || 'the volume root'} belongs to Dify's user`);
    }
    t.equal(owner(outside), '0:0', 'the file a link points to is left alone');
    const again = await runProgram({ name: 'storage-permissions-again', ...asContainer(caps, local) });
    t.equal(again.status, 0, 'a second start finds nothing to change and succeeds');
  },
);
