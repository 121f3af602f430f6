import { PLANS, type Plan } from "../../core/plans.js";
import type { KeyMatch, Project, ProjectKeyHashes, ProjectStore } from "../../pipeline/project-store.js";
import { isTransientPostgresError, type PostgresDatabase } from "./postgres.database.js";
import { storableText } from "./postgres.text.js";

interface ProjectRow {
  id: string;
  name: string;
  plan: string;
  created: string;
}

const SELECT_PROJECT = `SELECT id::text AS id, name, plan, floor(extract(epoch from created_at) * 1000)::bigint AS created
  FROM projects`;

function toProject(row: ProjectRow): Project {
  const plan = row.plan as Plan;
  if (!PLANS.includes(plan)) throw new Error(`unknown plan in store: ${row.plan}`);
  return { id: row.id, name: row.name, plan, createdAt: Number(row.created) };
}

/**
 * Projects and hashed keys in Postgres, shared by every API process.
 *
 * Key lookups remember their last answer, and serve it while Postgres is unreachable, so the
 * async pipeline keeps accepting events through a Postgres outage (its events wait in Redis).
 * The price: a key revoked just before an outage keeps working until Postgres is back.
 */
export class PostgresProjectStore implements ProjectStore {
  readonly name = "postgres-projects";
  private readonly lastKnown = new Map<string, KeyMatch | undefined>();

  constructor(private readonly db: PostgresDatabase) {}

  start(): Promise<void> {
    return this.db.open();
  }

  ready(): Promise<string | undefined> {
    return this.db.ready();
  }

  close(): Promise<void> {
    return this.db.close();
  }

  async create(project: Project, keys: ProjectKeyHashes): Promise<void> {
    await this.db.transaction(async (client) => {
      await client.query(
        `INSERT INTO projects (id, name, plan, created_at)
         VALUES ($1::uuid, $2, $3, timestamptz '1970-01-01 00:00:00+00' + $4::bigint * interval '1 millisecond')`,
        [project.id, storableText(project.name), project.plan, project.createdAt],
      );
      await client.query(
        "INSERT INTO project_keys (key_hash, project_id, kind) VALUES ($1, $3::uuid, 'write'), ($2, $3::uuid, 'read')",
        [keys.writeKeyHash, keys.readKeyHash, project.id],
      );
    });
  }

  async list(): Promise<Project[]> {
    const { rows } = await this.db.query<ProjectRow>(`${SELECT_PROJECT} ORDER BY created_at, id`);
    return rows.map(toProject);
  }

  async get(id: string): Promise<Project | undefined> {
    const { rows } = await this.db.query<ProjectRow>(`${SELECT_PROJECT} WHERE id = $1::uuid`, [id]);
    return rows[0] ? toProject(rows[0]) : undefined;
  }

  async setPlan(id: string, plan: Plan): Promise<Project | undefined> {
    await this.db.query("UPDATE projects SET plan = $2 WHERE id = $1::uuid", [id, plan]);
    return this.get(id);
  }

  async setKeys(id: string, keys: ProjectKeyHashes): Promise<Project | undefined> {
    const replaced = await this.db.transaction(async (client) => {
      // Locks the project row so a concurrent delete or rotation waits.
      const { rowCount } = await client.query("SELECT 1 FROM projects WHERE id = $1::uuid FOR UPDATE", [id]);
      if (!rowCount) return false;
      await client.query("DELETE FROM project_keys WHERE project_id = $1::uuid", [id]);
      await client.query(
        "INSERT INTO project_keys (key_hash, project_id, kind) VALUES ($1, $3::uuid, 'write'), ($2, $3::uuid, 'read')",
        [keys.writeKeyHash, keys.readKeyHash, id],
      );
      return true;
    });
    return replaced ? this.get(id) : undefined;
  }

  async delete(id: string): Promise<boolean> {
    // project_keys go with it (ON DELETE CASCADE).
    const { rowCount } = await this.db.query("DELETE FROM projects WHERE id = $1::uuid", [id]);
    return (rowCount ?? 0) > 0;
  }

  async findByKeyHash(hash: string): Promise<KeyMatch | undefined> {
    let match: KeyMatch | undefined;
    try {
      match = await this.lookup(hash);
    } catch (error) {
      if (isTransientPostgresError(error) && this.lastKnown.has(hash)) return this.lastKnown.get(hash);
      throw error;
    }
    if (this.lastKnown.size >= 100_000) this.lastKnown.clear();
    this.lastKnown.set(hash, match);
    return match;
  }

  private async lookup(hash: string): Promise<KeyMatch | undefined> {
    const { rows } = await this.db.query<ProjectRow & { kind: string }>(
      `SELECT p.id::text AS id, p.name, p.plan, floor(extract(epoch from p.created_at) * 1000)::bigint AS created, k.kind
       FROM project_keys k JOIN projects p ON p.id = k.project_id WHERE k.key_hash = $1`,
      [hash],
    );
    const row = rows[0];
    if (!row) return undefined;
    return { project: toProject(row), kind: row.kind === "read" ? "read" : "write" };
  }
}
