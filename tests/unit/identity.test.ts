import assert from "node:assert/strict";
import { test } from "node:test";
import {
  IdentityResolver,
  type IdentitySource,
  type LinkRow,
  linkComponents,
  PROPERTY_REREAD_WINDOW_MS,
  type PropertyRow,
  parsePropertyRows,
  personProperties,
  queryPeople,
  toEngineKeys,
} from "../../src/query/identity.js";

const identify = (id: string, anon: string | null): LinkRow => ({
  distinctId: id,
  event: "$identify",
  anonId: anon,
  alias: null,
});
const alias = (id: string, other: string | null): LinkRow => ({
  distinctId: id,
  event: "$create_alias",
  anonId: null,
  alias: other,
});

test("components: linked ids share the smallest id as representative, whatever the order of links", () => {
  const links = [
    identify("user_d", "anon_d"),
    identify("user_e", "anon_e"),
    alias("user_d", "user_e"),
    identify("user_a", "anon_a"),
    alias("user_g", "ghost"),
    identify("user_h", "ghost"),
  ];
  const expected = new Map([
    ["user_d", "anon_d"],
    ["anon_d", "anon_d"],
    ["user_e", "anon_d"],
    ["anon_e", "anon_d"],
    ["user_a", "anon_a"],
    ["anon_a", "anon_a"],
    ["user_g", "ghost"],
    ["ghost", "ghost"],
    ["user_h", "ghost"],
  ]);
  for (const order of [links, [...links].reverse(), [links[2]!, ...links.slice(3), ...links.slice(0, 2)]]) {
    const components = linkComponents(order);
    assert.deepEqual(new Map([...components].sort()), new Map([...expected].sort()));
  }
});

test("components: a link event naming no other id links nothing", () => {
  const components = linkComponents([
    identify("a", null),
    identify("a", "a"),
    identify("a", ""),
    identify("a", "x".repeat(201)),
    alias("b", null),
    { distinctId: "c", event: "$identify", anonId: null, alias: "d" },
    { distinctId: "e", event: "$create_alias", anonId: "f", alias: null },
  ]);
  assert.equal(components.size, 0);
});

test("components: a long chain resolves to one person", () => {
  const links: LinkRow[] = [];
  for (let i = 0; i < 50_000; i++) links.push(alias(`id_${i + 1}`, `id_${i}`));
  const components = linkComponents(links);
  assert.equal(new Set(components.values()).size, 1);
  assert.equal(components.get("id_50000"), "id_0");
});

test("person properties: latest $set by event time, else earliest $set_once; arrival order does not matter", () => {
  const rows: PropertyRow[] = [
    {
      distinctId: "anon",
      timestamp: 1,
      uuid: "1",
      receivedAt: 1,
      set: null,
      setOnce: '{"source":"ad","tier":"t1"}',
    },
    { distinctId: "user", timestamp: 5, uuid: "5", receivedAt: 5, set: '{"plan":"pro"}', setOnce: null },
    {
      distinctId: "user",
      timestamp: 3,
      uuid: "3",
      receivedAt: 3,
      set: '{"plan":"free","tier":"t2"}',
      setOnce: null,
    },
    {
      distinctId: "anon",
      timestamp: 2,
      uuid: "2",
      receivedAt: 2,
      set: null,
      setOnce: '{"source":"organic","ref":"r0"}',
    },
    {
      distinctId: "user",
      timestamp: 4,
      uuid: "4",
      receivedAt: 4,
      set: '{"ref":"r1"}',
      setOnce: '{"ref":"r2"}',
    },
    { distinctId: "other", timestamp: 1, uuid: "6", receivedAt: 1, set: "not an object", setOnce: "[1]" },
    { distinctId: "solo", timestamp: 1, uuid: "7", receivedAt: 1, set: '{"n":1}', setOnce: null },
  ];
  const representative = new Map([
    ["anon", "anon"],
    ["user", "anon"],
  ]);
  for (const order of [rows, [...rows].reverse()]) {
    const people = personProperties(parsePropertyRows(order), representative);
    assert.deepEqual(
      { ...people.get("anon") },
      {
        source: "ad",
        tier: "t2",
        plan: "pro",
        ref: "r1",
      },
    );
    assert.deepEqual({ ...people.get("solo") }, { n: 1 });
    assert.equal(people.has("other"), false);
  }
});

test("engine keys: a person is the key of its smallest keyed id; ids without events are left out", () => {
  const representative = new Map([
    ["anon", "anon"],
    ["user", "anon"],
    ["ghost", "anon"],
  ]);
  const properties = new Map([
    ["anon", { plan: "pro" }],
    ["solo", { plan: "free" }],
  ]);
  const keys = new Map([
    ["user", 7],
    ["anon", 9],
    ["solo", 3],
  ]);
  const resolved = toEngineKeys(representative, properties, keys);
  assert.equal(resolved.linked, true);
  assert.deepEqual(
    [...resolved.rows].sort((a, b) => a.id - b.id),
    [
      { id: 3, person: 3, properties: { plan: "free" } },
      { id: 7, person: 9, properties: { plan: "pro" } },
      { id: 9, person: 9, properties: { plan: "pro" } },
    ],
  );
  // One keyed id: nothing to count as another.
  assert.equal(toEngineKeys(representative, undefined, new Map([["user", 1]])).linked, false);
});

test("query people: rows only for mapped ids and for the properties read", () => {
  const resolved = {
    linked: true,
    rows: [
      { id: "a", person: "a", properties: { plan: "pro", x: 1 } },
      { id: "b", person: "a", properties: { plan: "pro", x: 1 } },
      { id: "c", person: "c", properties: { x: 2 } },
      { id: "d", person: "d", properties: { plan: null } },
    ],
  };
  assert.deepEqual(queryPeople(resolved, true, new Set()), {
    persons: true,
    rows: [{ id: "b", person: "a", properties: null }],
  });
  assert.deepEqual(queryPeople(resolved, false, new Set(["plan"])), {
    persons: false,
    rows: [
      { id: "a", person: "a", properties: { plan: "pro" } },
      { id: "b", person: "a", properties: { plan: "pro" } },
    ],
  });
  assert.deepEqual(queryPeople({ linked: false, rows: [] }, true, new Set()), { persons: false, rows: [] });
});

/** A source over fixed rows that counts what it is asked. */
function countingSource() {
  const state = {
    links: [identify("user", "anon")] as LinkRow[],
    properties: [] as PropertyRow[],
    linkMarker: "1",
    propertyMarker: "0",
    reads: { links: 0, properties: 0, keys: 0 },
    /** The `sinceMs` of each property read (undefined: all). */
    since: [] as (number | undefined)[],
    /** The ids each key lookup asked for. */
    asked: [] as string[][],
    fail: false,
  };
  const source: IdentitySource<string> = {
    linkMarker: async () => state.linkMarker,
    propertyMarker: async () => state.propertyMarker,
    readLinks: async () => {
      state.reads.links++;
      if (state.fail) throw new Error("store down");
      return state.links;
    },
    readPropertyEvents: async (_projectId, sinceMs) => {
      state.reads.properties++;
      state.since.push(sinceMs);
      return state.properties.filter((row) => sinceMs === undefined || row.receivedAt >= sinceMs);
    },
    userKeys: async (_projectId, ids) => {
      state.reads.keys++;
      state.asked.push([...ids].sort());
      return new Map(ids.filter((id) => id !== "ghost").map((id) => [id, id]));
    },
  };
  return { state, source };
}

test("resolver: reads again only when a marker changes; properties only for queries that read them", async () => {
  const { state, source } = countingSource();
  const resolver = new IdentityResolver(source);
  const none = new Set<string>();
  const first = await resolver.people("p", true, none);
  assert.deepEqual(first.rows, [{ id: "user", person: "anon", properties: null }]);
  await resolver.people("p", true, none);
  assert.deepEqual(state.reads, { links: 1, properties: 0, keys: 1 });

  state.links = [...state.links, alias("user", "old")];
  state.linkMarker = "2";
  const second = await resolver.people("p", true, none);
  assert.deepEqual(
    second.rows.map((row) => row.id),
    ["old", "user"],
  );
  assert.equal(state.reads.links, 2);

  state.properties = [
    { distinctId: "old", timestamp: 1, uuid: "u", receivedAt: 1, set: '{"plan":"pro"}', setOnce: null },
  ];
  const withPlan = await resolver.people("p", false, new Set(["plan"]));
  assert.deepEqual(withPlan.rows.length, 3);
  assert.ok(withPlan.rows.every((row) => (row.properties as { plan: string }).plan === "pro"));
  await resolver.people("p", false, new Set(["plan"]));
  // Keys are looked up once per id: the third resolution found every one known.
  assert.deepEqual(state.reads, { links: 2, properties: 1, keys: 2 });
  assert.deepEqual(state.asked, [["anon", "user"], ["old"]]);
  state.propertyMarker = "1";
  await resolver.people("p", false, new Set(["plan"]));
  assert.equal(state.reads.properties, 2);
});

test("resolver: new property events are read from shortly before the last one read, checked by count", async () => {
  const { state, source } = countingSource();
  const resolver = new IdentityResolver(source);
  const day = 86_400_000;
  const row = (uuid: string, receivedAt: number, set: string | null): PropertyRow => ({
    distinctId: "user",
    timestamp: receivedAt,
    uuid,
    receivedAt,
    set,
    setOnce: null,
  });
  const plan = async () => {
    const people = await resolver.people("p", false, new Set(["plan"]));
    return people.rows.find((r) => r.id === "user")?.properties?.plan;
  };
  state.properties = [row("a", 10 * day, '{"plan":"free"}'), row("b", 11 * day, "not an object")];
  state.propertyMarker = "2";
  assert.equal(await plan(), "free");
  assert.deepEqual(state.since, [undefined]);

  // One more, received after the others: read from the window before the latest, and the count
  // (the marker here) agrees.
  state.properties.push(row("c", 12 * day, '{"plan":"pro"}'));
  state.propertyMarker = "3";
  assert.equal(await plan(), "pro");
  assert.deepEqual(state.since, [undefined, 11 * day - PROPERTY_REREAD_WINDOW_MS]);

  // One stored long after its receipt (a worker catching up): outside the window, so the count
  // disagrees and everything is read again.
  state.properties.push(row("d", 12 * day + 1, null), row("e", 1 * day, '{"plan":"team"}'));
  state.propertyMarker = "5";
  assert.equal(await plan(), "pro", "the latest $set by event time still wins");
  assert.deepEqual(state.since.slice(2), [12 * day - PROPERTY_REREAD_WINDOW_MS, undefined]);
  const people = await resolver.people("p", false, new Set(["plan"]));
  assert.equal(people.rows.length, 2);
});

test("resolver: an id without events is asked for again at each resolution", async () => {
  const { state, source } = countingSource();
  state.links = [identify("user", "ghost"), alias("other", "ghost")];
  const resolver = new IdentityResolver(source);
  const first = await resolver.people("p", true, new Set());
  // "ghost" has no key: the person's key is the smallest keyed id.
  assert.deepEqual(first.rows, [{ id: "user", person: "other", properties: null }]);
  state.linkMarker = "2";
  await resolver.people("p", true, new Set());
  assert.deepEqual(state.asked, [["ghost", "other", "user"], ["ghost"]]);
});

test("resolver: a failed read is not kept; the next query reads again", async () => {
  const { state, source } = countingSource();
  const resolver = new IdentityResolver(source);
  state.fail = true;
  await assert.rejects(resolver.people("p", true, new Set()), /store down/);
  state.fail = false;
  assert.equal((await resolver.people("p", true, new Set())).rows.length, 1);
  assert.equal(state.reads.links, 2);
});

test("resolver: concurrent queries share one read", async () => {
  const { state, source } = countingSource();
  const resolver = new IdentityResolver(source);
  await Promise.all(Array.from({ length: 10 }, () => resolver.people("p", true, new Set())));
  assert.equal(state.reads.links, 1);
});
