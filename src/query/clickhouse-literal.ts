/**
 * The one way a user value reaches ClickHouse SQL. ClickHouse 18.16 has no query parameters
 * (`{name:Type}` arrived in 19.x), so every string, number and uuid from a spec or an event is
 * written as a literal by this function, and by nothing else. Identifiers (property names) are
 * never written as identifiers: they travel as string literals compared to the `prop_keys` array.
 *
 * Strings: ClickHouse strings are bytes and the query text travels as UTF-8, so a lone UTF-16
 * surrogate (legal in a JavaScript string) cannot reach the server as written; it becomes U+FFFD,
 * exactly as the sink stores it (see clickhouse.rows.ts), so a filter on such a value still
 * matches. Inside the quotes, backslash and quote are escaped, and every control character is
 * written as `\xHH`, so NUL, newlines and the like never appear raw in the SQL text. The same
 * text parses identically on 18.16 and on current ClickHouse (the fuzz test checks both).
 */
export function clickhouseLiteral(value: string | number | boolean): string {
  if (typeof value === "string") return clickhouseString(value);
  if (typeof value === "boolean") return value ? "1" : "0";
  if (!Number.isFinite(value)) throw new RangeError(`not a finite number: ${value}`);
  // Parenthesised so a negative number can follow any operator; toFloat64 of a decimal string is
  // parsed by the same routine on both engines (a bare literal's type would differ by engine).
  if (Number.isSafeInteger(value)) return `(${value})`;
  return `toFloat64('${String(value)}')`;
}

/** The well-formed UTF-16 form of a string: lone surrogates become U+FFFD. */
export function wellFormed(value: string): string {
  return value.toWellFormed();
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it escapes
const NEEDS_ESCAPE = /[\\'\u0000-\u001f\u007f]/g;

function clickhouseString(value: string): string {
  const escaped = wellFormed(value).replace(NEEDS_ESCAPE, (ch) => {
    if (ch === "\\") return "\\\\";
    if (ch === "'") return "\\'";
    return `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
  return `'${escaped}'`;
}
