import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { Analytics } from "@segment/analytics-node";
import { PostHog } from "posthog-node";
import { segmentMessageUuid } from "../../src/api/ingest/segment.mapping.js";
import { waitForStored } from "../conformance/pipeline.conformance.js";
import { startDropProxy } from "../helpers/drop-proxy.js";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

/**
 * Segment's and PostHog's own Node libraries, installed from npm and unchanged, pointed at a
 * running Tidemark (embedded) through a proxy that cuts off the answer to their first request
 * after Tidemark stored it: each library retries on its own, and every call is stored once. The
 * query API then answers what the documented mapping of the calls says, computed here from the
 * calls themselves.
 */
let tidemark: TestTidemark;
before(async () => {
  tidemark = await startTestTidemark();
});
after(() => tidemark.close());

interface Expected {
  event: string;
  distinct_id: string;
  /** Epoch ms; undefined for a call the library stamps with the time of the call. */
  at?: number;
  properties?: Record<string, unknown>;
}

const at = (iso: string) => Date.parse(iso);
const RANGE = { from: "2026-11-01", to: "2100-01-01" };

async function query(readKey: string, spec: Record<string, unknown>) {
  const response = await tidemark.request("POST", "/api/v1/query", { key: readKey, body: spec });
  assert.equal(response.status, 200, JSON.stringify(response.body));
  delete response.body.took_ms;
  return response.body;
}

async function ledger(projectId: string) {
  return (await tidemark.request("GET", `/api/v1/project/${projectId}/stats`, { key: tidemark.token })).body;
}

/** What top_events must answer for the expected events, counted here. */
function topEvents(expected: readonly Expected[]) {
  const counts = new Map<string, number>();
  for (const e of expected) counts.set(e.event, (counts.get(e.event) ?? 0) + 1);
  return [...counts]
    .map(([event, count]) => ({ event, count }))
    .sort((a, b) => b.count - a.count || a.event.localeCompare(b.event));
}

/** The funnel Signup -> Purchase within a day, per user, counted here. */
function signupToPurchase(expected: readonly Expected[]) {
  const users = new Set(expected.filter((e) => e.event === "Signup").map((e) => e.distinct_id));
  let converted = 0;
  for (const user of users) {
    const signup = Math.min(
      ...expected.filter((e) => e.event === "Signup" && e.distinct_id === user).map((e) => e.at!),
    );
    if (
      expected.some(
        (e) =>
          e.event === "Purchase" && e.distinct_id === user && e.at! >= signup && e.at! <= signup + 86_400_000,
      )
    )
      converted++;
  }
  return [users.size, converted];
}

/** Checks the query API against the expected events. */
async function checkAnswers(readKey: string, expected: readonly Expected[]): Promise<void> {
  const top = await query(readKey, { kind: "top_events", ...RANGE, limit: 50 });
  assert.deepEqual(
    [...top.events].sort(
      (a: { count: number; event: string }, b: { count: number; event: string }) =>
        b.count - a.count || a.event.localeCompare(b.event),
    ),
    topEvents(expected),
  );
  const funnel = await query(readKey, {
    kind: "funnel",
    steps: ["Signup", "Purchase"],
    window_seconds: 86_400,
    ...RANGE,
  });
  assert.deepEqual(
    funnel.steps.map((s: { count: number }) => s.count),
    signupToPurchase(expected),
  );
  const purchases = await query(readKey, {
    kind: "trends",
    event: "Purchase",
    math: "unique_users",
    interval: "week",
    ...RANGE,
  });
  assert.equal(
    purchases.series[0].total,
    new Set(expected.filter((e) => e.event === "Purchase").map((e) => e.distinct_id)).size,
  );
  // Each event as stored: its name, who, when (to the second: the libraries' sentAt corrects the
  // clock by the milliseconds the request took) and the properties the mapping documents.
  const { events } = await query(readKey, { kind: "events", limit: 100 });
  assert.equal(events.length, expected.length);
  for (const e of expected) {
    const found = events.find(
      (s: { event: string; distinct_id: string; timestamp: string }) =>
        s.event === e.event &&
        s.distinct_id === e.distinct_id &&
        (e.at === undefined || Math.abs(Date.parse(s.timestamp) - e.at) < 1000),
    );
    assert.ok(found, `stored: ${JSON.stringify(e)}`);
    for (const [key, value] of Object.entries(e.properties ?? {}))
      assert.deepEqual(found.properties[key], value, `${e.event} ${e.distinct_id}: properties.${key}`);
  }
}

test("@segment/analytics-node: every call maps as documented, its retry is stored once", {
  timeout: 120_000,
}, async () => {
  const project = await tidemark.createProject("ENTERPRISE", "segment sdk");
  const proxy = await startDropProxy(tidemark.url, /^POST \/v1\/batch/);
  const errors: unknown[] = [];
  const analytics = new Analytics({
    writeKey: project.api_key,
    host: proxy.url,
    flushAt: 50,
    flushInterval: 60_000,
  });
  analytics.on("error", (error) => errors.push(error));
  const run = randomUUID().slice(0, 8);
  const alice = `alice-${run}`;
  const bob = `bob-${run}`;
  const anon = `anon-${run}`;
  const ts = (iso: string) => ({ timestamp: new Date(iso) });
  analytics.page({
    anonymousId: anon,
    name: "Pricing",
    properties: { path: "/pricing" },
    ...ts("2026-11-02T07:55:00Z"),
  });
  analytics.identify({
    userId: alice,
    anonymousId: anon,
    traits: { email: "alice@example.com", plan: "pro" },
    ...ts("2026-11-02T08:00:00Z"),
  });
  analytics.alias({ userId: alice, previousId: anon, ...ts("2026-11-02T08:00:01Z") });
  analytics.track({ userId: alice, event: "Signup", ...ts("2026-11-02T08:01:00Z") });
  analytics.group({ userId: alice, groupId: "acme", traits: { seats: 5 }, ...ts("2026-11-02T08:02:00Z") });
  analytics.track({
    userId: alice,
    event: "Purchase",
    properties: { amount: 49 },
    ...ts("2026-11-02T09:00:00Z"),
  });
  analytics.track({ userId: bob, event: "Signup", ...ts("2026-11-03T10:00:00Z") });
  analytics.screen({ userId: bob, name: "Home", ...ts("2026-11-03T10:01:00Z") });
  analytics.track({
    userId: bob,
    event: "Purchase",
    properties: { amount: 19 },
    messageId: `order-19-${run}`,
    ...ts("2026-11-05T12:00:00Z"),
  });
  await analytics.closeAndFlush({ timeout: 60_000 });
  await proxy.close();
  assert.deepEqual(errors, []);

  // The first answer was cut off after Tidemark stored the batch; the library sent it again.
  assert.equal(proxy.dropped, 1);
  const batches = proxy.requests.filter((r) => r.startsWith("POST /v1/batch"));
  assert.equal(batches.length, 2, "the batch and the library's own retry");
  assert.match(batches[1]!, /\r\nx-retry-count: 1\r\n/i);
  assert.match(batches[0]!, /\r\nauthorization: Basic /i);

  const library = { name: "@segment/analytics-node", version: "3.1.0" };
  const expected: Expected[] = [
    {
      event: "Page View",
      distinct_id: anon,
      at: at("2026-11-02T07:55:00Z"),
      properties: { path: "/pricing", name: "Pricing" },
    },
    {
      event: "$identify",
      distinct_id: alice,
      at: at("2026-11-02T08:00:00Z"),
      properties: {
        $set: { email: "alice@example.com", plan: "pro" },
        $anon_distinct_id: anon,
        $context: { library },
      },
    },
    {
      event: "$create_alias",
      distinct_id: alice,
      at: at("2026-11-02T08:00:01Z"),
      properties: { alias: anon },
    },
    { event: "Signup", distinct_id: alice, at: at("2026-11-02T08:01:00Z") },
    {
      event: "$groupidentify",
      distinct_id: alice,
      at: at("2026-11-02T08:02:00Z"),
      properties: { $group_type: "group", $group_key: "acme", $group_set: { seats: 5 } },
    },
    { event: "Purchase", distinct_id: alice, at: at("2026-11-02T09:00:00Z"), properties: { amount: 49 } },
    { event: "Signup", distinct_id: bob, at: at("2026-11-03T10:00:00Z") },
    { event: "Screen View", distinct_id: bob, at: at("2026-11-03T10:01:00Z"), properties: { name: "Home" } },
    { event: "Purchase", distinct_id: bob, at: at("2026-11-05T12:00:00Z"), properties: { amount: 19 } },
  ];
  await waitForStored(tidemark, project.id, expected.length);
  const stats = await ledger(project.id);
  assert.deepEqual(
    { accepted: stats.accepted, duplicate: stats.duplicate, stored: stats.stored },
    { accepted: expected.length, duplicate: expected.length, stored: expected.length },
    "the retried batch is stored once",
  );
  await checkAnswers(project.read_key, expected);
  // A messageId is the idempotency key: the order is stored under the UUID v5 of its id.
  const orders = await query(project.read_key, { kind: "events", event: "Purchase", distinct_id: bob });
  assert.equal(orders.events[0].uuid, segmentMessageUuid(`order-19-${run}`));
});

test("posthog-node: capture, identify, alias, groups and flags work as documented; its retry is stored once", {
  timeout: 120_000,
}, async () => {
  const project = await tidemark.createProject("ENTERPRISE", "posthog sdk");
  const proxy = await startDropProxy(tidemark.url, /^POST \/batch\//);
  const errors: unknown[] = [];
  const posthog = new PostHog(project.api_key, {
    host: proxy.url,
    flushAt: 50,
    flushInterval: 60_000,
    fetchRetryDelay: 200,
  });
  posthog.on("error", (error) => errors.push(error));
  const run = randomUUID().slice(0, 8);
  const carol = `carol-${run}`;
  const dave = `dave-${run}`;
  const anon = `ph-anon-${run}`;

  // Flags first: Tidemark has none, and says so in the shape the library reads.
  assert.deepEqual(await posthog.getAllFlags(carol), {});
  const flags = await posthog.evaluateFlags(carol);
  assert.equal(flags.getFlag("new-checkout"), undefined);
  assert.equal(flags.isEnabled("new-checkout"), false);

  const uuids = { carolPurchase: randomUUID(), daveSignup: randomUUID() };
  posthog.capture({
    distinctId: anon,
    event: "$pageview",
    properties: { $current_url: "/pricing" },
    timestamp: new Date("2026-11-02T07:55:00Z"),
  });
  posthog.identify({
    distinctId: carol,
    properties: { $set: { email: "carol@example.com" }, $anon_distinct_id: anon },
  });
  posthog.alias({ distinctId: carol, alias: anon });
  posthog.capture({ distinctId: carol, event: "Signup", timestamp: new Date("2026-11-02T08:01:00Z") });
  posthog.capture({
    distinctId: carol,
    event: "Purchase",
    properties: { amount: 49 },
    timestamp: new Date("2026-11-02T09:00:00Z"),
    uuid: uuids.carolPurchase,
  });
  posthog.groupIdentify({
    groupType: "company",
    groupKey: "acme",
    properties: { seats: 5 },
    distinctId: carol,
  });
  posthog.capture({
    distinctId: dave,
    event: "Signup",
    timestamp: new Date("2026-11-03T10:00:00Z"),
    uuid: uuids.daveSignup,
  });
  posthog.capture({
    distinctId: dave,
    event: "Purchase",
    properties: { amount: 19 },
    timestamp: new Date("2026-11-05T12:00:00Z"),
  });
  await posthog.shutdown(60_000);
  await proxy.close();
  assert.deepEqual(errors, []);

  assert.equal(proxy.dropped, 1);
  const batches = proxy.requests.filter((r) => r.startsWith("POST /batch/"));
  assert.equal(batches.length, 2, "the batch and the library's own retry");
  assert.match(batches[0]!, /\r\ncontent-encoding: gzip\r\n/i, "posthog-node sends gzip");

  const expected: Expected[] = [
    // The library reports the flag it was asked about, as it does against PostHog.
    { event: "$feature_flag_called", distinct_id: carol, properties: { $feature_flag: "new-checkout" } },
    {
      event: "$pageview",
      distinct_id: anon,
      at: at("2026-11-02T07:55:00Z"),
      properties: { $current_url: "/pricing", $lib: "posthog-node" },
    },
    {
      event: "$identify",
      distinct_id: carol,
      properties: { $set: { email: "carol@example.com" }, $anon_distinct_id: anon },
    },
    { event: "$create_alias", distinct_id: carol, properties: { alias: anon } },
    { event: "Signup", distinct_id: carol, at: at("2026-11-02T08:01:00Z") },
    { event: "Purchase", distinct_id: carol, at: at("2026-11-02T09:00:00Z"), properties: { amount: 49 } },
    {
      event: "$groupidentify",
      distinct_id: carol,
      properties: { $group_type: "company", $group_key: "acme", $group_set: { seats: 5 } },
    },
    { event: "Signup", distinct_id: dave, at: at("2026-11-03T10:00:00Z") },
    { event: "Purchase", distinct_id: dave, at: at("2026-11-05T12:00:00Z"), properties: { amount: 19 } },
  ];
  await waitForStored(tidemark, project.id, expected.length);
  const stats = await ledger(project.id);
  assert.deepEqual(
    { accepted: stats.accepted, duplicate: stats.duplicate, stored: stats.stored },
    { accepted: expected.length, duplicate: expected.length, stored: expected.length },
    "the retried batch is stored once",
  );
  await checkAnswers(project.read_key, expected);
  const purchase = await query(project.read_key, { kind: "events", event: "Purchase", distinct_id: carol });
  assert.equal(purchase.events[0].uuid, uuids.carolPurchase, "stored under the library's uuid");
  const tokens = JSON.stringify((await query(project.read_key, { kind: "events", limit: 100 })).events);
  assert.ok(!tokens.includes(project.api_key), "the write key is not stored in any event");
});
