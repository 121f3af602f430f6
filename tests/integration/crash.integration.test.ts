import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { freePort, startChildServer, storedUuids } from "../helpers/child-server.js";

interface Load {
  acknowledged: Set<string>;
  sent: number;
  stop(): Promise<void>;
}

/** Concurrent writers sending batches of 10 with their own uuids until stopped or refused. */
function startLoad(url: string, apiKey: string, writers = 16): Load {
  const acknowledged = new Set<string>();
  let running = true;
  let sent = 0;
  const loops = Array.from({ length: writers }, async (_, writer) => {
    for (let i = 0; running && i < 100_000; i++) {
      const events = Array.from({ length: 10 }, (_, j) => ({
        event: "Crash Test",
        distinct_id: `writer_${writer}`,
        uuid: randomUUID(),
        properties: { i, j },
      }));
      try {
        sent += events.length;
        const response = await fetch(`${url}/api/v1/event/batch`, {
          method: "POST",
          headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
          body: JSON.stringify({ events }),
        });
        if (response.status === 202) for (const e of events) acknowledged.add(e.uuid);
        await response.arrayBuffer();
      } catch {
        return; // the server is gone
      }
    }
  });
  return {
    acknowledged,
    get sent() {
      return sent;
    },
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

async function createProject(
  url: string,
  token: string,
): Promise<{ id: string; api_key: string; read_key: string }> {
  const response = await fetch(`${url}/api/v1/project`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "crash", plan: "ENTERPRISE" }),
  });
  assert.equal(response.status, 201);
  return (await response.json()) as { id: string; api_key: string; read_key: string };
}

function assertExactlyOnce(acknowledged: Set<string>, stored: string[]): void {
  assert.equal(new Set(stored).size, stored.length, "no uuid is stored twice");
  const storedSet = new Set(stored);
  const lost = [...acknowledged].filter((uuid) => !storedSet.has(uuid));
  assert.deepEqual(lost.slice(0, 5), [], `${lost.length} acknowledged events were lost`);
}

for (const signal of ["SIGKILL", "SIGTERM"] as const) {
  test(`${signal} under concurrent load loses no acknowledged event`, { timeout: 120_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "tidemark-crash-"));
    const env = {
      TIDEMARK_DATA_DIR: dataDir,
      SECRET_TOKEN: "crash-test-token",
      PORT: String(await freePort()),
    };
    try {
      const first = await startChildServer(env);
      const project = await createProject(first.url, env.SECRET_TOKEN);
      const load = startLoad(first.url, project.api_key);
      // Let the load run until a good number of commits happened, then stop the server mid-flight.
      const deadline = Date.now() + 10_000;
      while (load.acknowledged.size < 3000 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      first.process.kill(signal);
      const exit = await first.exited;
      await load.stop();
      if (signal === "SIGTERM") assert.equal(exit, 0, `graceful shutdown exits 0:\n${first.output()}`);
      assert.ok(
        load.acknowledged.size >= 1000,
        `only ${load.acknowledged.size} events were acknowledged before the ${signal}`,
      );

      const second = await startChildServer(env);
      try {
        const stored = await storedUuids(second.url, project.read_key);
        assertExactlyOnce(load.acknowledged, stored);
        const stats = await (
          await fetch(`${second.url}/api/v1/project/${project.id}/stats`, {
            headers: { authorization: `Bearer ${env.SECRET_TOKEN}` },
          })
        ).json();
        assert.equal((stats as { stored: number }).stored, stored.length);
        assert.equal(
          (stats as { accepted: number }).accepted,
          stored.length,
          "the ledger's accepted matches the store",
        );
      } finally {
        second.process.kill("SIGTERM");
        await second.exited;
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
}
