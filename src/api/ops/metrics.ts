import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { CommitReport } from "../../pipeline/event-store.js";

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
  });
  readonly httpDuration = new Histogram({
    name: "tidemark_http_request_duration_seconds",
    help: "HTTP request latency by route",
    labelNames: ["route"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
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
      name: "tidemark_kafka_consumer_lag_messages",
      help: "cdc: messages in Kafka the sinks' consumer group has not committed; in each sink role's process",
      registers: [this.registry],
      async collect() {
        const lag = await metrics.consumerLag?.();
        if (lag !== undefined) this.set(lag);
      },
    });
  }

  /** The cdc pipeline's lag sources, where this process runs the cdc or sink role. */
  watchLag(sources: {
    slotLag?: () => Promise<number | undefined>;
    consumerLag?: () => Promise<number | undefined>;
  }): void {
    this.slotLag = sources.slotLag;
    this.consumerLag = sources.consumerLag;
  }

  /** One answered HTTP request. */
  recordHttp(route: string, status: number, seconds: number): void {
    this.httpRequests.inc({ route, status });
    this.httpDuration.observe({ route }, seconds);
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
