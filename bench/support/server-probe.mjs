// Preloaded (`node --import`) into each measured server process: counts every HTTP request the
// process makes (the kube client's calls to the API server go through undici, anything else
// through node:http), and on SIGUSR2 writes those counts with process.cpuUsage() and memory
// figures to BENCH_PROBE_FILE. The bench reads the file before and after each run. Before the
// snapshot, a command left in `<BENCH_PROBE_FILE>.cmd` is carried out: `profile-start`, or
// `profile-stop <file>` (V8 CPU profile of just that window, through an in-process inspector
// session). Nothing runs per admission request except a diagnostics-channel callback per outgoing
// request (there should be none). Plain JavaScript on purpose: a .ts preload would make Node load its type stripper into
// the measured process and add ~25 MiB to the RSS being measured. Snapshot shape: bench/lib/probe.ts.
import { subscribe } from 'node:diagnostics_channel';
import { existsSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

const file = process.env.BENCH_PROBE_FILE;
/** @type {Record<string, number>} `METHOD /path` (query dropped, `?watch` kept as a marker) -> requests. */
const calls = {};
let seq = 0;

/** @param {string} method @param {string} path */
function count(method, path) {
  const [pathname = '', query = ''] = path.split('?');
  const key = `${method} ${pathname}${/(^|&)watch=(true|1)/.test(query) ? '?watch' : ''}`;
  calls[key] = (calls[key] ?? 0) + 1;
}

subscribe('undici:request:create', (message) => {
  const { request } = /** @type {{ request: { method?: string, path?: string } }} */ (message);
  count(request.method ?? '?', request.path ?? '');
});
subscribe('http.client.request.start', (message) => {
  const { request } = /** @type {{ request: { method?: string, path?: string } }} */ (message);
  count(request.method ?? '?', request.path ?? '');
});

function snapshot() {
  if (!file) return;
  seq += 1;
  const memory = process.memoryUsage();
  const body = {
    pid: process.pid,
    seq,
    atNs: process.hrtime.bigint().toString(),
    cpuUsage: process.cpuUsage(),
    rssBytes: memory.rss,
    heapUsedBytes: memory.heapUsed,
    heapTotalBytes: memory.heapTotal,
    externalBytes: memory.external,
    arrayBuffersBytes: memory.arrayBuffers,
    maxRssKiB: process.resourceUsage().maxRSS,
    calls: { ...calls },
  };
  // Written aside and renamed, so the reader never sees half a file.
  writeFileSync(`${file}.tmp`, JSON.stringify(body));
  renameSync(`${file}.tmp`, file);
}

/** @type {Session | undefined} */
let profiler;

async function runCommand() {
  const commandFile = `${file}.cmd`;
  if (!existsSync(commandFile)) return;
  const command = readFileSync(commandFile, 'utf8').trim();
  unlinkSync(commandFile);
  if (command === 'profile-start' && !profiler) {
    profiler = new Session();
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.start');
  } else if (command.startsWith('profile-stop ') && profiler) {
    const { profile } = await profiler.post('Profiler.stop');
    writeFileSync(command.slice('profile-stop '.length), JSON.stringify(profile));
    profiler.disconnect();
    profiler = undefined;
  }
}

if (file) {
  process.on('SIGUSR2', () => {
    runCommand()
      .catch((error) => process.stderr.write(`server-probe: ${String(error)}\n`))
      .finally(snapshot);
  });
  snapshot();
}
