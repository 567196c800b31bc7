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

/** The area of a frame without a script: GC, V8's own pseudo-frames, or native builtins. */
function builtinArea(functionName: string): string {
  if (['(garbage collector)', '(program)', '(idle)', '(root)'].includes(functionName)) return functionName;
  return '(native builtins)';
}

/** The area of a script URL: its npm package, its folder of src/, its node: module, or its last two path parts. */
function scriptArea(url: string): string {
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

/** The folder or package a script belongs to, e.g. `src/http`, `fastify`, `node:tls`. */
export function areaOf(frame: CallFrame): string {
  return frame.url ? scriptArea(frame.url) : builtinArea(frame.functionName);
}

const where = (frame: CallFrame): string =>
  frame.url ? `${frame.url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/')}:${frame.lineNumber + 1}` : '';
const nameOf = (frame: CallFrame): string => frame.functionName || '(anonymous)';
const keyOf = (frame: CallFrame): string => `${nameOf(frame)} ${where(frame)}`;

type Nodes = Map<number, ProfileNode>;
type Timed = Map<string, { frame: CallFrame; us: number }>;

const childrenOf = (node: ProfileNode, byId: Nodes): ProfileNode[] =>
  (node.children ?? []).flatMap((id) => byId.get(id) ?? []);

/**
 * The in-process inspector session's own frames (starting and stopping the profile) and what they
 * call are the profiler's cost, not the server's: their samples are left out.
 */
function inspectorNodes(profile: CpuProfile, byId: Nodes): Set<number> {
  const excluded = new Set<number>();
  const exclude = (node: ProfileNode): void => {
    excluded.add(node.id);
    for (const child of childrenOf(node, byId)) exclude(child);
  };
  for (const node of profile.nodes)
    if (node.callFrame.url === 'node:inspector' || node.callFrame.url === 'node:inspector/promises') exclude(node);
  return excluded;
}

/**
 * Each node's self time. Each sample weighs the sampling interval (the median gap). The actual gaps are
 * wall-clock: on a shared machine a descheduled process shows a long gap charged to whatever syscall it was in.
 */
function selfTimes(profile: CpuProfile, excluded: Set<number>) {
  const gaps = [...profile.timeDeltas].sort((a, b) => a - b);
  const intervalUs = gaps[Math.floor(gaps.length / 2)] ?? 1000;
  const self = new Map<number, number>();
  let sampledUs = 0;
  for (const id of profile.samples) {
    if (excluded.has(id)) continue;
    sampledUs += intervalUs;
    self.set(id, (self.get(id) ?? 0) + intervalUs);
  }
  return { self, intervalUs, sampledUs };
}

/** Self time by area and by function (idle left out). */
function selfAggregates(profile: CpuProfile, self: Map<number, number>) {
  const areas = new Map<string, number>();
  const byFunction: Timed = new Map();
  for (const node of profile.nodes) {
    const us = self.get(node.id) ?? 0;
    if (us === 0 || node.callFrame.functionName === '(idle)') continue;
    const area = areaOf(node.callFrame);
    areas.set(area, (areas.get(area) ?? 0) + us);
    const key = keyOf(node.callFrame);
    byFunction.set(key, { frame: node.callFrame, us: (byFunction.get(key)?.us ?? 0) + us });
  }
  return { areas, byFunction };
}

/** Inclusive time: a function's own samples plus its callees', counted once along each stack. */
function inclusiveTimes(profile: CpuProfile, byId: Nodes, self: Map<number, number>): Timed {
  const inclusive: Timed = new Map();
  const totals = new Map<number, number>();
  const totalOf = (node: ProfileNode): number => {
    const cached = totals.get(node.id);
    if (cached !== undefined) return cached;
    const sum = childrenOf(node, byId).reduce((acc, child) => acc + totalOf(child), self.get(node.id) ?? 0);
    totals.set(node.id, sum);
    return sum;
  };
  const onStack = new Map<string, number>();
  const visit = (node: ProfileNode): void => {
    const key = keyOf(node.callFrame);
    if ((onStack.get(key) ?? 0) === 0 && node.callFrame.url) {
      inclusive.set(key, { frame: node.callFrame, us: (inclusive.get(key)?.us ?? 0) + totalOf(node) });
    }
    onStack.set(key, (onStack.get(key) ?? 0) + 1);
    for (const child of childrenOf(node, byId)) visit(child);
    onStack.set(key, (onStack.get(key) ?? 1) - 1);
  };
  const root = profile.nodes[0];
  if (root) visit(root);
  return inclusive;
}

export function summarizeProfile(file: string, requests = 0, top = 20): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId: Nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const { self, intervalUs, sampledUs } = selfTimes(profile, inspectorNodes(profile, byId));
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
  const { areas, byFunction } = selfAggregates(profile, self);
  const topOf = (map: Timed): ProfileEntry[] =>
    [...map.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((v) => entry(nameOf(v.frame), where(v.frame), v.us));
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
    topSelf: topOf(byFunction),
    topInclusive: topOf(inclusiveTimes(profile, byId, self)),
  };
}
