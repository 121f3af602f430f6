import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { gzipSync } from "node:zlib";
import { segmentMessageUuid } from "../../src/api/ingest/segment.mapping.js";
import { waitForStored } from "../conformance/pipeline.conformance.js";
import { PIPELINES_UNDER_TEST, pipelineEnv } from "../helpers/pipelines.js";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

/**
 * The Segment and PostHog doors on every pipeline's real store: each call maps as documented,
 * a retry is stored once (Segment's messageId, PostHog's uuid), an unmappable message refuses
 * its batch with the reason and is counted in the ledger, and the ledger adds up.
 */
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

const basic = (key: string) => `Basic ${Buffer.from(`${key}:`).toString("base64")}`;

interface StoredEvent {
  uuid: string;
  event: string;
  distinct_id: string;
  timestamp: string;
  properties: Record<string, unknown>;
}

async function storedEvents(tidemark: TestTidemark, readKey: string): Promise<StoredEvent[]> {
  const response = await tidemark.request("POST", "/api/v1/query", {
    key: readKey,
    body: { kind: "events", limit: 1000 },
  });
  assert.equal(response.status, 200, JSON.stringify(response.body));
  return response.body.events;
}

const segmentBatch = (run: string) => ({
  batch: [
    {
      type: "track",
      event: "Purchase",
      userId: `u-${run}`,
      properties: { amount: 49 },
      context: { ip: "203.0.113.7" },
      timestamp: "2026-11-02T09:00:00.000Z",
      messageId: `seg-track-${run}`,
    },
    {
      type: "identify",
      userId: `u-${run}`,
      anonymousId: `a-${run}`,
      traits: { email: "u@example.com" },
      messageId: `seg-identify-${run}`,
    },
    {
      type: "page",
      anonymousId: `a-${run}`,
      name: "Pricing",
      category: "Docs",
      messageId: `seg-page-${run}`,
    },
    { type: "screen", userId: `u-${run}`, name: "Home", messageId: `seg-screen-${run}` },
    {
      type: "group",
      userId: `u-${run}`,
      groupId: "acme",
      traits: { plan: "pro" },
      messageId: `seg-group-${run}`,
    },
    { type: "alias", userId: `u-${run}`, previousId: `a-${run}`, messageId: `seg-alias-${run}` },
  ],
});

const posthogBatch = (key: string, run: string) => ({
  api_key: key,
  sent_at: new Date().toISOString(),
  batch: [
    {
      event: "$identify",
      distinct_id: `ph-u-${run}`,
      properties: { $anon_distinct_id: `ph-a-${run}`, $set: { email: "p@example.com" } },
      uuid: randomUUID(),
    },
    {
      event: "$create_alias",
      distinct_id: `ph-u-${run}`,
      properties: { alias: `ph-a-${run}`, distinct_id: `ph-u-${run}` },
      uuid: randomUUID(),
    },
    { event: "$set", distinct_id: `ph-u-${run}`, properties: { $set: { plan: "pro" } }, uuid: randomUUID() },
    {
      event: "Signup",
      distinct_id: `ph-u-${run}`,
      properties: { source: "ads" },
      timestamp: "2026-11-03T10:00:00.000Z",
      uuid: randomUUID(),
    },
  ],
});

for (const pipeline of PIPELINES_UNDER_TEST) {
  test(`${pipeline}: Segment and PostHog calls map as documented, retries are stored once, refusals are counted`, {
    timeout: 180_000,
  }, async (t) => {
    const env = await pipelineEnv(pipeline, `sdk-${pipeline}`, cleanups);
    if (typeof env === "string") {
      t.skip(env);
      return;
    }
    const tidemark = await startTestTidemark(env);
    t.after(() => tidemark.close());
    const project = await tidemark.createProject("ENTERPRISE", `sdk ${pipeline}`);
    const run = randomUUID().slice(0, 8);
    // The async and cdc pipelines answer before the worker stores, so they cannot tell duplicates yet.
    const knows = pipeline === "embedded" || pipeline === "sync";

    // Segment: every call in one batch, the key as the Basic-auth user name; then the same batch
    // again (an SDK's retry), which changes nothing.
    const segment = segmentBatch(run);
    const first = await tidemark.request("POST", "/v1/batch", {
      headers: { authorization: basic(project.api_key) },
      body: segment,
    });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.success, true);
    assert.equal(first.body.count, 6);
    const retry = await tidemark.request("POST", "/v1/batch", {
      headers: { authorization: basic(project.api_key) },
      body: segment,
    });
    assert.equal(retry.status, 200);
    if (knows) assert.equal(retry.body.duplicates, 6);
    // A single call, the key in the body as analytics.js sends it.
    const single = await tidemark.request("POST", "/v1/track", {
      body: {
        userId: `u-${run}`,
        event: "Refund",
        writeKey: project.api_key,
        messageId: `seg-refund-${run}`,
      },
    });
    assert.equal(single.status, 200, JSON.stringify(single.body));
    assert.equal(single.body.uuid, segmentMessageUuid(`seg-refund-${run}`));

    // PostHog: a batch gzip-compressed as posthog-node sends it, then again; one event as a
    // base64 form (posthog-js's sendBeacon); one array as gzip bytes alone (posthog-js's gzip-js).
    const posthog = JSON.stringify(posthogBatch(project.api_key, run));
    const gz = async () =>
      fetch(`${tidemark.url}/batch/`, {
        method: "POST",
        headers: { "content-type": "application/json", "content-encoding": "gzip" },
        body: gzipSync(posthog),
      });
    const ph = await gz();
    assert.equal(ph.status, 200, await ph.clone().text());
    assert.deepEqual(((await ph.json()) as { status: number }).status, 1);
    const phRetry = (await (await gz()).json()) as { duplicates?: number };
    if (knows) assert.equal(phRetry.duplicates, 4);
    const form = `data=${encodeURIComponent(
      Buffer.from(
        JSON.stringify({
          event: "$pageleave",
          properties: { distinct_id: `ph-a-${run}`, token: project.api_key },
        }),
      ).toString("base64"),
    )}`;
    const beacon = await fetch(`${tidemark.url}/e/?compression=base64`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: form,
    });
    assert.equal(beacon.status, 200, await beacon.text());
    const gzipJs = await fetch(`${tidemark.url}/i/v0/e/`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: gzipSync(
        JSON.stringify({
          api_key: project.api_key,
          batch: [
            { event: "$pageview", properties: { distinct_id: `ph-a-${run}`, $current_url: "/pricing" } },
          ],
        }),
      ),
    });
    assert.equal(gzipJs.status, 200, await gzipJs.text());

    // Refused whole, with the reason and the index: an unknown call in a Segment batch of three,
    // and a PostHog batch of two with a session recording.
    const refused = await tidemark.request("POST", "/v1/batch", {
      headers: { authorization: basic(project.api_key) },
      body: { batch: [{ type: "track", userId: "x", event: "ok" }, { type: "flush" }, { type: "page" }] },
    });
    assert.equal(refused.status, 400);
    assert.deepEqual(
      refused.body.error.details.map((d: { index: number; field: string }) => [d.index, d.field]),
      [
        [1, "type"],
        [2, "userId"],
      ],
    );
    const recording = await tidemark.request("POST", "/capture/", {
      body: {
        api_key: project.api_key,
        batch: [
          { event: "ok", distinct_id: "x" },
          { event: "$snapshot", distinct_id: "x" },
        ],
      },
    });
    assert.equal(recording.status, 400);
    assert.equal(recording.body.error.details[0].index, 1);
    assert.match(recording.body.error.details[0].message, /session recording/);

    // 6 Segment + 1 single + 4 PostHog + 1 beacon + 1 gzip-js.
    const total = 13;
    await waitForStored(tidemark, project.id, total);
    const stats = (
      await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, { key: tidemark.token })
    ).body;
    const deadline = Date.now() + 30_000;
    let ledger = stats;
    while (ledger.duplicate < 10 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      ledger = (await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, { key: tidemark.token }))
        .body;
    }
    assert.deepEqual(
      {
        accepted: ledger.accepted,
        duplicate: ledger.duplicate,
        stored: ledger.stored,
        rejected: ledger.rejected,
        received: ledger.received,
      },
      {
        accepted: total,
        duplicate: 10,
        stored: total,
        rejected: { validation_failed: 5 },
        received: total + 10 + 5,
      },
    );

    const events = await storedEvents(tidemark, project.read_key);
    const byUuid = new Map(events.map((e) => [e.uuid, e]));
    const seg = (name: string) => {
      const event = byUuid.get(segmentMessageUuid(`seg-${name}-${run}`));
      assert.ok(event, `Segment ${name} stored under its messageId's uuid`);
      return event;
    };
    const library = { ip: "203.0.113.7" };
    assert.deepEqual(
      [seg("track").event, seg("track").distinct_id, seg("track").timestamp, seg("track").properties],
      ["Purchase", `u-${run}`, "2026-11-02T09:00:00.000Z", { amount: 49, $context: library }],
    );
    assert.deepEqual(
      [seg("identify").event, seg("identify").distinct_id, seg("identify").properties],
      ["$identify", `u-${run}`, { $set: { email: "u@example.com" }, $anon_distinct_id: `a-${run}` }],
    );
    assert.deepEqual(
      [seg("page").event, seg("page").distinct_id, seg("page").properties],
      ["Page View", `a-${run}`, { name: "Pricing", category: "Docs" }],
    );
    assert.deepEqual([seg("screen").event, seg("screen").properties], ["Screen View", { name: "Home" }]);
    assert.deepEqual(
      [seg("group").event, seg("group").properties],
      ["$groupidentify", { $group_type: "group", $group_key: "acme", $group_set: { plan: "pro" } }],
    );
    assert.deepEqual(
      [seg("alias").event, seg("alias").distinct_id, seg("alias").properties],
      ["$create_alias", `u-${run}`, { alias: `a-${run}` }],
    );
    assert.equal(seg("refund").event, "Refund");

    const sent = JSON.parse(posthog) as ReturnType<typeof posthogBatch>;
    for (const event of sent.batch) {
      const stored = byUuid.get(event.uuid);
      assert.ok(stored, `PostHog ${event.event} stored under its uuid`);
      assert.deepEqual(
        [stored.event, stored.distinct_id, stored.properties],
        [event.event, event.distinct_id, event.properties],
      );
    }
    const pageleave = events.find((e) => e.event === "$pageleave");
    assert.deepEqual(pageleave?.properties, { distinct_id: `ph-a-${run}` }, "the token is not stored");
    assert.equal(events.find((e) => e.event === "$pageview")?.distinct_id, `ph-a-${run}`);
  });
}
