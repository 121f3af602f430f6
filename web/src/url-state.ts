import type { Filter } from "./api/types";
import { isRangeName, type Range, type RangeName, resolveRange } from "./time-range";

/** The date range named in a view's URL (`range`, and `from`/`to` days when custom). */
export function rangeFromParams(params: URLSearchParams, fallback: RangeName = "30d"): Range {
  const name = params.get("range");
  return resolveRange(
    isRangeName(name) ? name : fallback,
    params.get("from") ?? undefined,
    params.get("to") ?? undefined,
  );
}

export function rangeParams(params: URLSearchParams, fallback: RangeName = "30d") {
  const name = params.get("range");
  return {
    range: isRangeName(name) ? name : fallback,
    from: params.get("from") ?? undefined,
    to: params.get("to") ?? undefined,
  };
}

/** Filters travel in the URL as JSON; anything malformed there is ignored, not trusted. */
export function filtersFromParams(params: URLSearchParams): Filter[] {
  try {
    const parsed: unknown = JSON.parse(params.get("filters") ?? "[]");
    if (!Array.isArray(parsed)) return [];
    return parsed.filter(
      (f): f is Filter => typeof f === "object" && f !== null && typeof (f as Filter).property === "string",
    );
  } catch {
    return [];
  }
}

/** Filters worth sending: rows with a property name. */
export function usableFilters(filters: Filter[]): Filter[] {
  return filters.filter((f) => f.property.trim() !== "");
}

export function filtersParam(filters: Filter[]): string | undefined {
  const usable = usableFilters(filters);
  return usable.length > 0 ? JSON.stringify(usable) : undefined;
}

export function intParam(params: URLSearchParams, name: string, fallback: number, min: number, max: number) {
  const value = Number(params.get(name));
  return Number.isInteger(value) && value >= min && value <= max ? value : fallback;
}
