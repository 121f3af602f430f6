import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { CommitReport } from "../../pipeline/event-store.js";
import type { StoreMemory } from "../../pipeline/parts.js";

const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** One route's latencies: counts per bucket (not cumulative), sum and count. */
interface RouteSeries {
  buckets: Float64Array;
  sum: number;
  count: number;
}

type HistogramValues = Awaited<ReturnType<Histogram["get"]>>;

/**
 * A histogram by route that every HTTP request updates. prom-client's labelled `observe` turns
 * its labels into a key and checks them on every call; this keeps plain numbers per route (a map
 * lookup and a bucket search) and gives prom-client the same series, in its own histogram shape,
 * when /metrics is read (tests/unit/metrics.test.ts compares the two).
 */
class RouteHistogram extends Histogram<"route"> {
  private readonly routes = new Map<string, RouteSeries>();

  constructor(
    private readonly metricName: string,
    private readonly metricHelp: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    super({
      name: metricName,
      help: metricHelp,
      labelNames: ["route"],
      buckets: [...bounds],
      registers: [registry],
    });
  }

  record(route: string, seconds: number): void {
    let series = this.routes.get(route);
    if (!series) {
      series = { buckets: new Float64Array(this.bounds.length), sum: 0, count: 0 };
      this.routes.set(route, series);
    }
    series.sum += seconds;
    series.count++;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (seconds <= bounds[i]!) {
        series.buckets[i]!++;
        break;
      }
    }
  }

  override async get(): Promise<HistogramValues> {
    const name = this.metricName;
    const values: {
      value: number;
      metricName: string;
      exemplar: null | undefined;
      labels: Record<string, string | number>;
    }[] = [];
    const bucket = `${name}_bucket`;
    for (const [route, series] of this.routes) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += series.buckets[i]!;
        values.push({ value: cumulative, metricName: bucket, exemplar: null, labels: { le, route } });
      });
      values.push(
        { value: series.count, metricName: bucket, exemplar: null, labels: { le: "+Inf", route } },
        { value: series.sum, metricName: `${name}_sum`, exemplar: undefined, labels: { route } },
        { value: series.count, metricName: `${name}_count`, exemplar: undefined, labels: { route } },
      );
    }
    // prom-client's own histogram answers this shape; its typings want `le` among the label
    // names and a `collect` the registry never reads.
    return {
      name,
      help: this.metricHelp,
      type: "histogram",
      values,
      aggregator: "sum",
    } as unknown as HistogramValues;
  }

  /** What the registry reads for /metrics (prom-client calls it when present). */
  getForPromString(): Promise<HistogramValues> {
    return this.get();
  }

  override reset(): void {
    super.reset();
    // prom-client's constructor calls reset before this class's fields exist.
    this.routes?.clear();
  }
}

/** Every metric Tidemark exports, on one registry (so tests can build several apps). */
export class Metrics {
  readonly registry = new Registry();
  readonly ingestEvents = new Counter({
    name: "tidemark_ingest_events_total",
    help: "Ingested events by outcome: accepted and duplicate as the store committed them (as the ledger counts), rejected, rate_limited and unavailable as the API refused them",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly httpRequests = new Counter({
    name: "tidemark_http_requests_total",
    help: "HTTP requests by route and status",
    labelNames: ["route", "status"] as const,
    registers: [this.registry],
    collect: () => {
      for (const [route, byStatus] of this.httpCounts) {
        for (const [status, count] of byStatus) {
          if (count.n === 0) continue;
          this.httpRequests.inc({ route, status }, count.n);
          count.n = 0;
        }
      }
    },
  });
  readonly httpDuration = new RouteHistogram(
    "tidemark_http_request_duration_seconds",
    "HTTP request latency by route",
    HTTP_BUCKETS,
    this.registry,
  );
  readonly flushEvents = new Histogram({
    name: "tidemark_flush_events",
    help: "Events per store commit (group commit size)",
    buckets: [1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000],
    registers: [this.registry],
  });
  readonly flushDuration = new Histogram({
    name: "tidemark_flush_duration_seconds",
    help: "Time per store commit",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly flushFailures = new Counter({
    name: "tidemark_flush_failures_total",
    help: "Store commits that failed (their requests got 503)",
    registers: [this.registry],
  });
  readonly queryDuration = new Histogram({
    name: "tidemark_query_duration_seconds",
    help: "Analytics query latency by kind",
    labelNames: ["kind"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  readonly cdcPublished = new Counter({
    name: "tidemark_cdc_published_events_total",
    help: "cdc: events the cdc role published to Kafka and acknowledged on the replication slot",
    registers: [this.registry],
  });
  readonly sinkBatchEvents = new Histogram({
    name: "tidemark_sink_batch_events",
    help: "cdc: events per sink write to ClickHouse",
    buckets: [1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000],
    registers: [this.registry],
  });
  readonly sinkWriteDuration = new Histogram({
    name: "tidemark_sink_write_duration_seconds",
    help: "cdc: time per sink write to ClickHouse",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly visibility = new Histogram({
    name: "tidemark_visibility_seconds",
    help: "cdc: end-to-end lag per event, from the API's receipt (202) until ClickHouse acknowledged it (visible to queries)",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly dropped = new Counter({
    name: "tidemark_pipeline_dropped_events_total",
    help: "Events a pipeline step dropped, by step and reason (each is also logged)",
    labelNames: ["step", "reason"] as const,
    registers: [this.registry],
  });
  private slotLag?: () => Promise<number | undefined>;
  private consumerLag?: () => Promise<number | undefined>;
  private storeMemory?: () => Promise<StoreMemory>;

  constructor(options: { queueDepth?: () => Promise<number> } = {}) {
    collectDefaultMetrics({ register: this.registry, prefix: "tidemark_" });
    const depth = options.queueDepth;
    new Gauge({
      name: "tidemark_queue_depth_events",
      help: "Events accepted by the API and not yet committed to the store of record",
      registers: [this.registry],
      async collect() {
        // A backend that cannot say its depth (Redis down) must not fail the whole scrape: the
        // other metrics matter most exactly then. NaN is Prometheus' "unknown".
        if (depth) this.set(await depth().catch(() => Number.NaN));
      },
    });
    const metrics = this;
    new Gauge({
      name: "tidemark_cdc_slot_lag_bytes",
      help: "cdc: WAL the Postgres replication slot keeps (pg_current_wal_lsn() - confirmed_flush_lsn); in the cdc role's process",
      registers: [this.registry],
      async collect() {
        const lag = await metrics.slotLag?.();
        if (lag !== undefined) this.set(lag);
      },
    });
    new Gauge({
      name: "tidemark_store_memory_bytes",
      help: "embedded: what DuckDB holds in memory, by its tag (duckdb_memory()); cached table data (BASE_TABLE) grows to the cap under ingest and is then evicted",
      labelNames: ["tag"] as const,
      registers: [this.registry],
      async collect() {
        const memory = await metrics.storeMemory?.().catch(() => undefined);
        this.reset();
        if (!memory) return;
        for (const [tag, bytes] of memory.usedBytes) if (bytes > 0) this.set({ tag }, bytes);
      },
    });
    const storeFigures: [string, string, (memory: StoreMemory) => number][] = [
      [
        "tidemark_store_memory_limit_bytes",
        "embedded: DuckDB's memory cap (TIDEMARK_DUCKDB_MEMORY_LIMIT)",
        (memory) => memory.limitBytes,
      ],
      [
        "tidemark_store_spilled_bytes",
        "embedded: what DuckDB has spilled to tidemark.duckdb.tmp/ because the cap was reached",
        (memory) => memory.spilledBytes,
      ],
    ];
    for (const [name, help, figure] of storeFigures)
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          const memory = await metrics.storeMemory?.().catch(() => undefined);
          if (memory) this.set(figure(memory));
        },
      });
    new Gauge({
      name: "tidemark_kafka_consumer_lag_messages",
      help: "cdc: messages in Kafka the sinks' consumer group has not committed; in each sink role's process",
      registers: [this.registry],
      async collect() {
        const lag = await metrics.consumerLag?.();
        if (lag !== undefined) this.set(lag);
      },
    });
  }

  /**
   * The sources of the gauges this process's parts can fill: the cdc pipeline's lags, where this
   * process runs the cdc or sink role, and the memory of a store it holds (embedded).
   */
  watch(sources: {
    slotLag?: () => Promise<number | undefined>;
    consumerLag?: () => Promise<number | undefined>;
    storeMemory?: () => Promise<StoreMemory>;
  }): void {
    this.slotLag = sources.slotLag;
    this.consumerLag = sources.consumerLag;
    const read = sources.storeMemory;
    if (!read) return;
    // The three gauges are collected side by side in one scrape: they share one read.
    let reading: Promise<StoreMemory> | undefined;
    this.storeMemory = () => {
      reading ??= read().finally(() => {
        reading = undefined;
      });
      return reading;
    };
  }

  /** Answered requests by route, then status, handed to httpRequests when /metrics is read. */
  private readonly httpCounts = new Map<string, Map<number, { n: number }>>();

  /** One answered HTTP request: plain counters, 0.03-0.08 µs against 2.2-3.8 µs for prom-client's labelled calls. */
  recordHttp(route: string, status: number, seconds: number): void {
    let byStatus = this.httpCounts.get(route);
    if (!byStatus) {
      byStatus = new Map();
      this.httpCounts.set(route, byStatus);
    }
    const count = byStatus.get(status);
    if (count) count.n++;
    else byStatus.set(status, { n: 1 });
    this.httpDuration.record(route, seconds);
  }

  /**
   * One store commit. Accepted and duplicate events are counted here, from what the store did,
   * because the store writes the ledger's accepted and duplicate counts in the same transaction:
   * so /metrics and the ledger agree, also in the async pipeline, where the API answers before the
   * worker stores (and cannot tell duplicates), and the worker in the same process commits.
   */
  recordFlush = (report: CommitReport): void => {
    this.flushEvents.observe(report.events);
    this.flushDuration.observe(report.durationMs / 1000);
    if (report.error) this.flushFailures.inc();
    if (report.outcome) {
      const duplicates = report.outcome.duplicates.length;
      this.ingestEvents.inc({ outcome: "accepted" }, report.events - duplicates);
      if (duplicates > 0) this.ingestEvents.inc({ outcome: "duplicate" }, duplicates);
    }
  };
}
