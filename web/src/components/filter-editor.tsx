import { FILTER_OPS, type Filter, type FilterOp } from "../api/types";

const OP_LABELS: Record<FilterOp, string> = {
  eq: "equals",
  neq: "is not",
  contains: "contains",
  gt: "greater than",
  lt: "less than",
  is_set: "is set",
};

/** A value typed as a number compares as a number (gt/lt need JSON numbers). */
export function filterValue(op: FilterOp, text: string): string | number | undefined {
  if (op === "is_set") return undefined;
  if ((op === "gt" || op === "lt") && text.trim() !== "" && Number.isFinite(Number(text)))
    return Number(text);
  return text;
}

/** Property filters: rows of property, operator and value, each labelled. */
export function FilterEditor(props: { filters: Filter[]; onChange(filters: Filter[]): void }) {
  const { filters, onChange } = props;
  const update = (index: number, patch: Partial<Filter>) =>
    onChange(filters.map((f, i) => (i === index ? { ...f, ...patch } : f)));
  return (
    <fieldset class="filters">
      <legend>Property filters</legend>
      {filters.map((filter, index) => (
        <div class="filter-row" key={index}>
          <label>
            Property
            <input
              value={filter.property}
              placeholder="path"
              onInput={(e) => update(index, { property: e.currentTarget.value })}
            />
          </label>
          <label>
            Operator
            <select
              value={filter.op}
              onChange={(e) => update(index, { op: e.currentTarget.value as FilterOp })}
            >
              {FILTER_OPS.map((op) => (
                <option value={op} key={op}>
                  {OP_LABELS[op]}
                </option>
              ))}
            </select>
          </label>
          {filter.op === "is_set" ? null : (
            <label>
              Value
              <input
                value={filter.value === undefined ? "" : String(filter.value)}
                onInput={(e) => update(index, { value: filterValue(filter.op, e.currentTarget.value) })}
              />
            </label>
          )}
          <button
            type="button"
            class="secondary"
            aria-label={`Remove filter ${index + 1}`}
            onClick={() => onChange(filters.filter((_, i) => i !== index))}
          >
            Remove
          </button>
        </div>
      ))}
      <button
        type="button"
        class="secondary"
        onClick={() => onChange([...filters, { property: "", op: "eq", value: "" }])}
      >
        Add filter
      </button>
    </fieldset>
  );
}
