import { useMemo, useState } from "preact/hooks";
import type { TidemarkClient } from "../api/client";
import { Panel } from "../components/panel";
import { RangePicker } from "../components/range-picker";
import { TableScroll } from "../components/table-scroll";
import { navigate, type Route } from "../router";
import { formatNumber, type RangeName } from "../time-range";
import { intParam, rangeFromParams, rangeParams } from "../url-state";
import { useAsync } from "../use-async";
import { InsightsTabs } from "./insights-tabs";

interface RetentionForm {
  startEvent: string;
  returnEvent: string;
  interval: "day" | "week";
  periods: number;
  range: RangeName;
  from?: string | undefined;
  to?: string | undefined;
}

function formFromRoute(params: URLSearchParams): RetentionForm {
  return {
    startEvent: params.get("start_event") ?? "",
    returnEvent: params.get("return_event") ?? "",
    interval: params.get("interval") === "week" ? "week" : "day",
    periods: intParam(params, "periods", 8, 1, 52),
    ...rangeParams(params),
  };
}

/** White to deep blue by share; the text colour is whichever of black and white reads better. */
export function heat(share: number): { background: string; color: string } {
  const t = Math.max(0, Math.min(1, share));
  const channel = (from: number, to: number) => Math.round(from + (to - from) * t);
  const rgb = [channel(255, 29), channel(255, 78), channel(255, 216)];
  const linear = rgb.map((c) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * (linear[0] ?? 0) + 0.7152 * (linear[1] ?? 0) + 0.0722 * (linear[2] ?? 0);
  const onWhite = 1.05 / (luminance + 0.05);
  const onBlack = (luminance + 0.05) / 0.05;
  return { background: `rgb(${rgb.join(",")})`, color: onBlack >= onWhite ? "#000" : "#fff" };
}

/** Retention: cohorts by first occurrence, shaded as a heat map. */
export function Retention(props: { client: TidemarkClient; route: Route; projectKey: string }) {
  const { client, route, projectKey } = props;
  const query = route.params.toString();
  const applied = useMemo(() => formFromRoute(route.params), [query]);
  const [form, setForm] = useState(applied);
  const [appliedKey, setAppliedKey] = useState(query);
  if (appliedKey !== query) {
    setAppliedKey(query);
    setForm(applied);
  }
  const range = rangeFromParams(route.params);
  const ready = applied.startEvent !== "" && applied.returnEvent !== "";
  const result = useAsync(
    ready
      ? () =>
          client.query({
            kind: "retention",
            start_event: applied.startEvent,
            return_event: applied.returnEvent,
            interval: applied.interval,
            periods: applied.periods,
            from: range.from.toISOString(),
            to: range.to.toISOString(),
          })
      : undefined,
    `${projectKey}|${query}|${range.from.toISOString()}`,
  );
  const run = (event: Event) => {
    event.preventDefault();
    navigate("/insights/retention", {
      start_event: form.startEvent.trim(),
      return_event: form.returnEvent.trim(),
      interval: form.interval,
      periods: String(form.periods),
      range: form.range,
      from: form.range === "custom" ? form.from : undefined,
      to: form.range === "custom" ? form.to : undefined,
    });
  };
  const periodName = applied.interval === "week" ? "Week" : "Day";
  return (
    <>
      <InsightsTabs current="retention" />
      <form class="panel query-form" onSubmit={run} aria-label="Retention query">
        <div class="form-grid">
          <label>
            Start event
            <input
              name="start_event"
              value={form.startEvent}
              onInput={(e) => setForm({ ...form, startEvent: e.currentTarget.value })}
            />
          </label>
          <label>
            Return event
            <input
              name="return_event"
              value={form.returnEvent}
              onInput={(e) => setForm({ ...form, returnEvent: e.currentTarget.value })}
            />
          </label>
          <label>
            Interval
            <select
              value={form.interval}
              onChange={(e) => setForm({ ...form, interval: e.currentTarget.value as "day" | "week" })}
            >
              <option value="day">Day</option>
              <option value="week">Week</option>
            </select>
          </label>
          <label>
            Periods
            <input
              type="number"
              min={1}
              max={52}
              value={form.periods}
              onInput={(e) => setForm({ ...form, periods: Number(e.currentTarget.value) || 8 })}
            />
          </label>
        </div>
        <RangePicker
          name={form.range}
          from={form.from}
          to={form.to}
          onChange={(next) => setForm({ ...form, range: next.range, from: next.from, to: next.to })}
        />
        <div class="form-actions">
          <button type="submit">Run</button>
        </div>
      </form>
      <Panel
        title="Retention"
        id="retention-result"
        loading={result.loading}
        slow={result.slow}
        error={result.error}
      >
        {!ready ? <p class="empty">Name a start event and a return event, then Run.</p> : null}
        {result.data && result.data.cohorts.length === 0 ? (
          <p class="empty">No user did the start event in this range.</p>
        ) : null}
        {result.data && result.data.cohorts.length > 0 ? (
          <TableScroll label="Retention table">
            <table class="data heat" data-testid="retention-table">
              <thead>
                <tr>
                  <th scope="col">Cohort</th>
                  <th scope="col">Users</th>
                  {Array.from({ length: applied.periods }, (_, k) => (
                    <th scope="col" key={k}>
                      {periodName} {k}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {result.data.cohorts.map((cohort) => (
                  <tr key={cohort.cohort}>
                    <th scope="row">{cohort.cohort.slice(0, 10)}</th>
                    <td>{formatNumber(cohort.size)}</td>
                    {cohort.values.map((value, k) => {
                      const share = cohort.size ? value / cohort.size : 0;
                      return (
                        <td
                          key={k}
                          style={heat(share)}
                          title={`${(share * 100).toFixed(1)}% of the cohort`}
                          data-value={value}
                        >
                          {formatNumber(value)}
                          <span class="share"> {(share * 100).toFixed(0)}%</span>
                        </td>
                      );
                    })}
                  </tr>
                ))}
              </tbody>
            </table>
          </TableScroll>
        ) : null}
      </Panel>
    </>
  );
}
