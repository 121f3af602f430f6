import { useMemo, useState } from "preact/hooks";
import type { TidemarkClient } from "../api/client";
import type { Filter, Interval } from "../api/types";
import { FilterEditor } from "../components/filter-editor";
import { LineChart } from "../components/line-chart";
import { Panel } from "../components/panel";
import { RangePicker } from "../components/range-picker";
import { TableScroll } from "../components/table-scroll";
import { navigate, type Route } from "../router";
import { bucketLabel, formatNumber, type RangeName } from "../time-range";
import {
  filtersFromParams,
  filtersParam,
  intParam,
  rangeFromParams,
  rangeParams,
  usableFilters,
} from "../url-state";
import { useAsync } from "../use-async";
import { InsightsTabs } from "./insights-tabs";

interface TrendsForm {
  event: string;
  math: "total" | "unique_users";
  interval: Interval;
  breakdown: string;
  limit: number;
  filters: Filter[];
  range: RangeName;
  from?: string | undefined;
  to?: string | undefined;
}

function formFromRoute(params: URLSearchParams): TrendsForm {
  const interval = params.get("interval");
  return {
    event: params.get("event") ?? "",
    math: params.get("math") === "unique_users" ? "unique_users" : "total",
    interval: interval === "hour" || interval === "week" ? interval : "day",
    breakdown: params.get("breakdown") ?? "",
    limit: intParam(params, "limit", 5, 1, 50),
    filters: filtersFromParams(params),
    ...rangeParams(params),
  };
}

/** Trends: count or unique users of an event over time, broken down by a property, filtered. */
export function Trends(props: { client: TidemarkClient; route: Route; projectKey: string }) {
  const { client, route, projectKey } = props;
  const applied = useMemo(() => formFromRoute(route.params), [route.params.toString()]);
  const [form, setForm] = useState(applied);
  const [appliedKey, setAppliedKey] = useState(route.params.toString());
  if (appliedKey !== route.params.toString()) {
    setAppliedKey(route.params.toString());
    setForm(applied);
  }
  const set = (patch: Partial<TrendsForm>) => setForm({ ...form, ...patch });
  const range = rangeFromParams(route.params);
  const result = useAsync(
    () =>
      client.query({
        kind: "trends",
        math: applied.math,
        interval: applied.interval,
        from: range.from.toISOString(),
        to: range.to.toISOString(),
        limit: applied.limit,
        ...(applied.event ? { event: applied.event } : {}),
        ...(applied.breakdown ? { breakdown: applied.breakdown } : {}),
        ...(usableFilters(applied.filters).length ? { filters: usableFilters(applied.filters) } : {}),
      }),
    `${projectKey}|${route.params.toString()}|${range.from.toISOString()}`,
  );
  const run = (event: Event) => {
    event.preventDefault();
    navigate("/insights/trends", {
      event: form.event.trim(),
      math: form.math,
      interval: form.interval,
      breakdown: form.breakdown.trim(),
      limit: String(form.limit),
      filters: filtersParam(form.filters),
      range: form.range,
      from: form.range === "custom" ? form.from : undefined,
      to: form.range === "custom" ? form.to : undefined,
    });
  };
  const series = result.data?.series ?? [];
  const name = (value: string | null) =>
    applied.breakdown ? (value ?? "(none)") : applied.event || "All events";
  const chart = useMemo(
    () => ({
      x: (series[0]?.points ?? []).map((p) => Date.parse(p.t) / 1000),
      series: series.map((s) => ({ label: name(s.breakdown_value), values: s.points.map((p) => p.value) })),
    }),
    [result.data],
  );
  const measure = applied.math === "unique_users" ? "Unique users" : "Events";

  return (
    <>
      <InsightsTabs current="trends" />
      <form class="panel query-form" onSubmit={run} aria-label="Trends query">
        <div class="form-grid">
          <label>
            Event
            <input
              name="event"
              value={form.event}
              placeholder="All events"
              onInput={(e) => set({ event: e.currentTarget.value })}
            />
          </label>
          <label>
            Measure
            <select
              name="math"
              value={form.math}
              onChange={(e) => set({ math: e.currentTarget.value as TrendsForm["math"] })}
            >
              <option value="total">Total events</option>
              <option value="unique_users">Unique users</option>
            </select>
          </label>
          <label>
            Interval
            <select
              name="interval"
              value={form.interval}
              onChange={(e) => set({ interval: e.currentTarget.value as Interval })}
            >
              <option value="hour">Hour</option>
              <option value="day">Day</option>
              <option value="week">Week</option>
            </select>
          </label>
          <label>
            Breakdown by property
            <input
              name="breakdown"
              value={form.breakdown}
              placeholder="none"
              onInput={(e) => set({ breakdown: e.currentTarget.value })}
            />
          </label>
          <label>
            Top N values
            <input
              name="limit"
              type="number"
              min={1}
              max={50}
              value={form.limit}
              onInput={(e) => set({ limit: Number(e.currentTarget.value) || 5 })}
            />
          </label>
        </div>
        <RangePicker
          name={form.range}
          from={form.from}
          to={form.to}
          onChange={(next) => set({ range: next.range, from: next.from, to: next.to })}
        />
        <FilterEditor filters={form.filters} onChange={(filters) => set({ filters })} />
        <div class="form-actions">
          <button type="submit">Run</button>
        </div>
      </form>
      <Panel
        title={`${measure} per ${applied.interval}`}
        id="trends-result"
        loading={result.loading}
        slow={result.slow}
        error={result.error}
      >
        {result.data && series.length > 0 ? (
          <>
            <LineChart
              x={chart.x}
              series={chart.series}
              hourly={applied.interval === "hour"}
              summary={`${measure} of ${applied.event || "all events"} per ${applied.interval}`}
            />
            <TableScroll label="Trends table">
              <table class="data" data-testid="trends-table">
                <thead>
                  <tr>
                    <th scope="col">{applied.breakdown || "Series"}</th>
                    <th scope="col">Total</th>
                    {series[0]?.points.map((p) => (
                      <th scope="col" key={p.t}>
                        {bucketLabel(p.t, applied.interval)}
                      </th>
                    ))}
                  </tr>
                </thead>
                <tbody>
                  {series.map((s) => (
                    <tr key={String(s.breakdown_value)}>
                      <th scope="row">{name(s.breakdown_value)}</th>
                      <td data-total="">{formatNumber(s.total)}</td>
                      {s.points.map((p) => (
                        <td key={p.t}>{formatNumber(p.value)}</td>
                      ))}
                    </tr>
                  ))}
                </tbody>
              </table>
            </TableScroll>
          </>
        ) : result.data ? (
          <p class="empty">No matching events in this range.</p>
        ) : null}
      </Panel>
    </>
  );
}
