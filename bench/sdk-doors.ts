/**
 * The SDK doors against Tidemark's own: the same events sent as `POST /api/v1/event` and
 * `/api/v1/event/batch`, as Segment's `/v1/track` and `/v1/batch` (write key as the Basic-auth
 * user), and as PostHog's `/capture/` and `/batch/` (write key in the body). Each door stores the
 * same events (same names, users and properties). The runs alternate door by door, so drift on a
 * shared machine falls on every door alike. Target (issue 12): each door within 10 % of the
 * native route's req/s. Method: bench/README.md.
 */
import { readFileSync } from "node:fs";
import { type LoadResult, runLoad } from "./load.js";

/**
 * CPU time the server process has used (every thread: HTTP, validation, the store), in ms, from
 * /proc/<pid>/stat (utime + stime, in clock ticks of 1/100 s on Linux).
 */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

interface Event {
  event: string;
  distinct_id: string;
  properties: Record<string, unknown>;
}

export interface DoorComparison {
  results: (LoadResult & { cpuUsPerEvent: number })[];
  /**
   * Per SDK door: its req/s as a share of the native route's for the same events, per round
   * (runs next to each other in time) and their median.
   */
  ratios: {
    door: string;
    native: string;
    ratio: number;
    rounds: number[];
    cpu: number;
    cpuRounds: number[];
  }[];
}

const basic = (key: string) => `Basic ${Buffer.from(`${key}:`).toString("base64")}`;
const track = (e: Event) => ({
  type: "track",
  userId: e.distinct_id,
  event: e.event,
  properties: e.properties,
});

export async function compareDoors(options: {
  url: string;
  keys: readonly string[];
  single: Event;
  batch: readonly Event[];
  connections: number;
  durationS: number;
  /** Rounds of the six runs. */
  rounds: number;
  /** The server's process, whose CPU time per event each run measures. */
  serverPid: number;
}): Promise<DoorComparison> {
  const { url, keys, single, batch } = options;
  const posthogSingle = new Map(keys.map((k) => [k, JSON.stringify({ api_key: k, ...single })]));
  const posthogBatch = new Map(keys.map((k) => [k, JSON.stringify({ api_key: k, batch })]));
  const json = { "content-type": "application/json" };
  const scenarios = [
    { name: "POST /api/v1/event", path: "/api/v1/event", body: JSON.stringify(single), events: 1 },
    {
      name: "Segment POST /v1/track",
      path: "/v1/track",
      body: JSON.stringify(track(single)),
      events: 1,
      keyed: (k: string) => ({ headers: { ...json, authorization: basic(k) } }),
    },
    {
      name: "PostHog POST /capture/",
      path: "/capture/",
      body: posthogSingle.get(keys[0]!)!,
      events: 1,
      keyed: (k: string) => ({ headers: json, body: posthogSingle.get(k)! }),
    },
    {
      name: `POST /api/v1/event/batch (${batch.length})`,
      path: "/api/v1/event/batch",
      body: JSON.stringify({ events: batch }),
      events: batch.length,
    },
    {
      name: `Segment POST /v1/batch (${batch.length})`,
      path: "/v1/batch",
      body: JSON.stringify({ batch: batch.map(track) }),
      events: batch.length,
      keyed: (k: string) => ({ headers: { ...json, authorization: basic(k) } }),
    },
    {
      name: `PostHog POST /batch/ (${batch.length})`,
      path: "/batch/",
      body: posthogBatch.get(keys[0]!)!,
      events: batch.length,
      keyed: (k: string) => ({ headers: json, body: posthogBatch.get(k)! }),
    },
  ];
  // Each round runs the three doors of a kind back to back, in turn forwards and backwards, so
  // drift in what else the machine runs falls on every door alike; each round gives one ratio
  // per door, and the median over the rounds is reported.
  const runs = new Map<string, (LoadResult & { cpuUsPerEvent: number })[]>();
  const perRound: number[][] = [[], [], [], []];
  const cpuPerRound: number[][] = [[], [], [], []];
  for (let round = 0; round < options.rounds; round++) {
    const rps = new Map<number, number>();
    const cpu = new Map<number, number>();
    for (const group of [
      [0, 1, 2],
      [3, 4, 5],
    ]) {
      for (const index of round % 2 === 0 ? group : [...group].reverse()) {
        const s = scenarios[index]!;
        const cpuBefore = cpuMs(options.serverPid);
        const load = await runLoad({
          name: s.name,
          url: `${url}${s.path}`,
          body: s.body,
          eventsPerRequest: s.events,
          keys,
          connections: options.connections,
          durationS: options.durationS,
          ...(s.keyed ? { keyed: s.keyed } : {}),
        });
        // The server's CPU per stored event: what the door costs, whatever else the machine runs.
        const result = {
          ...load,
          cpuUsPerEvent: ((cpuMs(options.serverPid) - cpuBefore) * 1000) / Math.max(1, load.ok * s.events),
        };
        runs.set(s.name, [...(runs.get(s.name) ?? []), result]);
        rps.set(index, result.rps);
        cpu.set(index, result.cpuUsPerEvent);
      }
    }
    [
      [1, 0],
      [2, 0],
      [4, 3],
      [5, 3],
    ].forEach(([door, native], k) => {
      perRound[k]!.push(rps.get(door!)! / rps.get(native!)!);
      cpuPerRound[k]!.push(cpu.get(door!)! / cpu.get(native!)!);
    });
  }
  // Over the rounds: the mean throughput, each latency percentile the worst round's.
  const results = scenarios.map((s): LoadResult & { cpuUsPerEvent: number } => {
    const all = runs.get(s.name)!;
    const sum = (pick: (r: LoadResult & { cpuUsPerEvent: number }) => number) =>
      all.reduce((total, r) => total + pick(r), 0);
    const worst = (pick: (r: LoadResult) => number) => Math.max(...all.map(pick));
    return {
      name: s.name,
      requests: sum((r) => r.requests),
      ok: sum((r) => r.ok),
      rps: sum((r) => r.rps) / all.length,
      eventsPerSecond: sum((r) => r.eventsPerSecond) / all.length,
      p50: worst((r) => r.p50),
      p95: worst((r) => r.p95),
      p99: worst((r) => r.p99),
      p999: worst((r) => r.p999),
      max: worst((r) => r.max),
      non2xx: sum((r) => r.non2xx),
      errors: sum((r) => r.errors),
      cpuUsPerEvent: sum((r) => r.cpuUsPerEvent) / all.length,
    };
  });
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  const ratio = (k: number, door: number, native: number) => ({
    door: results[door]!.name,
    native: results[native]!.name,
    ratio: median(perRound[k]!),
    rounds: perRound[k]!,
    cpu: median(cpuPerRound[k]!),
    cpuRounds: cpuPerRound[k]!,
  });
  return { results, ratios: [ratio(0, 1, 0), ratio(1, 2, 0), ratio(2, 4, 3), ratio(3, 5, 3)] };
}
