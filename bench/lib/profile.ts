// Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: self time by function and
// by area (dify-guard's own folders, each npm package, each node: module, GC), and inclusive time
// by function (recursion counted once), so a missed target can be pinned to a function.
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  where: string;
  ms: number;
  pct: number;
  /** Microseconds per request served during the profile, when the request count is known. */
  usPerRequest?: number;
}

export interface ProfileSummary {
  file: string;
  /** Sampling interval (median gap between samples); every sample counts for one interval. */
  intervalUs: number;
  sampledMs: number;
  /** Everything but (idle): what the process was busy with. */
  busyMs: number;
  /** Requests answered during the profile (0 when unknown). */
  requests: number;
  busyUsPerRequest: number;
  byArea: ProfileEntry[];
  topSelf: ProfileEntry[];
  topInclusive: ProfileEntry[];
}

/** The folder or package a script belongs to, e.g. `src/http`, `fastify`, `node:tls`. */
export function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName === '(garbage collector)') return '(garbage collector)';
    if (functionName === '(program)' || functionName === '(idle)' || functionName === '(root)') return functionName;
    return '(native builtins)';
  }
  const packageMatch = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (packageMatch?.[1]) return packageMatch[1];
  const srcMatch = /\/dist\/src\/(?:([^/]+)\/)?[^/]+$/.exec(url) ?? /\/src\/(?:([^/]+)\/)?[^/]+$/.exec(url);
  if (srcMatch) return srcMatch[1] ? `src/${srcMatch[1]}` : 'src';
  const nodeMatch = /^node:(?:internal\/)?([^/]+)/.exec(url);
  if (nodeMatch?.[1]) return `node:${nodeMatch[1].replace(/^_/, '').replace(/_.*$/, '')}`;
  return url
    .replace(/^file:\/\//, '')
    .split('/')
    .slice(-2)
    .join('/');
}

const where = (frame: CallFrame): string =>
  frame.url ? `${frame.url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/')}:${frame.lineNumber + 1}` : '';
const nameOf = (frame: CallFrame): string => frame.functionName || '(anonymous)';

export function summarizeProfile(file: string, requests = 0, top = 20): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  // The in-process inspector session's own frames (starting and stopping the profile) are the
  // profiler's cost, not the server's: their samples are left out.
  const excluded = new Set<number>();
  const exclude = (node: ProfileNode): void => {
    excluded.add(node.id);
    for (const child of node.children ?? []) {
      const c = byId.get(child);
      if (c) exclude(c);
    }
  };
  for (const node of profile.nodes)
    if (node.callFrame.url === 'node:inspector' || node.callFrame.url === 'node:inspector/promises') exclude(node);
  // Each sample weighs the sampling interval (the median gap). The actual gaps are wall-clock: on
  // a shared machine a descheduled process shows a long gap charged to whatever syscall it was in.
  const gaps = [...profile.timeDeltas].sort((a, b) => a - b);
  const intervalUs = gaps[Math.floor(gaps.length / 2)] ?? 1000;
  const self = new Map<number, number>();
  let sampledUs = 0;
  for (const id of profile.samples) {
    if (excluded.has(id)) continue;
    sampledUs += intervalUs;
    self.set(id, (self.get(id) ?? 0) + intervalUs);
  }
  const idleUs = profile.nodes
    .filter((n) => n.callFrame.functionName === '(idle)')
    .reduce((sum, n) => sum + (self.get(n.id) ?? 0), 0);
  const busyUs = sampledUs - idleUs;
  const entry = (name: string, at: string, us: number): ProfileEntry => ({
    name,
    where: at,
    ms: Math.round(us / 100) / 10,
    pct: busyUs > 0 ? Math.round((us / busyUs) * 1000) / 10 : 0,
    ...(requests > 0 ? { usPerRequest: Math.round((us / requests) * 10) / 10 } : {}),
  });

  const areas = new Map<string, number>();
  const selfByFunction = new Map<string, { frame: CallFrame; us: number }>();
  for (const node of profile.nodes) {
    const us = self.get(node.id) ?? 0;
    if (us === 0 || node.callFrame.functionName === '(idle)') continue;
    const area = areaOf(node.callFrame);
    areas.set(area, (areas.get(area) ?? 0) + us);
    const key = `${nameOf(node.callFrame)} ${where(node.callFrame)}`;
    const prior = selfByFunction.get(key);
    selfByFunction.set(key, { frame: node.callFrame, us: (prior?.us ?? 0) + us });
  }

  // Inclusive time: a function's own samples plus its callees', counted once along each stack.
  const inclusive = new Map<string, { frame: CallFrame; us: number }>();
  const totals = new Map<number, number>();
  const totalOf = (node: ProfileNode): number => {
    const cached = totals.get(node.id);
    if (cached !== undefined) return cached;
    let sum = self.get(node.id) ?? 0;
    for (const child of node.children ?? []) {
      const childNode = byId.get(child);
      if (childNode) sum += totalOf(childNode);
    }
    totals.set(node.id, sum);
    return sum;
  };
  const root = profile.nodes[0];
  const onStack = new Map<string, number>();
  const visit = (node: ProfileNode): void => {
    const key = `${nameOf(node.callFrame)} ${where(node.callFrame)}`;
    const outermost = (onStack.get(key) ?? 0) === 0;
    if (outermost && node.callFrame.url) {
      const prior = inclusive.get(key);
      inclusive.set(key, { frame: node.callFrame, us: (prior?.us ?? 0) + totalOf(node) });
    }
    onStack.set(key, (onStack.get(key) ?? 0) + 1);
    for (const child of node.children ?? []) {
      const childNode = byId.get(child);
      if (childNode) visit(childNode);
    }
    onStack.set(key, (onStack.get(key) ?? 1) - 1);
  };
  if (root) visit(root);

  const sorted = <T extends { us: number }>(map: Map<string, T>): [string, T][] =>
    [...map.entries()].sort((a, b) => b[1].us - a[1].us);
  return {
    file,
    intervalUs,
    sampledMs: Math.round(sampledUs / 1000),
    busyMs: Math.round(busyUs / 1000),
    requests,
    busyUsPerRequest: requests > 0 ? Math.round(busyUs / requests) : 0,
    byArea: [...areas.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([area, us]) => entry(area, '', us)),
    topSelf: sorted(selfByFunction)
      .slice(0, top)
      .map(([, v]) => entry(nameOf(v.frame), where(v.frame), v.us)),
    topInclusive: sorted(inclusive)
      .slice(0, top)
      .map(([, v]) => entry(nameOf(v.frame), where(v.frame), v.us)),
  };
}
