import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { crc32 } from "node:zlib";
import type { DuckDBConnection, DuckDBResult } from "@duckdb/node-api";

/**
 * The set of (project, uuid) keys the embedded store holds, as a Bloom filter in memory: what
 * makes ingest exactly-once without a key index.
 *
 * A PRIMARY KEY on the events table made DuckDB keep an ART index of every key in memory, about
 * 45 bytes a stored event that it cannot evict: RSS grew with the store, and once the index filled
 * TIDEMARK_DUCKDB_MEMORY_LIMIT (about 8M events at 512MB) every commit failed with out-of-memory.
 * Inserts into the indexed table also slowed as it grew. This filter takes 3-10 bytes a key, outside
 * DuckDB's cap, and a commit asks the table only about the keys the filter may hold: the retries,
 * and new keys it holds by chance, at most about one in 15,000 (65 in a million with the segment
 * built at start full; 6 in a million grown from empty to 1M keys: tests/unit/key-filter.test.ts).
 *
 * Layout: a blocked Bloom filter per project (one 64-byte block a key, 16 bits in it, one in each
 * 32-bit word), so a lookup touches one cache line. Key hashes are DuckDB's own `hash(uuid)`,
 * computed by the same DuckDB for the keys of a commit and for the keys of the table when the
 * filter is built at start, so the two always agree. A project's filter grows by segments: when
 * one is full, the next one holds as many keys as all before it, and a lookup checks each.
 *
 * A clean stop saves the filter beside the store (`save`) and the next start reads it back instead
 * of hashing every key again (`load`): 10M keys took 8.4 s to build at start.
 */

/** One key's hash, as DuckDB's 64-bit `hash(uuid)` split in two: the block, and the bits in it. */
export interface KeyHash {
  block: number;
  bits: number;
}

/**
 * Bits a key of the segment built at start, when full: 3 bytes. It is sized for twice the keys
 * the store holds then, so it starts at 48 bits a key; full, it errs on about one new key in 15,000.
 */
const BITS_PER_KEY = 24;
/**
 * Bits a key of the segments added while the store runs, when full: 5 bytes. A lookup checks every
 * segment, so their errors add up, and a store grown from empty has a dozen segments by 10M keys.
 * At 24 bits they erred on one new key in 1,300-1,900 (1M-16M keys grown): 65-79 % of
 * 2,000-event commits then scanned the project's uuids, which grows with the store (in process,
 * 3M events stored: 20 of 41 s of commits). At 40 bits: one in 110,000-150,000, 1.3-1.8 % of
 * such commits (tests/unit/key-filter.test.ts).
 */
const GROWN_BITS_PER_KEY = 40;
/** Keys of a project's first segment when it has few or none: 8,192 keys take 32 KB. */
const MIN_CAPACITY = 8192;
const WORDS_PER_BLOCK = 16;
/** One odd multiplier a word: a key's bit in word j is the top 5 bits of (bits * SALT[j]) mod 2^32. */
const SALT = [
  0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d, 0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31, 0x3c6ef373,
  0xbb67ae85, 0x6a09e667, 0xa54ff53b, 0x510e527f, 0x9b05688d, 0x1f83d9ab, 0x5be0cd19,
];

interface Segment {
  words: Uint32Array;
  blocks: number;
  capacity: number;
  keys: number;
}

/** Blocks for `capacity` keys at `bitsPerKey`, at least one. */
const blocksFor = (capacity: number, bitsPerKey: number): number =>
  Math.max(1, Math.ceil((capacity * bitsPerKey) / (WORDS_PER_BLOCK * 32)));

/**
 * A key's block: its 32-bit `block` hash scaled to the count of blocks (multiply and shift, so any
 * count will do and the filter takes exactly the bits it was sized for). The product stays below
 * 2^53, exact in a double; the SQL of `load` computes the same in UBIGINT.
 */
const blockOf = (s: Segment, key: KeyHash): number => Math.floor((key.block * s.blocks) / 4294967296);

function segment(capacity: number, bitsPerKey: number): Segment {
  const blocks = blocksFor(capacity, bitsPerKey);
  return { words: new Uint32Array(blocks * WORDS_PER_BLOCK), blocks, capacity, keys: 0 };
}

function holds(s: Segment, key: KeyHash): boolean {
  const base = blockOf(s, key) * WORDS_PER_BLOCK;
  for (let j = 0; j < WORDS_PER_BLOCK; j++) {
    const bit = 1 << (Math.imul(key.bits, SALT[j]!) >>> 27);
    if ((s.words[base + j]! & bit) === 0) return false;
  }
  return true;
}

function set(s: Segment, key: KeyHash): void {
  const base = blockOf(s, key) * WORDS_PER_BLOCK;
  for (let j = 0; j < WORDS_PER_BLOCK; j++) s.words[base + j]! |= 1 << (Math.imul(key.bits, SALT[j]!) >>> 27);
}

/** Keys from which a project's filter is built by a query of its own (see load). */
const LARGE_PROJECT = 100_000;
/**
 * Blocks one query of a large project's build aggregates at most. DuckDB holds the 16 aggregate
 * states of every block, and its hash-table entry, until the grouping ends, so one query's memory
 * grows with the project (a project of 100M keys has 9.4M blocks); past this many blocks (about
 * 10M keys) the build runs in slices of the block range, one scan of the project's keys each.
 */
const BLOCKS_PER_SLICE = 1_000_000;

/** The 16 words of a block, ORed over its keys' `bits` (a key's bit j as `holds` reads it). */
const BLOCK_WORDS = SALT.map(
  (salt, j) =>
    `bit_or(CAST(1 AS UINTEGER) << CAST(((CAST(bits AS UBIGINT) * ${salt >>> 0}) % 4294967296) >> 27 AS UINTEGER)) AS w${j}`,
).join(", ");

/**
 * A row's key hash as the filter takes it, from its `uuid` column: `block` and `bits`, the low and
 * high halves of DuckDB's hash(uuid), both UINTEGER (`load` splits the hash the same way).
 */
export const KEY_HASH_HALVES =
  "CAST(hash(uuid) & 4294967295 AS UINTEGER) AS block, CAST(hash(uuid) >> 32 AS UINTEGER) AS bits";

export interface KeyFilterOptions {
  /** Bits a key of the segment built at start, when full (24). Tests set it low to make the filter err often. */
  bitsPerKey?: number;
  /** Bits a key of the segments added while running, when full (40). */
  grownBitsPerKey?: number;
  /** Keys of a project's first segment at least (8,192). */
  minCapacity?: number;
  /** Blocks a large project's build aggregates in one query (1,000,000; tests set it low). */
  blocksPerSlice?: number;
}

/** The first line of a saved filter: the format, which a change of layout must bump. */
const SAVED_FORMAT = "tidemark key filter 1";

/** A saved header longer than this is not read (a project takes about 150 bytes of it). */
const MAX_HEADER_BYTES = 64 * 1024 * 1024;

/** A saved filter's header: each project's segments, then their words in the same order. */
interface SavedHeader {
  format: string;
  /** crc32 of the words that follow the header. */
  crc: number;
  projects: { id: string; segments: { blocks: number; capacity: number; keys: number }[] }[];
}

/** Each project's count of stored keys, from the table. */
async function tableCounts(connection: DuckDBConnection): Promise<Map<string, number>> {
  const counts = await connection.runAndReadAll(
    "SELECT CAST(project_id AS VARCHAR), count(*) FROM events GROUP BY project_id",
  );
  return new Map((counts.getRowsJS() as [string, bigint][]).map(([id, n]) => [id, Number(n)]));
}

/** Keys the filter holds of a project: every key added once its commit was durable. */
const keysOf = (segments: readonly { keys: number }[]): number =>
  segments.reduce((sum, s) => sum + s.keys, 0);

export class KeyFilter {
  private readonly projects = new Map<string, Segment[]>();
  private readonly bitsPerKey: number;
  private readonly grownBitsPerKey: number;
  private readonly minCapacity: number;
  private readonly blocksPerSlice: number;

  constructor(options: KeyFilterOptions = {}) {
    this.bitsPerKey = options.bitsPerKey ?? BITS_PER_KEY;
    this.grownBitsPerKey = options.grownBitsPerKey ?? GROWN_BITS_PER_KEY;
    this.minCapacity = options.minCapacity ?? MIN_CAPACITY;
    this.blocksPerSlice = options.blocksPerSlice ?? BLOCKS_PER_SLICE;
  }

  /**
   * Builds the filter from every key the table holds: DuckDB hashes the keys and ORs each block's
   * bits, so one row a block crosses into JS, not one a key. A project of LARGE_PROJECT keys or
   * more is read on its own, grouped by block alone; the others together, grouped by project and
   * block (one query scanning the table once, however many small projects). Each project's first
   * segment holds twice its keys. Measured on 10M events of one project (2 cores, quiet): 3.8 s.
   * A project of more than `blocksPerSlice` blocks is read in slices of its block range, so that
   * no query holds more than that many blocks (a scan of its keys a slice).
   */
  async load(
    connection: DuckDBConnection,
    savedPath?: string,
  ): Promise<{ keys: number; projects: number; from: "saved" | "table"; unusable?: string }> {
    this.projects.clear();
    const counts = await tableCounts(connection);
    let unusable: string | undefined;
    if (savedPath) {
      unusable = await this.readSaved(savedPath, counts);
      // Read once: the commits from here on change the table, and a stop that does not save (a
      // crash) must leave nothing behind that a later start could take for the table's keys.
      await rm(savedPath, { force: true });
      await syncDirectory(dirname(savedPath));
      if (unusable === undefined) {
        const keys = [...counts.values()].reduce((a, b) => a + b, 0);
        return { keys, projects: this.projects.size, from: "saved" };
      }
      this.projects.clear();
    }
    const small: string[] = [];
    let keys = 0;
    for (const [projectId, n] of counts) {
      const s = segment(Math.max(this.minCapacity, 2 * Number(n)), this.bitsPerKey);
      s.keys = Number(n);
      keys += s.keys;
      this.projects.set(projectId, [s]);
      if (s.keys >= LARGE_PROJECT) {
        const slices = Math.ceil(s.blocks / this.blocksPerSlice);
        for (let slice = 0; slice < slices; slice++)
          await this.loadBlocks(
            await connection.stream(
              `SELECT $1 AS p, b, ${BLOCK_WORDS} FROM (
                 SELECT CAST(((h & 4294967295) * ${s.blocks}) >> 32 AS UINTEGER) AS b, CAST(h >> 32 AS UINTEGER) AS bits
                 FROM (SELECT hash(uuid) AS h FROM events WHERE project_id = CAST($1 AS UUID)))
               WHERE b >= $2 AND b < $3 GROUP BY b`,
              [
                projectId,
                Math.floor((slice * s.blocks) / slices),
                Math.floor(((slice + 1) * s.blocks) / slices),
              ],
            ),
          );
      } else small.push(JSON.stringify({ p: projectId, n: s.blocks }));
    }
    if (small.length > 0)
      await this.loadBlocks(
        await connection.stream(
          `WITH sizes AS (SELECT CAST(j.p AS UUID) AS project_id, j.n AS blocks
              FROM (SELECT from_json(unnest(string_split($1, chr(10))), '{"p":"VARCHAR","n":"UBIGINT"}') AS j))
           SELECT CAST(project_id AS VARCHAR) AS p, b, ${BLOCK_WORDS} FROM (
             SELECT e.project_id, CAST(((e.h & 4294967295) * m.blocks) >> 32 AS UINTEGER) AS b, CAST(e.h >> 32 AS UINTEGER) AS bits
             FROM (SELECT project_id, hash(uuid) AS h FROM events) e JOIN sizes m USING (project_id))
           GROUP BY project_id, b`,
          [small.join("\n")],
        ),
      );
    return { keys, projects: this.projects.size, from: "table", ...(unusable ? { unusable } : {}) };
  }

  /**
   * Adopts the filter saved at the last clean stop, when it is whole and holds exactly the keys the
   * table holds now: the same projects with the same counts (the table only grows between a save
   * and the next start, or loses whole projects, so equal counts mean equal keys). Returns why it
   * could not, or undefined once adopted.
   */
  private async readSaved(path: string, counts: ReadonlyMap<string, number>): Promise<string | undefined> {
    let file: FileHandle;
    try {
      file = await open(path, "r");
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "ENOENT" ? "none saved" : String(error);
    }
    try {
      const { size } = await file.stat();
      // The header is one line of JSON, read in steps until its newline.
      let head = Buffer.alloc(0);
      let headerEnd = -1;
      while (headerEnd < 0 && head.length < Math.min(size, MAX_HEADER_BYTES)) {
        const chunk = Buffer.alloc(Math.min(1 << 20, size - head.length));
        const { bytesRead } = await file.read(chunk, 0, chunk.length, head.length);
        if (bytesRead === 0) break;
        headerEnd = chunk.subarray(0, bytesRead).indexOf(10);
        if (headerEnd >= 0) headerEnd += head.length;
        head = Buffer.concat([head, chunk.subarray(0, bytesRead)]);
      }
      let header: SavedHeader;
      try {
        if (headerEnd < 0) throw new Error("no header");
        header = JSON.parse(head.subarray(0, headerEnd).toString("utf8")) as SavedHeader;
      } catch {
        return "unreadable header";
      }
      if (header.format !== SAVED_FORMAT) return `format "${String(header.format)}"`;
      if (header.projects.length !== counts.size) return "projects differ from the table's";
      // Each segment's words are read straight into its own array: no second copy of the file.
      const projects = new Map<string, Segment[]>();
      let position = headerEnd + 1;
      let crc = 0;
      for (const { id, segments } of header.projects) {
        if (counts.get(id) !== keysOf(segments)) return "key counts differ from the table's";
        const loaded: Segment[] = [];
        for (const { blocks, capacity, keys } of segments) {
          const words = new Uint32Array(blocks * WORDS_PER_BLOCK);
          const bytes = Buffer.from(words.buffer);
          const { bytesRead } = await file.read(bytes, 0, bytes.length, position);
          if (bytesRead < bytes.length) return "truncated";
          crc = crc32(bytes, crc);
          position += bytes.length;
          loaded.push({ words, blocks, capacity, keys });
        }
        projects.set(id, loaded);
      }
      if (position !== size) return "trailing bytes";
      if (crc !== header.crc) return "checksum mismatch";
      for (const [id, segments] of projects) this.projects.set(id, segments);
      return undefined;
    } finally {
      await file.close();
    }
  }

  /**
   * Saves the filter to `path` for the next start, at a clean stop with no commit under way. Not
   * saved (and false) when its keys differ from the table's counts, which would mean a commit the
   * filter missed: the next start then builds it from the table. Written to a temporary file,
   * flushed, then renamed, so a crash leaves the old state or the new one, never a torn file.
   */
  async save(path: string, connection: DuckDBConnection): Promise<boolean> {
    const counts = await tableCounts(connection);
    const held = [...this.projects].filter(([, segments]) => keysOf(segments) > 0);
    if (held.length !== counts.size || held.some(([id, segments]) => counts.get(id) !== keysOf(segments)))
      return false;
    const words = held.flatMap(([, segments]) => segments.map((s) => s.words));
    let crc = 0;
    for (const w of words) crc = crc32(Buffer.from(w.buffer, w.byteOffset, w.byteLength), crc);
    const header: SavedHeader = {
      format: SAVED_FORMAT,
      crc,
      projects: held.map(([id, segments]) => ({
        id,
        segments: segments.map(({ blocks, capacity, keys }) => ({ blocks, capacity, keys })),
      })),
    };
    const temporary = `${path}.tmp`;
    const file = await open(temporary, "w", 0o600);
    try {
      await file.write(`${JSON.stringify(header)}\n`);
      for (const w of words) await file.write(Buffer.from(w.buffer, w.byteOffset, w.byteLength));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
    await syncDirectory(dirname(path));
    return true;
  }

  /** ORs rows of (p: project, b: block, w0..w15: its words) into the projects' first segments. */
  private async loadBlocks(result: DuckDBResult): Promise<void> {
    for (;;) {
      const chunk = await result.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      const columns = Array.from({ length: 2 + WORDS_PER_BLOCK }, (_, i) => chunk.getColumnVector(i));
      let projectId = "";
      let s: Segment | undefined;
      for (let row = 0; row < chunk.rowCount; row++) {
        const p = columns[0]!.getItem(row) as string;
        if (p !== projectId || !s) {
          projectId = p;
          s = this.projects.get(p)?.[0];
          if (!s) throw new Error(`key filter: no segment for project ${p}`);
        }
        const base = (columns[1]!.getItem(row) as number) * WORDS_PER_BLOCK;
        for (let j = 0; j < WORDS_PER_BLOCK; j++)
          s.words[base + j]! |= columns[2 + j]!.getItem(row) as number;
      }
    }
  }

  /** False when the project surely does not hold the key; true when it may. */
  mayHold(projectId: string, key: KeyHash): boolean {
    const segments = this.projects.get(projectId);
    if (!segments) return false;
    for (const s of segments) if (holds(s, key)) return true;
    return false;
  }

  /** Records a key the project now holds (call once its commit is durable). */
  add(projectId: string, key: KeyHash): void {
    let segments = this.projects.get(projectId);
    if (!segments) {
      segments = [segment(this.minCapacity, this.grownBitsPerKey)];
      this.projects.set(projectId, segments);
    }
    let last = segments[segments.length - 1]!;
    if (last.keys >= last.capacity) {
      // As many keys as all before it: the segments grown take 5-10 bytes a key whatever their size.
      const total = segments.reduce((sum, s) => sum + s.capacity, 0);
      last = segment(total, this.grownBitsPerKey);
      segments.push(last);
    }
    set(last, key);
    last.keys++;
  }

  forgetProject(projectId: string): void {
    this.projects.delete(projectId);
  }

  /** Bytes the filter takes and keys it holds, for logs. */
  size(): { bytes: number; keys: number } {
    let bytes = 0;
    let keys = 0;
    for (const segments of this.projects.values())
      for (const s of segments) {
        bytes += s.words.byteLength;
        keys += s.keys;
      }
    return { bytes, keys };
  }
}

/** Makes a rename or an unlink in `directory` durable. */
async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
