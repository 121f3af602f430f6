/**
 * Identity: which distinct ids are one person, and what that person's properties are, derived
 * from stored events alone (so every pipeline has it, with no write path of its own). The storage
 * convention is PostHog's, which the Segment and PostHog doors and Tidemark's client follow:
 * - `$identify`: distinct_id is the identified id, `properties.$anon_distinct_id` the anonymous
 *   id it links to;
 * - `$create_alias`: distinct_id is one id, `properties.alias` the other;
 * - any event's `properties.$set` (set these person properties) and `properties.$set_once` (set
 *   those not set yet) apply to that event's person.
 *
 * A person is a connected component of linked ids within a project. Components are computed here,
 * in TypeScript, from the project's link events (read with one small query): ClickHouse 18.16 has
 * no recursive CTE, and links are few next to events. The result reaches SQL as a bound parameter
 * (a literal on ClickHouse), joined only by the queries that need it, and only when the project has
 * links or person properties.
 */

/** Any fixed order serves: representatives decide nothing in an answer but which ids are one person. */
const compareIds = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export const IDENTIFY_EVENT = "$identify";
export const ALIAS_EVENT = "$create_alias";
export const LINK_EVENTS = [IDENTIFY_EVENT, ALIAS_EVENT] as const;
/** The text every event carrying `$set` or `$set_once` has in its stored JSON (keys are written as is). */
export const SET_MARK = '"$set';

/** A stored link event as a store reads it: who sent it, and the text of the id it names. */
export interface LinkRow {
  distinctId: string;
  event: string;
  /** `$anon_distinct_id` as text (a number as its JSON text), or null. */
  anonId: string | null;
  /** `alias` as text, or null. */
  alias: string | null;
}

/**
 * A stored event that may carry `$set` or `$set_once` (their JSON texts, null when absent): one
 * of the project's property candidates, which the store picks by a cheap test of the text.
 */
export interface PropertyRow {
  distinctId: string;
  timestamp: number;
  uuid: string;
  /** When the API received it (epoch ms), to read only the candidates stored since a read. */
  receivedAt: number;
  set: string | null;
  setOnce: string | null;
}

/** One id of the query's people: its person and that person's properties the query reads. */
export interface PeopleRow<K extends string | number = string | number> {
  /** The id as the engine's events name users (DuckDB: the uid; elsewhere the distinct id). */
  id: K;
  /** The person, as one of its ids' keys: the same for every id of one person. */
  person: K;
  /** The person's properties the query reads, or null when it has none of them. */
  properties: Record<string, unknown> | null;
}

/**
 * What a statement builder gets for a query that reads people: ids to count as their person
 * (`persons`), and person properties.
 */
export interface QueryPeople<K extends string | number = string | number> {
  /** Count and follow persons: each id of `rows` is its `person`; ids not in `rows` are their own. */
  persons: boolean;
  /** The ids whose person is another id's (when `persons`), and the ids whose person has a property the query reads. */
  rows: readonly PeopleRow<K>[];
}

/** Where the resolver reads a project's links and person properties. */
export interface IdentitySource<K extends string | number> {
  /** Changes whenever the project gains link events (a count of them, or a version kept in memory). */
  linkMarker(projectId: string): Promise<string>;
  /** Changes whenever the project gains property candidates (their count, or a version in memory). */
  propertyMarker(projectId: string): Promise<string>;
  /**
   * The number of the project's property candidates now. Without it, the property marker is
   * that number.
   */
  propertyCount?(projectId: string): Promise<number>;
  readLinks(projectId: string): Promise<LinkRow[]>;
  /** The project's property candidates, all of them or those received at or after `sinceMs`. */
  readPropertyEvents(projectId: string, sinceMs?: number): Promise<PropertyRow[]>;
  /** The engine's user key of each id that has events (ids without events may be left out). */
  userKeys(projectId: string, ids: readonly string[]): Promise<ReadonlyMap<string, K>>;
  /** Every id is its own key (users are named by distinct id): nothing to look up or keep. */
  keysAreIds?: boolean;
}

const MAX_ID_LENGTH = 200;

/** The other id a link event names, or undefined when it names none (or itself). */
export function linkedId(row: LinkRow): string | undefined {
  const other = row.event === IDENTIFY_EVENT ? row.anonId : row.event === ALIAS_EVENT ? row.alias : null;
  if (other === null || other.length === 0 || other.length > MAX_ID_LENGTH) return undefined;
  return other === row.distinctId ? undefined : other;
}

/**
 * The connected components of the links, as each linked id's representative: the smallest id of
 * its component, so the result does not depend on the order links arrived in.
 * Ids in no link are left out (each is a person of its own).
 */
export function linkComponents(links: readonly LinkRow[]): Map<string, string> {
  const parent = new Map<string, string>();
  const find = (id: string): string => {
    let root = id;
    for (let next = parent.get(root); next !== undefined && next !== root; next = parent.get(root))
      root = next;
    // Path compression: every id on the way points at the root.
    for (let at = id; at !== root; ) {
      const next = parent.get(at)!;
      parent.set(at, root);
      at = next;
    }
    return root;
  };
  for (const row of links) {
    const other = linkedId(row);
    if (other === undefined) continue;
    for (const id of [row.distinctId, other]) if (!parent.has(id)) parent.set(id, id);
    const a = find(row.distinctId);
    const b = find(other);
    if (a === b) continue;
    // The smaller root stays root, so every root is its component's smallest id.
    if (compareIds(a, b) < 0) parent.set(b, a);
    else parent.set(a, b);
  }
  const representative = new Map<string, string>();
  for (const id of parent.keys()) representative.set(id, find(id));
  return representative;
}

function parseObject(text: string | null): Record<string, unknown> | undefined {
  if (text === null || text === "") return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** A property event with its `$set` and `$set_once` parsed (either may be absent). */
export interface PropertyUpdate {
  distinctId: string;
  timestamp: number;
  uuid: string;
  set?: Record<string, unknown>;
  setOnce?: Record<string, unknown>;
}

/** A candidate parsed: its update, or undefined when it carries no `$set` or `$set_once` object. */
export function parsePropertyRow(row: PropertyRow): PropertyUpdate | undefined {
  const set = parseObject(row.set);
  const setOnce = parseObject(row.setOnce);
  if (set === undefined && setOnce === undefined) return undefined;
  return { distinctId: row.distinctId, timestamp: row.timestamp, uuid: row.uuid.toLowerCase(), set, setOnce };
}

export function parsePropertyRows(rows: readonly PropertyRow[]): PropertyUpdate[] {
  const updates: PropertyUpdate[] = [];
  for (const row of rows) {
    const update = parsePropertyRow(row);
    if (update) updates.push(update);
  }
  return updates;
}

/**
 * A project's property candidates as last read: each by uuid (null when it carries no update),
 * and the latest time one was received.
 */
export interface PropertyState {
  candidates: Map<string, PropertyUpdate | null>;
  maxReceivedAt: number;
}

function addCandidates(state: PropertyState, rows: readonly PropertyRow[]): void {
  for (const row of rows) {
    state.candidates.set(row.uuid.toLowerCase(), parsePropertyRow(row) ?? null);
    if (row.receivedAt > state.maxReceivedAt) state.maxReceivedAt = row.receivedAt;
  }
}

/**
 * How far before the latest receipt already read a read of new candidates starts. Events are
 * stored seconds after their receipt in every pipeline when all is well; one stored later than
 * this (a worker catching up after an outage) is not lost: the count check then fails and the
 * candidates are read whole.
 */
export const PROPERTY_REREAD_WINDOW_MS = 10 * 60_000;

/**
 * Each person's properties: its ids' updates applied in event-time order (ties by uuid), each
 * event's `$set_once` first (a key already set keeps its value), then its `$set`. So a key's value
 * is its latest `$set`, or, never `$set`, its earliest `$set_once`. Keyed by person
 * (representative id, or the id itself when it has no links).
 */
export function personProperties(
  updates: readonly PropertyUpdate[],
  representative: ReadonlyMap<string, string>,
): Map<string, Record<string, unknown>> {
  const sorted = [...updates].sort(
    (a, b) => a.timestamp - b.timestamp || (a.uuid < b.uuid ? -1 : a.uuid > b.uuid ? 1 : 0),
  );
  const people = new Map<string, Record<string, unknown>>();
  for (const update of sorted) {
    const person = representative.get(update.distinctId) ?? update.distinctId;
    let properties = people.get(person);
    if (!properties) {
      properties = Object.create(null) as Record<string, unknown>;
      people.set(person, properties);
    }
    if (update.setOnce)
      for (const [key, value] of Object.entries(update.setOnce))
        if (!(key in properties)) properties[key] = value;
    if (update.set) for (const [key, value] of Object.entries(update.set)) properties[key] = value;
  }
  return people;
}

/** A project's people in the engine's keys: every linked id, and every id whose person has properties. */
export interface ResolvedPeople<K extends string | number> {
  /** Some id counts as another id's person. */
  linked: boolean;
  rows: { id: K; person: K; properties: Record<string, unknown> | undefined }[];
}

/**
 * Puts resolution in the engine's keys. A person's key is the key of its smallest id that has
 * one; ids without a key (no events stored) are left out, as nothing of theirs is counted.
 */
export function toEngineKeys<K extends string | number>(
  representative: ReadonlyMap<string, string>,
  properties: ReadonlyMap<string, Record<string, unknown>> | undefined,
  keys: ReadonlyMap<string, K>,
): ResolvedPeople<K> {
  const members = new Map<string, string[]>();
  for (const [id, person] of representative) {
    let list = members.get(person);
    if (!list) {
      list = [];
      members.set(person, list);
    }
    list.push(id);
  }
  for (const person of properties?.keys() ?? []) if (!members.has(person)) members.set(person, [person]);
  const rows: ResolvedPeople<K>["rows"] = [];
  let linked = false;
  for (const [person, ids] of members) {
    ids.sort(compareIds);
    const keyed = ids.filter((id) => keys.has(id));
    if (keyed.length === 0) continue;
    const personKey = keys.get(keyed[0]!)!;
    if (keyed.length > 1) linked = true;
    const props = properties?.get(person);
    for (const id of keyed) rows.push({ id: keys.get(id)!, person: personKey, properties: props });
  }
  return { linked, rows };
}

/**
 * The rows a query binds: with `persons`, every id of a person with two ids or more; and every id
 * whose person has one of `names`, with only those properties.
 */
export function queryPeople<K extends string | number>(
  resolved: ResolvedPeople<K>,
  persons: boolean,
  names: ReadonlySet<string>,
): QueryPeople<K> {
  const counted = persons && resolved.linked;
  const rows: PeopleRow<K>[] = [];
  for (const row of resolved.rows) {
    let properties: Record<string, unknown> | null = null;
    if (row.properties && names.size > 0) {
      for (const name of names) {
        const value = row.properties[name];
        if (value === undefined || value === null) continue;
        properties ??= {};
        properties[name] = value;
      }
    }
    const mapped = counted && row.id !== row.person;
    if (mapped || properties !== null) rows.push({ id: row.id, person: row.person, properties });
  }
  // The id whose key is its person's may be left out: ids missing from the rows count as
  // themselves, which is its person.
  return { persons: counted, rows };
}

/** What a query runner asks: the people of a query (see IdentityResolver.people). */
export interface PeopleResolver {
  people(projectId: string, persons: boolean, names: ReadonlySet<string>): Promise<QueryPeople>;
}

interface Cached<T> {
  marker: string;
  value: Promise<T>;
}

interface ProjectIdentity<K extends string | number> {
  links?: Cached<Map<string, string>>;
  properties?: Cached<PropertyState>;
  people?: Cached<ResolvedPeople<K>>;
  peopleWithProperties?: Cached<ResolvedPeople<K>>;
  /** Keys found so far (an id's key never changes while its project exists). */
  keys: Map<string, K>;
}

/**
 * Resolves and caches each project's people. Every query that needs them asks the source for its
 * markers (a cheap count, or a version in memory): the links are read again only when the link
 * marker changed, the person properties only when the property marker did, so answers are as
 * fresh as the events the query reads.
 */
export class IdentityResolver<K extends string | number = string | number> implements PeopleResolver {
  private readonly projects = new Map<string, ProjectIdentity<K>>();

  constructor(
    private readonly source: IdentitySource<K>,
    private readonly maxProjects = 100,
  ) {}

  /** The people of a query: persons to count (when `persons`), properties named in `names`. */
  async people(projectId: string, persons: boolean, names: ReadonlySet<string>): Promise<QueryPeople<K>> {
    const withProperties = names.size > 0;
    const resolved = await this.resolve(projectId, withProperties);
    return queryPeople(resolved, persons, names);
  }

  /** Forgets a project (deleted). */
  forget(projectId: string): void {
    this.projects.delete(projectId);
  }

  private project(projectId: string): ProjectIdentity<K> {
    let entry = this.projects.get(projectId);
    if (entry) {
      // Most recently used last, so the first is the one to drop.
      this.projects.delete(projectId);
    } else {
      entry = { keys: new Map() };
      if (this.projects.size >= this.maxProjects) {
        const oldest = this.projects.keys().next().value;
        if (oldest !== undefined) this.projects.delete(oldest);
      }
    }
    this.projects.set(projectId, entry);
    return entry;
  }

  private async resolve(projectId: string, withProperties: boolean): Promise<ResolvedPeople<K>> {
    const entry = this.project(projectId);
    const [linkMarker, propertyMarker] = await Promise.all([
      this.source.linkMarker(projectId),
      withProperties ? this.source.propertyMarker(projectId) : Promise.resolve("-"),
    ]);
    const marker = `${linkMarker}/${propertyMarker}`;
    const slot = withProperties ? "peopleWithProperties" : "people";
    const cached = entry[slot];
    if (cached && cached.marker === marker) return cached.value;
    const value = (async () => {
      const representative = await this.cached(entry, "links", linkMarker, async () =>
        linkComponents(await this.source.readLinks(projectId)),
      );
      const state = withProperties ? await this.propertyState(entry, projectId, propertyMarker) : undefined;
      const updates: PropertyUpdate[] = [];
      for (const update of state?.candidates.values() ?? []) if (update) updates.push(update);
      const properties = state ? personProperties(updates, representative) : undefined;
      const ids = new Set(representative.keys());
      for (const update of updates) ids.add(update.distinctId);
      return toEngineKeys(representative, properties, await this.keys(entry, projectId, ids));
    })();
    entry[slot] = { marker, value };
    // A failed read is not cached: the next query tries again.
    value.catch(() => {
      if (entry[slot]?.value === value) entry[slot] = undefined;
    });
    return value;
  }

  /** The keys of `ids`, looking up only those not found before. */
  private async keys(
    entry: ProjectIdentity<K>,
    projectId: string,
    ids: ReadonlySet<string>,
  ): Promise<ReadonlyMap<string, K>> {
    if (this.source.keysAreIds) return new Map([...ids].map((id) => [id, id as K]));
    const missing = [...ids].filter((id) => !entry.keys.has(id));
    if (missing.length > 0)
      for (const [id, key] of await this.source.userKeys(projectId, missing)) entry.keys.set(id, key);
    return entry.keys;
  }

  /**
   * The project's property candidates. When the marker changed since the last read, only those
   * received since shortly before the latest one read are read, then the count of candidates,
   * taken after that read, must equal what is held: no candidate is ever removed, so equal counts
   * mean nothing was missed. Otherwise (or with nothing read before) all of them are read.
   */
  private propertyState(
    entry: ProjectIdentity<K>,
    projectId: string,
    marker: string,
  ): Promise<PropertyState> {
    const cached = entry.properties;
    if (cached && cached.marker === marker) return cached.value;
    const previous = cached?.value;
    const value = (async (): Promise<PropertyState> => {
      const before = await previous?.catch(() => undefined);
      if (before) {
        const state: PropertyState = {
          candidates: new Map(before.candidates),
          maxReceivedAt: before.maxReceivedAt,
        };
        addCandidates(
          state,
          await this.source.readPropertyEvents(projectId, before.maxReceivedAt - PROPERTY_REREAD_WINDOW_MS),
        );
        const count = this.source.propertyCount
          ? await this.source.propertyCount(projectId)
          : Number(await this.source.propertyMarker(projectId));
        if (count === state.candidates.size) return state;
      }
      const state: PropertyState = { candidates: new Map(), maxReceivedAt: Number.NEGATIVE_INFINITY };
      addCandidates(state, await this.source.readPropertyEvents(projectId));
      return state;
    })();
    entry.properties = { marker, value };
    value.catch(() => {
      if (entry.properties?.value === value) entry.properties = undefined;
    });
    return value;
  }

  private cached(
    entry: ProjectIdentity<K>,
    slot: "links",
    marker: string,
    load: () => Promise<Map<string, string>>,
  ): Promise<Map<string, string>> {
    const cached = entry[slot];
    if (cached && cached.marker === marker) return cached.value;
    const value = load();
    entry[slot] = { marker, value };
    value.catch(() => {
      if (entry[slot]?.value === value) entry[slot] = undefined;
    });
    return value;
  }
}
