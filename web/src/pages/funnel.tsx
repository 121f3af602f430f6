import { useMemo, useState } from "preact/hooks";
import type { TidemarkClient } from "../api/client";
import { Panel } from "../components/panel";
import { RangePicker } from "../components/range-picker";
import type { Route } from "../router";
import { formatNumber, type RangeName } from "../time-range";
import { intParam, rangeFromParams, rangeParams } from "../url-state";
import { useAsync } from "../use-async";
import { InsightsTabs } from "./insights-tabs";

const WINDOWS: [number, string][] = [
  [3600, "1 hour"],
  [86_400, "1 day"],
  [604_800, "7 days"],
  [2_592_000, "30 days"],
];

interface FunnelForm {
  steps: string[];
  window: number;
  range: RangeName;
  from?: string | undefined;
  to?: string | undefined;
}

function formFromRoute(params: URLSearchParams): FunnelForm {
  const steps = params.getAll("step");
  return {
    steps: steps.length >= 2 ? steps : [steps[0] ?? "", ""],
    window: intParam(params, "window", 86_400, 1, 31_536_000),
    ...rangeParams(params),
  };
}

export function percent(rate: number): string {
  return `${(rate * 100).toFixed(1)}%`;
}

/** Funnel: ordered steps within a window; a bar per step with conversion and drop-off. */
export function Funnel(props: { client: TidemarkClient; route: Route; projectKey: string }) {
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
  const steps = applied.steps.filter((s) => s.trim() !== "");
  const ready = steps.length >= 2;
  const result = useAsync(
    ready
      ? () =>
          client.query({
            kind: "funnel",
            steps,
            window_seconds: applied.window,
            from: range.from.toISOString(),
            to: range.to.toISOString(),
          })
      : undefined,
    `${projectKey}|${query}|${range.from.toISOString()}`,
  );
  const setStep = (index: number, value: string) =>
    setForm({ ...form, steps: form.steps.map((s, i) => (i === index ? value : s)) });
  const run = (event: Event) => {
    event.preventDefault();
    // Steps repeat the `step` name, in order.
    const params = new URLSearchParams();
    for (const step of form.steps.map((s) => s.trim()).filter(Boolean)) params.append("step", step);
    params.set("window", String(form.window));
    params.set("range", form.range);
    if (form.range === "custom" && form.from && form.to) {
      params.set("from", form.from);
      params.set("to", form.to);
    }
    location.hash = `#/insights/funnel?${params.toString()}`;
  };
  const first = result.data?.steps[0]?.count ?? 0;
  return (
    <>
      <InsightsTabs current="funnel" />
      <form class="panel query-form" onSubmit={run} aria-label="Funnel query">
        <fieldset>
          <legend>Steps, in order</legend>
          <ol class="steps-editor">
            {form.steps.map((step, index) => (
              <li key={index}>
                <label>
                  Step {index + 1} event
                  <input value={step} onInput={(e) => setStep(index, e.currentTarget.value)} />
                </label>
                {form.steps.length > 2 ? (
                  <button
                    type="button"
                    class="secondary"
                    aria-label={`Remove step ${index + 1}`}
                    onClick={() => setForm({ ...form, steps: form.steps.filter((_, i) => i !== index) })}
                  >
                    Remove
                  </button>
                ) : null}
              </li>
            ))}
          </ol>
          {form.steps.length < 10 ? (
            <button
              type="button"
              class="secondary"
              onClick={() => setForm({ ...form, steps: [...form.steps, ""] })}
            >
              Add step
            </button>
          ) : null}
        </fieldset>
        <div class="form-grid">
          <label>
            Conversion window
            <select
              value={String(form.window)}
              onChange={(e) => setForm({ ...form, window: Number(e.currentTarget.value) })}
            >
              {WINDOWS.map(([seconds, label]) => (
                <option key={seconds} value={String(seconds)}>
                  {label}
                </option>
              ))}
              {WINDOWS.some(([s]) => s === form.window) ? null : (
                <option value={String(form.window)}>{form.window} seconds</option>
              )}
            </select>
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
        title="Funnel"
        id="funnel-result"
        loading={result.loading}
        slow={result.slow}
        error={result.error}
      >
        {!ready ? <p class="empty">Name at least two steps, then Run.</p> : null}
        {result.data ? (
          <ol class="funnel" data-testid="funnel-steps">
            {result.data.steps.map((step, index) => (
              <li key={index} class="funnel-step">
                <div class="funnel-head">
                  <span class="funnel-name">
                    {index + 1}. {step.event}
                  </span>
                  <span class="funnel-count" data-count={step.count}>
                    {formatNumber(step.count)} {step.count === 1 ? "user" : "users"}
                  </span>
                </div>
                <div
                  class="funnel-bar"
                  role="img"
                  aria-label={`${percent(first ? step.count / first : 0)} of those who entered`}
                >
                  <span style={{ width: `${first ? (step.count / first) * 100 : 0}%` }} />
                </div>
                <div class="funnel-rates">
                  <span data-conversion={step.conversion_rate}>
                    Conversion {percent(step.conversion_rate)}
                  </span>
                  <span data-drop-off={step.drop_off}>
                    Drop-off{" "}
                    {index === 0
                      ? "–"
                      : `${formatNumber(step.drop_off)} ${step.drop_off === 1 ? "user" : "users"}`}
                  </span>
                </div>
              </li>
            ))}
          </ol>
        ) : null}
      </Panel>
    </>
  );
}
