import { useMemo, useState } from "preact/hooks";
import type { TidemarkClient } from "../api/client";
import type { TrendsAnswer } from "../api/types";
import { LineChart } from "../components/line-chart";
import { Panel } from "../components/panel";
import { RangePicker } from "../components/range-picker";
import { navigate, type Route } from "../router";
import {
  defaultInterval,
  formatNumber,
  isRangeName,
  previousRange,
  type Range,
  resolveRange,
} from "../time-range";
import { useAsync } from "../use-async";

interface OverviewData {
  events: TrendsAnswer;
  users: TrendsAnswer;
  previousEvents: TrendsAnswer;
  previousUsers: TrendsAnswer;
}

function total(answer: TrendsAnswer): number {
  return answer.series.reduce((sum, s) => sum + s.total, 0);
}

function points(answer: TrendsAnswer): { t: string; value: number }[] {
  return answer.series[0]?.points ?? [];
}

function change(now: number, before: number): string {
  if (before === 0) return now === 0 ? "no change" : "none in the previous period";
  const pct = ((now - before) / before) * 100;
  return `${pct >= 0 ? "+" : ""}${pct.toFixed(0)}% vs previous period`;
}

async function loadOverview(client: TidemarkClient, range: Range): Promise<OverviewData> {
  const interval = defaultInterval(range);
  const previous = previousRange(range);
  const trend = (math: "total" | "unique_users", r: Range) =>
    client.query({ kind: "trends", math, interval, from: r.from.toISOString(), to: r.to.toISOString() });
  const [events, users, previousEvents, previousUsers] = await Promise.all([
    trend("total", range),
    trend("unique_users", range),
    trend("total", previous),
    trend("unique_users", previous),
  ]);
  return { events, users, previousEvents, previousUsers };
}

/** Plausible-style overview: the numbers of the range, a chart against the previous period, top lists. */
export function Overview(props: { client: TidemarkClient; route: Route; projectKey: string }) {
  const { client, route, projectKey } = props;
  const params = route.params;
  const rangeName = isRangeName(params.get("range")) ? (params.get("range") as Range["name"]) : "7d";
  const customFrom = params.get("from") ?? undefined;
  const customTo = params.get("to") ?? undefined;
  const property = params.get("property") ?? "path";
  const metric = params.get("metric") === "users" ? "users" : "events";
  const range = useMemo(
    () => resolveRange(rangeName, customFrom, customTo),
    [rangeName, customFrom, customTo],
  );
  const [propertyDraft, setPropertyDraft] = useState(property);
  const state = (patch: Record<string, string | undefined>) =>
    navigate(
      "/overview",
      { range: rangeName, from: customFrom, to: customTo, property, metric, ...patch },
      true,
    );

  const key = `${projectKey}|${range.from.toISOString()}|${range.to.toISOString()}`;
  const summary = useAsync(() => loadOverview(client, range), key);
  const topEvents = useAsync(
    () =>
      client.query({
        kind: "top_events",
        from: range.from.toISOString(),
        to: range.to.toISOString(),
        limit: 10,
      }),
    key,
  );
  const topValues = useAsync(
    () =>
      client.query({
        kind: "top_values",
        property,
        from: range.from.toISOString(),
        to: range.to.toISOString(),
        limit: 10,
      }),
    `${key}|${property}`,
  );

  const interval = defaultInterval(range);
  const chart = useMemo(() => {
    const data = summary.data;
    if (!data) return undefined;
    const current = points(metric === "users" ? data.users : data.events);
    const before = points(metric === "users" ? data.previousUsers : data.previousEvents);
    return {
      x: current.map((p) => Date.parse(p.t) / 1000),
      series: [
        { label: metric === "users" ? "Unique users" : "Events", values: current.map((p) => p.value) },
        {
          label: "Previous period",
          values: current.map((_, i) => before[i]?.value ?? 0),
          dashed: true,
        },
      ],
    };
  }, [summary.data, metric]);

  const eventsTotal = summary.data ? total(summary.data.events) : undefined;
  const usersTotal = summary.data ? total(summary.data.users) : undefined;
  const topEventMax = Math.max(1, ...(topEvents.data?.events.map((e) => e.count) ?? []));
  const topValueMax = Math.max(1, ...(topValues.data?.values.map((v) => v.count) ?? []));

  return (
    <>
      <div class="toolbar">
        <RangePicker
          name={rangeName}
          from={customFrom}
          to={customTo}
          onChange={(next) => state({ range: next.range, from: next.from, to: next.to })}
        />
      </div>
      <Panel
        title="Summary"
        id="summary"
        loading={summary.loading}
        slow={summary.slow}
        error={summary.error}
        class="wide"
      >
        <div class="stats">
          <button
            type="button"
            class="stat"
            aria-pressed={metric === "events" ? "true" : "false"}
            onClick={() => state({ metric: "events" })}
          >
            <span class="stat-label">Events</span>
            <span class="stat-value" data-testid="stat-events">
              {eventsTotal === undefined ? "–" : formatNumber(eventsTotal)}
            </span>
            <span class="stat-change">
              {summary.data ? change(eventsTotal ?? 0, total(summary.data.previousEvents)) : " "}
            </span>
          </button>
          <button
            type="button"
            class="stat"
            aria-pressed={metric === "users" ? "true" : "false"}
            onClick={() => state({ metric: "users" })}
          >
            <span class="stat-label">Unique users</span>
            <span class="stat-value" data-testid="stat-users">
              {usersTotal === undefined ? "–" : formatNumber(usersTotal)}
            </span>
            <span class="stat-change">
              {summary.data ? change(usersTotal ?? 0, total(summary.data.previousUsers)) : " "}
            </span>
          </button>
        </div>
        {chart ? (
          <LineChart
            x={chart.x}
            series={chart.series}
            hourly={interval === "hour"}
            summary={`${metric === "users" ? "Unique users" : "Events"} per ${interval}, with the previous period dashed`}
          />
        ) : (
          <div class="chart placeholder" />
        )}
      </Panel>
      <div class="grid-2">
        <Panel
          title="Top events"
          id="top-events"
          loading={topEvents.loading}
          slow={topEvents.slow}
          error={topEvents.error}
        >
          {topEvents.data && topEvents.data.events.length === 0 ? (
            <p class="empty">No events in this range.</p>
          ) : null}
          <ul class="bar-list">
            {topEvents.data?.events.map((e) => (
              <li key={e.event} style={{ "--share": `${(e.count / topEventMax) * 100}%` }}>
                <a
                  class="bar-label"
                  href={`#/insights/trends?event=${encodeURIComponent(e.event)}&range=${rangeName}`}
                >
                  {e.event}
                </a>
                <span class="bar-value">{formatNumber(e.count)}</span>
              </li>
            ))}
          </ul>
        </Panel>
        <Panel
          title="Top values"
          id="top-values"
          loading={topValues.loading}
          slow={topValues.slow}
          error={topValues.error}
          actions={
            <form
              class="inline-form"
              onSubmit={(e) => {
                e.preventDefault();
                state({ property: propertyDraft.trim() || "path" });
              }}
            >
              <label for="top-property">Property</label>
              <input
                id="top-property"
                value={propertyDraft}
                onInput={(e) => setPropertyDraft(e.currentTarget.value)}
              />
              <button type="submit" class="secondary">
                Show
              </button>
            </form>
          }
        >
          {topValues.data && topValues.data.values.length === 0 ? (
            <p class="empty">
              No event in this range has the property <code>{property}</code>.
            </p>
          ) : null}
          <ul class="bar-list">
            {topValues.data?.values.map((v) => (
              <li key={String(v.value)} style={{ "--share": `${(v.count / topValueMax) * 100}%` }}>
                <span class="bar-label">{v.value ?? "(none)"}</span>
                <span class="bar-value">{formatNumber(v.count)}</span>
              </li>
            ))}
          </ul>
        </Panel>
      </div>
    </>
  );
}
