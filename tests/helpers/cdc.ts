import { randomBytes } from "node:crypto";
import pg from "pg";

/** Slot, publication, topic and group names no other test (or earlier run) uses. */
export function uniqueCdcNames(label: string) {
  const id = `${label}_${randomBytes(4).toString("hex")}`.replace(/[^a-z0-9_]/gi, "_").toLowerCase();
  return {
    slot: `test_${id}`,
    publication: `test_${id}`,
    topic: `test-${id.replace(/_/g, "-")}`,
    group: `test-${id.replace(/_/g, "-")}`,
  };
}

/**
 * Drops a test's replication slot, waiting for its reader to go: Postgres refuses to drop a
 * database that a slot belongs to, and a slot left behind keeps WAL forever.
 */
export async function dropSlot(databaseUrl: string, slot: string): Promise<void> {
  if (!slot.startsWith("test_")) throw new Error(`refusing to drop slot ${slot}`);
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { rows } = await client.query<{ pid: number | null }>(
        "SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1",
        [slot],
      );
      if (rows.length === 0) return;
      if (rows[0]?.pid) {
        if (Date.now() > deadline) await client.query("SELECT pg_terminate_backend($1)", [rows[0].pid]);
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      await client.query("SELECT pg_drop_replication_slot($1)", [slot]);
      return;
    }
  } finally {
    await client.end();
  }
}
