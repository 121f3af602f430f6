/**
 * Calls made in the same turn of the event loop, sent to Redis as one script call. Under load an
 * API process parses many requests in one turn; each used to cost Redis a script call of its own
 * and the process a command to encode and a reply to parse. Grouped, they share one: the group is
 * sent when the turn's I/O callbacks are done (setImmediate), so a call waits for no timer, and
 * at once when it reaches `maxWeight` (a bound on one script call's size).
 *
 * A call's promise settles with its own result; when the script call fails, every call of the
 * group is rejected with that error, as each would have been had it been sent alone.
 */
export class RedisCallGroup<Call, Result> {
  private calls: Call[] = [];
  private settlers: { resolve: (result: Result) => void; reject: (error: unknown) => void }[] = [];
  private weight = 0;
  private scheduled = false;

  constructor(
    /** Sends the calls as one; resolves with one result per call, in their order. */
    private readonly send: (calls: readonly Call[]) => Promise<readonly Result[]>,
    private readonly maxWeight: number,
    private readonly weightOf: (call: Call) => number = () => 1,
  ) {}

  add(call: Call): Promise<Result> {
    const weight = this.weightOf(call);
    // A call that would take the group past its bound starts the next one.
    if (this.calls.length > 0 && this.weight + weight > this.maxWeight) this.flush();
    return new Promise<Result>((resolve, reject) => {
      this.calls.push(call);
      this.settlers.push({ resolve, reject });
      this.weight += weight;
      if (this.weight >= this.maxWeight) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flushScheduled);
      }
    });
  }

  private readonly flushScheduled = (): void => {
    this.scheduled = false;
    this.flush();
  };

  private flush(): void {
    if (this.calls.length === 0) return;
    const { calls, settlers } = this;
    this.calls = [];
    this.settlers = [];
    this.weight = 0;
    let sending: Promise<readonly Result[]>;
    try {
      sending = this.send(calls);
    } catch (error) {
      sending = Promise.reject(error);
    }
    sending.then(
      (results) => {
        if (results.length !== calls.length) {
          const error = new Error(
            `a grouped Redis call returned ${results.length} results for ${calls.length}`,
          );
          for (const settler of settlers) settler.reject(error);
          return;
        }
        for (const [i, settler] of settlers.entries()) settler.resolve(results[i] as Result);
      },
      (error: unknown) => {
        for (const settler of settlers) settler.reject(error);
      },
    );
  }
}
