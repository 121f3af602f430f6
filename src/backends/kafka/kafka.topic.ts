import { Admin } from "@platformatic/kafka";

export interface KafkaTopicOptions {
  brokers: string[];
  topic: string;
  partitions: number;
  replicas: number;
}

/**
 * Creates the events topic when it does not exist (idempotent; several processes may race). An
 * existing topic keeps its partition count: raising it is an operator's decision, because it
 * moves projects to other partitions.
 */
export async function ensureTopic(options: KafkaTopicOptions): Promise<void> {
  const admin = new Admin({ clientId: `tidemark-admin-${process.pid}`, bootstrapBrokers: options.brokers });
  try {
    const existing = await admin.listTopics();
    if (existing.includes(options.topic)) return;
    await admin
      .createTopics({ topics: [options.topic], partitions: options.partitions, replicas: options.replicas })
      .catch((error: unknown) => {
        if (!JSON.stringify(errorCodes(error)).includes("TOPIC_ALREADY_EXISTS")) throw error;
      });
  } finally {
    await admin.close().catch(() => undefined);
  }
}

/** The Kafka error ids inside a client error, for matching and logs. */
export function errorCodes(error: unknown): string[] {
  const codes: string[] = [];
  const visit = (e: unknown, depth: number) => {
    if (!e || typeof e !== "object" || depth > 5) return;
    const { apiId, code, errors } = e as { apiId?: unknown; code?: unknown; errors?: unknown };
    if (typeof apiId === "string") codes.push(apiId);
    if (typeof code === "string") codes.push(code);
    if (Array.isArray(errors)) for (const inner of errors) visit(inner, depth + 1);
    visit((e as { cause?: unknown }).cause, depth + 1);
  };
  visit(error, 0);
  return codes;
}
