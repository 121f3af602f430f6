import { RANGE_LABELS, RANGE_NAMES, type RangeName } from "../time-range";

/** Today / 7 / 30 / 90 days or custom days, as a labelled group of controls. */
export function RangePicker(props: {
  name: RangeName;
  from?: string | undefined;
  to?: string | undefined;
  onChange(next: { range: RangeName; from?: string | undefined; to?: string | undefined }): void;
}) {
  const { name, from, to, onChange } = props;
  return (
    <fieldset class="range-picker">
      <legend>Date range (UTC)</legend>
      <div class="segmented">
        {RANGE_NAMES.map((option) => (
          <button
            type="button"
            key={option}
            aria-pressed={option === name ? "true" : "false"}
            onClick={() => onChange({ range: option, from, to })}
          >
            {RANGE_LABELS[option]}
          </button>
        ))}
      </div>
      {name === "custom" ? (
        <div class="custom-range">
          <label>
            From
            <input
              type="date"
              value={from ?? ""}
              onChange={(e) => onChange({ range: "custom", from: e.currentTarget.value, to })}
            />
          </label>
          <label>
            To
            <input
              type="date"
              value={to ?? ""}
              onChange={(e) => onChange({ range: "custom", from, to: e.currentTarget.value })}
            />
          </label>
        </div>
      ) : null}
    </fieldset>
  );
}
