import type { DuckDBConnection } from "@duckdb/node-api";

/** Users a commit meets for the first time, to insert in its transaction. */
export interface NewUsers {
  /** NDJSON lines `{"p","d","i"}` for INSERT_DISTINCT_IDS. */
  lines: string[];
  keys: [string, number][];
}

/** Inserts a commit's new mappings ($1: NewUsers.lines joined by newlines). */
export const INSERT_DISTINCT_IDS = `INSERT INTO distinct_ids SELECT CAST(j.p AS UUID), j.d, j.i
  FROM (SELECT from_json(unnest(string_split($1, chr(10))), '{"p":"VARCHAR","d":"VARCHAR","i":"BIGINT"}') AS j)`;

/** Runs the work given to it one at a time, in the order given. */
export class SerialLock {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(work);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/**
 * The integer `uid` of every (project, distinct_id), kept in the `distinct_ids` table.
 *
 * New mappings are inserted in the transaction of the events that use them, so a stored event
 * never refers to a uid the table lacks. Commits that meet new users run one at a time (the store
 * holds `newUsers` from `assign` to the end of its transaction), so two commits meeting the same
 * new user agree on its number; commits whose users are all known run side by side. Measured
 * alternatives, on 1,000-event commits with new users in most: a transaction of their own for the
 * mappings cost half the insert rate (one more fsync a commit); proposing numbers without the
 * lock let two concurrent commits propose different numbers for one user, and with many new users
 * a commit the loser kept losing its retries.
 *
 * Committed mappings stay in memory, at most `cacheSize` of them (about 150 bytes each). While
 * every mapping fits, the memory is the whole table and an id it lacks is new: nothing is looked
 * up (a lookup per commit halved the insert rate of 1,000-event commits with new users in them).
 * Past that, the oldest are dropped and the ids a commit does not find in memory are looked up
 * together, in one statement.
 */
export class DistinctIdDictionary {
  private readonly cache = new Map<string, number>();
  private nextUid = 0;
  /** The cache holds every stored mapping. */
  private complete = true;

  constructor(private readonly cacheSize = 500_000) {}

  /** Loads the mappings (up to `cacheSize`) and where numbering continues. */
  async open(connection: DuckDBConnection): Promise<void> {
    const reader = await connection.runAndReadAll("SELECT coalesce(max(uid), 0) FROM distinct_ids");
    const [[max = 0n] = []] = reader.getRowsJS() as [bigint][];
    this.nextUid = Number(max) + 1;
    this.cache.clear();
    const stored = await connection.runAndReadAll(
      `SELECT CAST(project_id AS VARCHAR), distinct_id, uid FROM distinct_ids LIMIT ${this.cacheSize + 1}`,
    );
    const rows = stored.getRowsJS() as [string, string, bigint][];
    this.complete = rows.length <= this.cacheSize;
    for (const [projectId, distinctId, uid] of rows.slice(0, this.cacheSize))
      this.cache.set(`${projectId}/${distinctId}`, Number(uid));
  }

  /** How many uids there are so far (they run from 1). */
  uidRange(): number {
    return this.nextUid;
  }

  /** Serializes the commits that create users, from `assign` to the end of their transaction. */
  readonly newUsers = new SerialLock();

  /** The uids of the keys known in memory, and the keys that are not. Synchronous. */
  known(keys: ReadonlySet<string>): { uids: Map<string, number>; missing: string[] } {
    const uids = new Map<string, number>();
    const missing: string[] = [];
    for (const key of keys) {
      const uid = this.cache.get(key);
      if (uid === undefined) missing.push(key);
      else uids.set(key, uid);
    }
    return { uids, missing };
  }

  /**
   * Under `newUsers`: adds to `uids` the stored or new uid of each missing key, and returns the
   * new mappings (INSERT_DISTINCT_IDS's NDJSON lines) for the commit's transaction; `committed`
   * must follow once that transaction commits.
   */
  async assign(
    connection: DuckDBConnection,
    missing: readonly string[],
    uids: Map<string, number>,
  ): Promise<NewUsers> {
    // A commit before this one may have stored some while this one waited for the lock.
    const unknown = missing.filter((key) => {
      const uid = this.cache.get(key);
      if (uid !== undefined) uids.set(key, uid);
      return uid === undefined;
    });
    if (unknown.length > 0 && !this.complete) {
      const stored = await connection.runAndReadAll(
        `SELECT CAST(d.project_id AS VARCHAR), d.distinct_id, d.uid
         FROM (SELECT CAST(j.p AS UUID) AS project_id, j.d AS distinct_id
               FROM (SELECT from_json(unnest(string_split($1, chr(10))), '{"p":"VARCHAR","d":"VARCHAR"}') AS j)) k
         JOIN distinct_ids d ON d.project_id = k.project_id AND d.distinct_id = k.distinct_id`,
        [unknown.map((key) => JSON.stringify(splitKey(key))).join("\n")],
      );
      for (const [projectId, distinctId, uid] of stored.getRowsJS() as [string, string, bigint][]) {
        const key = `${projectId}/${distinctId}`;
        uids.set(key, Number(uid));
        this.remember(key, Number(uid));
      }
    }
    const created: NewUsers = { lines: [], keys: [] };
    for (const key of unknown) {
      if (uids.has(key)) continue;
      const uid = this.nextUid++;
      uids.set(key, uid);
      created.keys.push([key, uid]);
      created.lines.push(JSON.stringify({ ...splitKey(key), i: uid }));
    }
    return created;
  }

  /** The transaction that inserted these mappings committed: later commits use them. */
  committed(created: NewUsers): void {
    for (const [key, uid] of created.keys) this.remember(key, uid);
  }

  /** Forgets a deleted project's users. */
  forgetProject(projectId: string): void {
    for (const key of this.cache.keys()) if (key.startsWith(`${projectId}/`)) this.cache.delete(key);
  }

  private remember(key: string, uid: number): void {
    if (this.cache.size >= this.cacheSize && !this.cache.has(key)) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
      this.complete = false;
    }
    this.cache.set(key, uid);
  }
}

/** Keys are `projectId/distinctId`; a project id is a uuid, so the first slash ends it. */
function splitKey(key: string): { p: string; d: string } {
  const slash = key.indexOf("/");
  return { p: key.slice(0, slash), d: key.slice(slash + 1) };
}
