import { AppError, type BodyCheck, type Problem } from "../../core/errors.js";
import type { IncomingEvent } from "../../core/event-schema.js";
import {
  checkEvent,
  normaliseBatch,
  type ValidatedEvents,
  type ValidationLimits,
} from "../../core/validation.js";

/**
 * How a field of Tidemark's event reads in the client's message, by dotted path prefix: for a
 * Segment identify, `{"distinct_id": "userId", "properties.$set": "traits"}`. A problem found on
 * `properties.$set.email` is then reported on `traits.email`, the field the client sent.
 */
export type FieldNames = Readonly<Record<string, string>>;

/** One message of another wire format: the event it maps to, or why it maps to none. */
export type MappedItem = { event: Record<string, unknown>; names: FieldNames } | { problems: Problem[] };

/** Messages mapped to Tidemark events and checked by the same rules as `POST /api/v1/event/batch`. */
export interface MappedEvents {
  events: IncomingEvent[];
  /** The batch's own `sent_at`, for every event that has none. */
  sent_at?: string | number;
  /** Per event, the client's names of its fields. */
  names: FieldNames[];
  /** One message sent alone (not a batch): its problems carry no index. */
  single: boolean;
}

/** A problem's field as the client named it (the longest matching prefix of `names` is replaced). */
export function clientField(field: string, names: FieldNames | undefined): string {
  if (!names) return field;
  let best: string | undefined;
  for (const prefix of Object.keys(names)) {
    if (
      (field === prefix || field.startsWith(`${prefix}.`)) &&
      (best === undefined || prefix.length > best.length)
    )
      best = prefix;
  }
  return best === undefined ? field : `${names[best]}${field.slice(best.length)}`;
}

const inClientTerms = (problem: Problem, names: readonly FieldNames[]): Problem => ({
  ...problem,
  field: clientField(problem.field, names[problem.index ?? 0]),
});

/**
 * Checks mapped messages as Tidemark checks its own events, every problem with the message's
 * index and the client's field name: the checked events, or a 400 listing every problem (one bad
 * message refuses the batch, as /api/v1/event/batch does), or a 413 above `maxBatchEvents`.
 */
export function checkMapped(
  items: readonly MappedItem[],
  options: { sentAt?: unknown; maxBatchEvents: number; single: boolean; what: string },
): BodyCheck<MappedEvents> {
  if (items.length === 0) {
    return {
      error: new AppError("validation_failed", {
        message: `The ${options.what} is empty`,
        details: [{ field: options.what, message: "is empty" }],
      }),
    };
  }
  if (items.length > options.maxBatchEvents) {
    return {
      error: new AppError("batch_too_large", {
        message: `The ${options.what} has ${items.length} messages; at most ${options.maxBatchEvents} are allowed`,
      }),
    };
  }
  const problems: Problem[] = [];
  const events: IncomingEvent[] = [];
  const names: FieldNames[] = [];
  items.forEach((item, position) => {
    const index = options.single ? undefined : position;
    if ("problems" in item) {
      for (const problem of item.problems)
        problems.push(index === undefined ? problem : { index, ...problem });
      return;
    }
    const checked = checkEvent(item.event, index, options.sentAt);
    if (checked.event) {
      events.push(checked.event);
      names.push(item.names);
    } else {
      for (const problem of checked.problems)
        problems.push({ ...problem, field: clientField(problem.field, item.names) });
    }
  });
  if (problems.length > 0) {
    return {
      error: new AppError("validation_failed", {
        message: options.single
          ? "The message is not valid"
          : `${problems.length} problem(s) in the ${options.what}`,
        details: problems.slice(0, 1000),
      }),
    };
  }
  const sentAt = options.sentAt as string | number | undefined;
  return {
    value: { events, names, single: options.single, ...(sentAt === undefined ? {} : { sent_at: sentAt }) },
  };
}

/**
 * Checked mapped events as stored (see `normaliseBatch`): a 400 naming the client's fields when a
 * clock correction moves a time out of range. Warnings keep Tidemark's field names' positions.
 */
export function normaliseMapped(
  mapped: MappedEvents,
  projectId: string,
  receivedAt: number,
  limits: ValidationLimits,
): ValidatedEvents {
  try {
    const batch =
      mapped.sent_at === undefined
        ? { events: mapped.events }
        : { events: mapped.events, sent_at: mapped.sent_at };
    const result = normaliseBatch(batch, projectId, receivedAt, limits);
    return {
      events: result.events,
      warnings: result.warnings.map((w) => ({ ...w, field: clientField(w.field, mapped.names[w.index]) })),
    };
  } catch (error) {
    if (!(error instanceof AppError) || error.code !== "validation_failed") throw error;
    const details = (error.details ?? []).map((p) => {
      const renamed = inClientTerms(p, mapped.names);
      return mapped.single ? { field: renamed.field, message: renamed.message } : renamed;
    });
    throw new AppError("validation_failed", {
      message: mapped.single ? "The message is not valid" : error.message,
      details,
    });
  }
}
