/**
 * Postgres text cannot hold U+0000, and its JSON types refuse the escape `\u0000` and unpaired
 * UTF-16 surrogates, all of which the API accepts from clients (JavaScript strings allow them).
 * They are stored as U+FFFD, the replacement character, as PostHog does; query parameters get the
 * same treatment, so a filter on such a value still matches what was stored.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what Postgres cannot store
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: as above
const UNSTORABLE_TEST = /\u0000|[\ud800-\udfff]/;
/** What JSON.stringify writes for U+0000 and for unpaired surrogates (paired ones it leaves raw). */
const UNSTORABLE_ESCAPE = /\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

export function storableText(value: string): string {
  return UNSTORABLE_TEST.test(value) ? value.replace(UNSTORABLE, "\ufffd") : value;
}

function storableValue(value: unknown): unknown {
  if (typeof value === "string") return storableText(value);
  if (Array.isArray(value)) return value.map(storableValue);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) out[storableText(key)] = storableValue(inner);
    return out;
  }
  return value;
}

/** JSON text safe for a Postgres json column; unchanged (and not re-parsed) in the usual case. */
export function storableJson(json: string): string {
  if (!UNSTORABLE_ESCAPE.test(json) && !UNSTORABLE_TEST.test(json)) return json;
  return JSON.stringify(storableValue(JSON.parse(json)));
}
