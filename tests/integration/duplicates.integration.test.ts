import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { waitForStored } from "../conformance/pipeline.conformance.js";
import { PIPELINES_UNDER_TEST, pipelineEnv } from "../helpers/pipelines.js";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

/**
 * A duplicate is defined per (project, uuid): the first copy of a uuid in a project is accepted,
 * every later copy (a retry, or a repeat in the same batch) is a duplicate, and another project's
 * use of the same uuid changes nothing. Checked on each pipeline's real store, with requests that
 * share one commit, and /metrics must count what the ledger counts.
 */
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

const event = (uuid: string, name = "Dup") => ({ event: name, distinct_id: "u", uuid });

async function metricCount(tidemark: TestTidemark, outcome: string): Promise<number> {
  const text = (await tidemark.request("GET", "/metrics")).body as string;
  const line = new RegExp(`^tidemark_ingest_events_total\\{outcome="${outcome}"\\} (\\d+)`, "m").exec(text);
  return Number(line?.[1] ?? 0);
}

async function ledger(tidemark: TestTidemark, projectId: string) {
  return (await tidemark.request("GET", `/api/v1/project/${projectId}/stats`, { key: tidemark.token })).body;
}

for (const pipeline of PIPELINES_UNDER_TEST) {
  test(`${pipeline}: duplicates are per (project, uuid), and /metrics agrees with the ledger`, {
    timeout: 120_000,
  }, async (t) => {
    const env = await pipelineEnv(pipeline, `dups-${pipeline}`, cleanups);
    if (typeof env === "string") {
      t.skip(env);
      return;
    }
    // A long flush interval makes concurrent requests share one commit.
    const tidemark = await startTestTidemark({ ...env, TIDEMARK_FLUSH_INTERVAL_MS: "100" });
    t.after(() => tidemark.close());
    const x = await tidemark.createProject("ENTERPRISE", `dup x ${pipeline}`);
    const y = await tidemark.createProject("ENTERPRISE", `dup y ${pipeline}`);
    const send = (key: string, body: unknown, batch = false) =>
      tidemark.request("POST", batch ? "/api/v1/event/batch" : "/api/v1/event", { key, body });
    // The async and cdc pipelines answer before the worker stores, so they cannot tell duplicates yet.
    const knows = pipeline === "embedded" || pipeline === "sync";

    const shared = randomUUID();
    const first = await send(x.api_key, event(shared));
    assert.equal(first.status, 202);
    if (knows) assert.equal(first.body.duplicate, false);
    await waitForStored(tidemark, x.id, 1);

    // X retries the uuid while Y uses it for the first time, in the same commit.
    const [retry, fresh] = await Promise.all([
      send(x.api_key, event(shared)),
      send(y.api_key, event(shared)),
    ]);
    assert.equal(retry.status, 202);
    assert.equal(fresh.status, 202);
    if (knows) {
      assert.equal(retry.body.duplicate, true, "X's retry is a duplicate");
      assert.equal(fresh.body.duplicate, false, "Y's first use is not a duplicate");
    } else {
      assert.equal(fresh.body.duplicate, undefined);
    }

    // Three copies of one uuid in a batch: one accepted, two duplicates. The same uuid in the
    // other project's batch, sent at the same time, is accepted there.
    const triple = randomUUID();
    const other = randomUUID();
    const [tripled, collided] = await Promise.all([
      send(y.api_key, { events: [event(triple), event(other), event(triple), event(triple)] }, true),
      send(x.api_key, { events: [event(triple), event(other)] }, true),
    ]);
    assert.equal(tripled.status, 202);
    assert.equal(collided.status, 202);
    if (knows) {
      assert.equal(tripled.body.duplicates, 2);
      assert.deepEqual(tripled.body.duplicate_indexes, [2, 3]);
      assert.deepEqual(tripled.body.duplicate_uuids, [triple]);
      assert.equal(collided.body.duplicates, 0);
      assert.deepEqual(collided.body.duplicate_uuids, []);
    }
    // A retried batch: every copy is a duplicate.
    const again = await send(x.api_key, { events: [event(triple), event(other)] }, true);
    assert.equal(again.status, 202);
    if (knows) assert.deepEqual(again.body.duplicate_indexes, [0, 1]);

    // X: shared, triple, other stored; Y: shared, triple, other stored.
    await waitForStored(tidemark, x.id, 3);
    await waitForStored(tidemark, y.id, 3);
    const deadline = Date.now() + 20_000;
    let lx = await ledger(tidemark, x.id);
    let ly = await ledger(tidemark, y.id);
    while (lx.duplicate + ly.duplicate < 5 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      lx = await ledger(tidemark, x.id);
      ly = await ledger(tidemark, y.id);
    }
    assert.deepEqual(
      { accepted: lx.accepted, duplicate: lx.duplicate, received: lx.received },
      { accepted: 3, duplicate: 3, received: 6 },
      "X: a retry and a retried batch of two",
    );
    assert.deepEqual(
      { accepted: ly.accepted, duplicate: ly.duplicate, received: ly.received },
      { accepted: 3, duplicate: 2, received: 5 },
      "Y: two in-batch repeats",
    );
    assert.equal(await metricCount(tidemark, "accepted"), lx.accepted + ly.accepted, "metrics: accepted");
    assert.equal(await metricCount(tidemark, "duplicate"), lx.duplicate + ly.duplicate, "metrics: duplicate");
  });
}
