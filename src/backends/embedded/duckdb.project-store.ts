import type { DuckDBValue } from "@duckdb/node-api";
import { PLANS, type Plan } from "../../core/plans.js";
import type { KeyMatch, Project, ProjectKeyHashes, ProjectStore } from "../../pipeline/project-store.js";
import type { DuckDbDatabase } from "./duckdb.database.js";

const SELECT_PROJECT =
  "SELECT CAST(id AS VARCHAR) AS id, name, plan, epoch_ms(created_at) AS created FROM projects";

function toProject(row: Record<string, DuckDBValue>): Project {
  const plan = String(row.plan) as Plan;
  if (!PLANS.includes(plan)) throw new Error(`unknown plan in store: ${plan}`);
  return { id: String(row.id), name: String(row.name), plan, createdAt: Number(row.created) };
}

/** Projects and hashed keys in the embedded DuckDB file. */
export class DuckDbProjectStore implements ProjectStore {
  readonly name = "duckdb-projects";

  constructor(private readonly db: DuckDbDatabase) {}

  async start(): Promise<void> {
    await this.db.open();
  }

  async ready(): Promise<string | undefined> {
    return undefined;
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  private async rows(sql: string, values: DuckDBValue[]): Promise<Record<string, DuckDBValue>[]> {
    const reader = await this.db.readConnection().runAndReadAll(sql, values);
    return reader.getRowObjects();
  }

  create(project: Project, keys: ProjectKeyHashes): Promise<void> {
    return this.db.transaction(async (connection) => {
      await connection.run(
        "INSERT INTO projects VALUES (CAST($1 AS UUID), $2, $3, epoch_ms(CAST($4 AS BIGINT)))",
        [project.id, project.name, project.plan, project.createdAt],
      );
      await connection.run(
        "INSERT INTO project_keys VALUES ($1, CAST($3 AS UUID), 'write'), ($2, CAST($3 AS UUID), 'read')",
        [keys.writeKeyHash, keys.readKeyHash, project.id],
      );
    });
  }

  async list(): Promise<Project[]> {
    return (await this.rows(`${SELECT_PROJECT} ORDER BY created_at, id`, [])).map(toProject);
  }

  async get(id: string): Promise<Project | undefined> {
    const [row] = await this.rows(`${SELECT_PROJECT} WHERE id = CAST($1 AS UUID)`, [id]);
    return row ? toProject(row) : undefined;
  }

  async setPlan(id: string, plan: Plan): Promise<Project | undefined> {
    await this.db.write((connection) =>
      connection.run("UPDATE projects SET plan = $2 WHERE id = CAST($1 AS UUID)", [id, plan]),
    );
    return this.get(id);
  }

  async setKeys(id: string, keys: ProjectKeyHashes): Promise<Project | undefined> {
    if (!(await this.get(id))) return undefined;
    await this.db.transaction(async (connection) => {
      await connection.run("DELETE FROM project_keys WHERE project_id = CAST($1 AS UUID)", [id]);
      await connection.run(
        "INSERT INTO project_keys VALUES ($1, CAST($3 AS UUID), 'write'), ($2, CAST($3 AS UUID), 'read')",
        [keys.writeKeyHash, keys.readKeyHash, id],
      );
    });
    return this.get(id);
  }

  delete(id: string): Promise<boolean> {
    return this.db.transaction(async (connection) => {
      await connection.run("DELETE FROM project_keys WHERE project_id = CAST($1 AS UUID)", [id]);
      const result = await connection.run("DELETE FROM projects WHERE id = CAST($1 AS UUID)", [id]);
      return result.rowsChanged > 0;
    });
  }

  async findByKeyHash(hash: string): Promise<KeyMatch | undefined> {
    const [row] = await this.rows(
      `SELECT CAST(p.id AS VARCHAR) AS id, p.name, p.plan, epoch_ms(p.created_at) AS created, k.kind
       FROM project_keys k JOIN projects p ON p.id = k.project_id WHERE k.key_hash = $1`,
      [hash],
    );
    if (!row) return undefined;
    return { project: toProject(row), kind: row.kind === "read" ? "read" : "write" };
  }
}
