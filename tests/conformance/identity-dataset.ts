/**
 * The identity dataset of the conformance suite: anonymous visitors who identify (once, or from two
 * devices), aliases, two persons merged into one, a link through an id that has no events, person
 * properties set over time with `$set` and `$set_once` (arriving out of time order), and plenty of
 * users with no link at all. Reference answers are computed here in plain TypeScript, apart from
 * src/query/identity.ts: persons by a breadth-first walk of the links, person properties by their
 * definition (a key's latest `$set`, else its earliest `$set_once`), then the answers of
 * tests/conformance/dataset.ts on events rewritten to carry their person.
 */

import {
  DATASET_START,
  type DataEvent,
  type Filter,
  refEvents,
  refFunnel,
  refRetention,
  refTopEvents,
  refTopValues,
  refTrends,
} from "./dataset.js";
import type { QueryCase } from "./query-cases.js";

export interface IdentityEvent {
  uuid: string;
  event: string;
  distinct_id: string | number;
  timestamp: number;
  properties: Record<string, unknown>;
}

const HOUR = 3_600_000;
const DAY = 86_400_000;

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** About 400 events over three weeks; see the file's comment. */
export function makeIdentityDataset(seed = 12): IdentityEvent[] {
  const random = mulberry32(seed);
  const events: IdentityEvent[] = [];
  const uuid = () => {
    const hex = Array.from({ length: 32 }, () => Math.floor(random() * 16).toString(16)).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-b${hex.slice(17, 20)}-${hex.slice(20)}`;
  };
  const at = (day: number, hour = 0) => DATASET_START + day * DAY + Math.round(hour * HOUR);
  const add = (
    event: string,
    distinctId: string | number,
    time: number,
    properties: Record<string, unknown> = {},
  ) => events.push({ uuid: uuid(), event, distinct_id: distinctId, timestamp: time, properties });
  const identify = (id: string, time: number, anon?: string | number, props: Record<string, unknown> = {}) =>
    add("$identify", id, time, { ...(anon === undefined ? {} : { $anon_distinct_id: anon }), ...props });
  const alias = (id: string, time: number, other: string) => add("$create_alias", id, time, { alias: other });

  // A: anonymous browsing, then identified; a purchase after; plan changed later by a plain event.
  add("Page View", "anon_a", at(1, 1), { path: "/pricing", campaign: "spring" });
  add("Page View", "anon_a", at(1, 1.2), { path: "/docs" });
  identify("user_a", at(1, 2), "anon_a", { $set: { plan: "free", email: "a@example.com", ltv: 10 } });
  add("Purchase", "user_a", at(1, 3), { campaign: "spring", price: 20 });
  add("Page View", "user_a", at(8, 1), { path: "/" });
  add("Page View", "user_a", at(9, 1), { path: "/account", $set: { plan: "pro" } });
  add("Purchase", "user_a", at(10, 2), { price: 45 });

  // B: one person on two devices; the first device's $set_once stays.
  add("Page View", "anon_b1", at(2, 0), { path: "/" });
  add("Sign Up", "anon_b1", at(2, 0.5));
  identify("user_b", at(2, 1), "anon_b1", {
    $set: { plan: "team", ltv: 300 },
    $set_once: { first_device: "b1" },
  });
  add("Page View", "anon_b2", at(3, 0), { path: "/pricing" });
  identify("user_b", at(3, 1), "anon_b2", { $set_once: { first_device: "b2" } });
  add("Purchase", "anon_b2", at(3, 2), { price: 120 });
  add("Page View", "user_b", at(15, 4), { path: "/" });

  // C: an older id aliased to the new one; `$set` events of PostHog's own kind.
  add("Page View", "legacy_c", at(1, 5), { path: "/" });
  add("Sign Up", "legacy_c", at(1, 6));
  add("$set", "legacy_c", at(1, 7), { $set: { plan: "free" } });
  alias("user_c", at(4, 0), "legacy_c");
  add("Purchase", "user_c", at(4, 1), { price: 9 });
  add("$set", "user_c", at(5, 0), { $set: { plan: "team" } });
  add("Page View", "user_c", at(11, 3), { path: "/docs" });

  // D and E: two identified persons, later merged by an alias: E's later $set wins.
  add("Page View", "anon_d", at(5, 2), { path: "/" });
  identify("user_d", at(5, 3), "anon_d", { $set: { plan: "free", ltv: 50, beta: true } });
  add("Page View", "anon_e", at(6, 2), { path: "/pricing" });
  identify("user_e", at(6, 3), "anon_e", { $set: { plan: "pro", ltv: 75 } });
  add("Purchase", "user_d", at(6, 5), { price: 30 });
  add("Purchase", "user_e", at(7, 1), { price: 60 });
  alias("user_d", at(12, 0), "user_e");
  add("Page View", "user_d", at(13, 0), { path: "/" });
  add("Click", "user_e", at(13, 1), { path: "/" });

  // F: $set_once keeps the first value; $set after it wins; $set_once after a $set does not.
  add("Page View", "user_f", at(0, 5), { path: "/", $set_once: { source: "ad", tier: "t1" } });
  add("Page View", "user_f", at(1, 5), { path: "/", $set_once: { source: "organic" } });
  identify("user_f", at(2, 5), undefined, { $set: { tier: "t2" } });
  add("Click", "user_f", at(3, 5), { path: "/", $set: { ref: "r1" } });
  add("Click", "user_f", at(4, 5), { path: "/", $set_once: { ref: "r0", ltv: 5 } });

  // G and H: linked through "ghost", an id that never sent an event.
  add("Page View", "user_g", at(8, 2), { path: "/pricing", campaign: "ghost" });
  identify("user_g", at(8, 3), "ghost");
  alias("user_h", at(9, 0), "ghost");
  add("Purchase", "user_h", at(9, 1), { price: 99, campaign: "ghost" });

  // Links that link nothing, and an integer distinct id linked by a number.
  identify("user_i", at(10, 0), "user_i", { $set: { plan: "free" } });
  add("$create_alias", "user_i", at(10, 1), {});
  add("Page View", 12345, at(10, 2), { path: "/" });
  identify("user_j", at(10, 3), 12345, { $set: { plan: "pro", ltv: 1 } });
  add("Purchase", "user_j", at(10, 4), { price: 5 });

  // Generated: visitors who browse anonymously, most identify, some change plan later.
  const plans = ["free", "pro", "team"];
  const names = ["Page View", "Click", "Sign Up", "Purchase"];
  for (let n = 0; n < 30; n++) {
    const anon = `anon_g${n}`;
    const user = `user_g${n}`;
    const identifies = random() < 0.65;
    let t = at(Math.floor(random() * 18), random() * 20);
    let current = anon;
    const sessions = 1 + Math.floor(random() * 4);
    for (let s = 0; s < sessions; s++) {
      const steps = 1 + Math.floor(random() * 4);
      for (let i = 0; i < steps; i++) {
        const name =
          random() < 0.75 ? names[Math.min(i, names.length - 1)]! : names[Math.floor(random() * 4)]!;
        t += Math.floor(random() * 40 * 60_000) + 1000;
        const properties: Record<string, unknown> = { path: random() < 0.5 ? "/" : "/pricing" };
        // The plan bought, an event property named like the person property.
        if (name === "Purchase") {
          properties.price = Math.round(random() * 200);
          properties.plan = plans[Math.floor(random() * 3)];
        }
        add(name, current, t, properties);
        if (identifies && current === anon && i === 0 && random() < 0.6) {
          t += 60_000;
          identify(user, t, anon, {
            $set: { plan: plans[n % 3], ltv: n * 10 },
            ...(random() < 0.5 ? { $set_once: { source: random() < 0.5 ? "ad" : "organic" } } : {}),
          });
          current = user;
        }
      }
      t += Math.floor(random() * 3 * DAY);
    }
    if (current === user && random() < 0.4)
      add("$set", user, t + HOUR, { $set: { plan: plans[(n + 1) % 3] } });
  }
  return events;
}

/** Each id's person (a representative id), by a breadth-first walk of the links. */
export function refPersons(data: readonly IdentityEvent[]): Map<string, string> {
  const neighbours = new Map<string, Set<string>>();
  const link = (a: string, b: string) => {
    if (a === b) return;
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      if (!neighbours.has(x)) neighbours.set(x, new Set());
      neighbours.get(x)!.add(y);
    }
  };
  for (const e of data) {
    const other =
      e.event === "$identify"
        ? e.properties.$anon_distinct_id
        : e.event === "$create_alias"
          ? e.properties.alias
          : undefined;
    if (typeof other === "string" || typeof other === "number") link(String(e.distinct_id), String(other));
  }
  const person = new Map<string, string>();
  for (const start of neighbours.keys()) {
    if (person.has(start)) continue;
    const queue = [start];
    person.set(start, start);
    while (queue.length > 0) {
      for (const next of neighbours.get(queue.shift()!) ?? []) {
        if (person.has(next)) continue;
        person.set(next, start);
        queue.push(next);
      }
    }
  }
  return person;
}

/** Each person's properties: per key, its latest `$set` value, else its earliest `$set_once` value. */
export function refPersonProperties(
  data: readonly IdentityEvent[],
  personOf: (id: string) => string,
): Map<string, Record<string, unknown>> {
  const updates = new Map<string, { key: string; value: unknown; t: number; once: boolean }[]>();
  for (const e of data) {
    const person = personOf(String(e.distinct_id));
    for (const [field, once] of [
      ["$set", false],
      ["$set_once", true],
    ] as const) {
      const object = e.properties[field];
      if (object === null || typeof object !== "object") continue;
      for (const [key, value] of Object.entries(object)) {
        if (!updates.has(person)) updates.set(person, []);
        updates.get(person)!.push({ key, value, t: e.timestamp, once });
      }
    }
  }
  const people = new Map<string, Record<string, unknown>>();
  for (const [person, list] of updates) {
    const properties: Record<string, unknown> = {};
    for (const key of new Set(list.map((u) => u.key))) {
      const sets = list.filter((u) => u.key === key && !u.once).sort((a, b) => b.t - a.t);
      const onces = list.filter((u) => u.key === key && u.once).sort((a, b) => a.t - b.t);
      properties[key] = (sets[0] ?? onces[0])!.value;
    }
    people.set(person, properties);
  }
  return people;
}

const PERSON = "person property:";

/**
 * The events as dataset.ts's references read them: distinct ids as strings (their person's id when
 * counting persons), and each person's properties added as event properties under a prefix.
 */
function view(data: readonly IdentityEvent[], persons: boolean): DataEvent[] {
  const personOfId = refPersons(data);
  const personOf = (id: string) => personOfId.get(id) ?? id;
  const properties = refPersonProperties(data, personOf);
  return data.map((e) => {
    const id = String(e.distinct_id);
    const extra: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(properties.get(personOf(id)) ?? {}))
      extra[`${PERSON}${key}`] = value;
    return {
      ...e,
      distinct_id: persons ? personOf(id) : id,
      properties: { ...e.properties, ...extra } as DataEvent["properties"],
    };
  });
}

type SpecFilter = Filter & { type?: "event" | "person" };
const refFilters = (filters: SpecFilter[] = []): Filter[] =>
  filters.map(({ type, ...f }) => (type === "person" ? { ...f, property: `${PERSON}${f.property}` } : f));

/** The identity cases: each query as sent, and its answer from the references. */
export function identityCases(data: readonly IdentityEvent[]): QueryCase[] {
  const from = DATASET_START;
  const to = DATASET_START + 21 * DAY;
  const range = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
  const byPerson = view(data, true);
  const byId = view(data, false);
  const cases: QueryCase[] = [];
  const add = (name: string, spec: Record<string, unknown>, expected: unknown) =>
    cases.push({ name, spec, expected });
  const identities = [
    ["person", undefined, byPerson],
    ["person", "person", byPerson],
    ["distinct_id", "distinct_id", byId],
  ] as const;

  for (const [name, identity, events] of identities) {
    const option = identity === undefined ? {} : { identity };
    const label = identity === undefined ? "(default: person)" : name;
    for (const interval of ["day", "week"] as const) {
      add(
        `identity ${label}: trends unique users per ${interval}`,
        { kind: "trends", math: "unique_users", interval, ...range, ...option },
        refTrends(events, { math: "unique_users", interval, from, to, limit: 10 }),
      );
    }
    add(
      `identity ${label}: trends unique users of Purchase`,
      { kind: "trends", event: "Purchase", math: "unique_users", interval: "week", ...range, ...option },
      refTrends(events, { event: "Purchase", math: "unique_users", interval: "week", from, to, limit: 10 }),
    );
    for (const steps of [
      ["Page View", "Purchase"],
      ["Page View", "Sign Up", "Purchase"],
      ["Page View", "Page View"],
    ]) {
      add(
        `identity ${label}: funnel ${steps.join(" > ")}`,
        { kind: "funnel", steps, window_seconds: 2 * 86_400, ...range, ...option },
        refFunnel(events, { steps, window_seconds: 2 * 86_400, from, to }),
      );
    }
    for (const r of [
      { start_event: "Page View", return_event: "Purchase", interval: "day", periods: 5 },
      { start_event: "Page View", return_event: "Page View", interval: "week", periods: 3 },
    ] as const) {
      add(
        `identity ${label}: retention ${r.start_event} > ${r.return_event} per ${r.interval}`,
        { kind: "retention", ...r, ...range, ...option },
        refRetention(events, { ...r, from, to }),
      );
    }
  }

  // Person properties as filters, each op, alone and beside an event filter.
  const filterSets: SpecFilter[][] = [
    [{ property: "plan", op: "eq", value: "pro", type: "person" }],
    [{ property: "plan", op: "neq", value: "pro", type: "person" }],
    [{ property: "email", op: "contains", value: "@example", type: "person" }],
    [{ property: "ltv", op: "gt", value: 60, type: "person" }],
    [{ property: "ltv", op: "lt", value: 60, type: "person" }],
    [{ property: "beta", op: "eq", value: true, type: "person" }],
    [{ property: "first_device", op: "is_set", type: "person" }],
    [{ property: "source", op: "eq", value: "ad", type: "person" }],
    [{ property: "tier", op: "eq", value: "t2", type: "person" }],
    [{ property: "ref", op: "eq", value: "r1", type: "person" }],
    [{ property: "nobody has it", op: "is_set", type: "person" }],
    [
      { property: "plan", op: "eq", value: "team", type: "person" },
      { property: "path", op: "eq", value: "/" },
    ],
    // The same name as an event property and as a person property: each reads its own.
    [
      { property: "plan", op: "eq", value: "free" },
      { property: "plan", op: "eq", value: "pro", type: "person" },
    ],
  ];
  for (const filters of filterSets) {
    add(
      `person filter ${JSON.stringify(filters)}: trends`,
      { kind: "trends", interval: "week", filters, ...range },
      refTrends(byPerson, {
        math: "total",
        interval: "week",
        from,
        to,
        filters: refFilters(filters),
        limit: 10,
      }),
    );
    add(
      `person filter ${JSON.stringify(filters)}: unique users (distinct ids)`,
      { kind: "trends", math: "unique_users", interval: "week", filters, identity: "distinct_id", ...range },
      refTrends(byId, {
        math: "unique_users",
        interval: "week",
        from,
        to,
        filters: refFilters(filters),
        limit: 10,
      }),
    );
  }
  const pro: SpecFilter[] = [{ property: "plan", op: "eq", value: "pro", type: "person" }];
  add(
    "person filter: funnel",
    { kind: "funnel", steps: ["Page View", "Purchase"], window_seconds: 7 * 86_400, filters: pro, ...range },
    refFunnel(byPerson, {
      steps: ["Page View", "Purchase"],
      window_seconds: 7 * 86_400,
      from,
      to,
      filters: refFilters(pro),
    }),
  );
  add(
    "person filter: retention",
    {
      kind: "retention",
      start_event: "Page View",
      return_event: "Page View",
      interval: "week",
      periods: 3,
      filters: pro,
      ...range,
    },
    refRetention(byPerson, {
      start_event: "Page View",
      return_event: "Page View",
      interval: "week",
      periods: 3,
      from,
      to,
      filters: refFilters(pro),
    }),
  );
  add(
    "person filter: top events",
    { kind: "top_events", filters: pro, ...range, limit: 10 },
    refTopEvents(byPerson, { from, to, limit: 10, filters: refFilters(pro) }),
  );
  add(
    "person filter: top values of path",
    { kind: "top_values", property: "path", filters: pro, ...range },
    refTopValues(byPerson, { property: "path", from, to, limit: 10, filters: refFilters(pro) }),
  );

  // Person properties as a breakdown.
  for (const [breakdown, math, limit] of [
    ["plan", "unique_users", 10],
    ["plan", "total", 2],
    ["ltv", "total", 5],
    ["first_device", "unique_users", 10],
  ] as const) {
    add(
      `person breakdown by ${breakdown}, ${math}, limit ${limit}`,
      { kind: "trends", math, interval: "week", breakdown, breakdown_type: "person", limit, ...range },
      refTrends(byPerson, {
        math,
        interval: "week",
        from,
        to,
        breakdown: `${PERSON}${breakdown}`,
        limit,
      }),
    );
  }
  add(
    "person breakdown by plan with a person filter, unique distinct ids",
    {
      kind: "trends",
      math: "unique_users",
      interval: "day",
      breakdown: "plan",
      breakdown_type: "person",
      filters: [{ property: "ltv", op: "gt", value: 20, type: "person" }],
      identity: "distinct_id",
      ...range,
    },
    refTrends(byId, {
      math: "unique_users",
      interval: "day",
      from,
      to,
      breakdown: `${PERSON}plan`,
      filters: refFilters([{ property: "ltv", op: "gt", value: 20, type: "person" }]),
      limit: 10,
    }),
  );

  // The example, written out by hand: from an anonymous Page View to an identified
  // Purchase is one person who converted, and two distinct ids of which none converted.
  const spring = [{ property: "campaign", op: "eq", value: "spring" }];
  const funnel = {
    kind: "funnel",
    steps: ["Page View", "Purchase"],
    window_seconds: 86_400,
    filters: spring,
    ...range,
  };
  const step = (event: string, count: number, conversion_rate: number, drop_off: number) => ({
    event,
    count,
    conversion_rate,
    drop_off,
  });
  add("anonymous Page View to identified Purchase: one person", funnel, {
    steps: [step("Page View", 1, 1, 0), step("Purchase", 1, 1, 0)],
  });
  add(
    "anonymous Page View to identified Purchase, by distinct id: no conversion",
    { ...funnel, identity: "distinct_id" },
    { steps: [step("Page View", 1, 1, 0), step("Purchase", 0, 0, 1)] },
  );
  const ghost = [{ property: "campaign", op: "eq", value: "ghost" }];
  add(
    "linked through an id with no events: one person",
    { ...funnel, filters: ghost },
    { steps: [step("Page View", 1, 1, 0), step("Purchase", 1, 1, 0)] },
  );
  return cases;
}

/** The events query with a person filter: `ask` answers one spec. */
export async function identityEvents(
  data: readonly IdentityEvent[],
  ask: (spec: Record<string, unknown>) => Promise<{ events: { uuid: string }[] }>,
): Promise<{ expected: string[]; actual: string[] }> {
  const filters: SpecFilter[] = [{ property: "plan", op: "eq", value: "team", type: "person" }];
  const answer = await ask({ kind: "events", filters, limit: 1000 });
  return {
    expected: refEvents(view(data, true), { filters: refFilters(filters) }).map((e) => e.uuid),
    actual: answer.events.map((e) => e.uuid),
  };
}
