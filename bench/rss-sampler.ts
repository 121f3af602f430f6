/**
 * Peak resident memory of processes and their descendants, sampled every second by a process of
 * its own (this file, run by node). A sample walks all of /proc with synchronous reads and asks
 * `ss` which process listens on a service's port; on the load generator's thread that stalled
 * autocannon for tens of milliseconds a second under load, which it then counted as the server's
 * latency.
 */
import { spawn, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** A process to watch: by pid, or as whatever listens on a local TCP port (a service). */
export interface RssTarget {
  name: string;
  pid?: number;
  port?: number;
}

export interface RssSampler {
  /** Stops sampling; the peak of each target that was found, in MB. */
  stop(): Promise<Map<string, number>>;
}

export function startRssSampler(targets: readonly RssTarget[]): RssSampler {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, ["--import", "tsx", self, JSON.stringify(targets)], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    async stop() {
      // Closing its input is the sampler's signal to print the peaks and exit.
      child.stdin.end();
      await exited;
      return new Map(JSON.parse(output || "[]") as [string, number][]);
    },
  };
}

/** Each process's children, from one walk of /proc. */
function childrenByParent(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone
    }
  }
  return children;
}

/** Resident memory of a process and all its descendants (a Postgres server is many processes). */
function treeRssMb(pid: number, children: Map<number, number[]>): number {
  let kb = 0;
  const visit = (p: number) => {
    try {
      const status = readFileSync(`/proc/${p}/status`, "utf8");
      kb += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {
      // gone
    }
    for (const child of children.get(p) ?? []) visit(child);
  };
  visit(pid);
  return kb / 1024;
}

/** The process listening on a local TCP port. */
function listenerPid(port: number): number | undefined {
  const result = spawnSync("ss", ["-ltnpH", `sport = :${port}`], { encoding: "utf8" });
  const match = /pid=(\d+)/.exec(result.stdout);
  return match ? Number(match[1]) : undefined;
}

function sampleUntilStopped(targets: readonly RssTarget[]): void {
  const peaks = new Map<string, number>();
  // A service's pid is looked up until found, then kept: `ss` costs a process spawn.
  const pids = new Map<string, number>();
  const sample = () => {
    const children = childrenByParent();
    for (const target of targets) {
      let pid = target.pid ?? pids.get(target.name);
      if (pid === undefined && target.port !== undefined) {
        pid = listenerPid(target.port);
        if (pid !== undefined) pids.set(target.name, pid);
      }
      if (pid !== undefined)
        peaks.set(target.name, Math.max(peaks.get(target.name) ?? 0, treeRssMb(pid, children)));
    }
  };
  sample();
  const timer = setInterval(sample, 1000);
  process.stdin.resume().once("end", () => {
    clearInterval(timer);
    sample();
    process.stdout.write(JSON.stringify([...peaks]));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url))
  sampleUntilStopped(JSON.parse(process.argv[2] ?? "[]") as RssTarget[]);
