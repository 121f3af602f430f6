import type { Lifecycle } from "../../pipeline/lifecycle.js";
import { ensureReplication } from "./postgres.change-feed.js";
import type { PostgresDatabase } from "./postgres.database.js";

/**
 * Part of every process of the cdc pipeline: at start, after the migrations, the publication and
 * the replication slot exist (created when missing), so no event is stored before the slot that
 * must carry it to Kafka.
 */
export class ReplicationSetup implements Lifecycle {
  readonly name = "postgres-replication-setup";

  constructor(
    private readonly db: PostgresDatabase,
    private readonly names: { slot: string; publication: string },
  ) {}

  async start(): Promise<void> {
    await this.db.open();
    await ensureReplication(this.db, this.names);
  }

  ready(): Promise<string | undefined> {
    return this.db.ready();
  }

  close(): Promise<void> {
    return this.db.close();
  }
}
