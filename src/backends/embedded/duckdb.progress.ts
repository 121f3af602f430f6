import type { Log } from "../../core/log.js";

/**
 * How often a long background job of the store says how far it has come. On 100M events a
 * property column's fill takes 77-130 s and the first sort of 87 days 925 s, and each said nothing
 * until it ended; a job shorter than this still says nothing more.
 */
export const PROGRESS_EVERY_MS = 10_000;

/** The progress lines of one background job: at most one every `everyMs`, none for a short job. */
export class Progress {
  private readonly started: number;
  private lastLogged: number;
  /** When the first part ended, and how many parts had then: the pace is measured from there. */
  private firstStep?: { at: number; done: number };

  constructor(
    private readonly log: Log | undefined,
    private readonly message: string,
    private readonly fields: Record<string, unknown>,
    private readonly everyMs = PROGRESS_EVERY_MS,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.started = this.now();
    this.lastLogged = this.started;
  }

  /** `done` of `total` parts (days, slices) and `events` so far: logged when `everyMs` has passed. */
  step(done: number, total: number, events: number): void {
    const now = this.now();
    this.firstStep ??= { at: now, done };
    if (now - this.lastLogged < this.everyMs) return;
    this.lastLogged = now;
    const elapsed = now - this.started;
    // The first part's time is left out of the pace: it includes the wait for the write queue
    // (on 100M events, 14.8 s for the first slice, 0.7 s each for the next ones).
    const paced = done - this.firstStep.done;
    const pace = paced > 0 ? (now - this.firstStep.at) / paced : undefined;
    this.log?.info(
      {
        ...this.fields,
        done,
        total,
        events,
        took_ms: Math.round(elapsed),
        // The parts left at the pace so far: parts differ in size, so it is a rough guide.
        left_ms: pace === undefined ? undefined : Math.round(pace * (total - done)),
      },
      this.message,
    );
  }
}
