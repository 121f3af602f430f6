// Fifteen digits always fit a double exactly; only longer integer literals can lose digits.
const LONG_DIGITS = /\d{16}/;
// JSON strings are skipped whole (their digits are text); every number token is read whole, so
// the digits of a fraction or an exponent are never taken for an integer.
const TOKENS = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

/**
 * The values of the integer literals in a JSON text that JSON.parse rounds: a number beyond 2^53
 * keeps only about 16 significant digits, so `9007199254740993` arrives as `9007199254740992`. Such
 * a value is stored changed, and two ids become one, so ingest refuses it and asks for a string.
 * A literal passes when its double is exact, or when that double is written back as the same text
 * (JavaScript clients send 2^60 as `1152921504606847000`, which is stored as sent). Reads the text
 * only when it holds 16 digits in a row, so ordinary bodies cost one scan.
 */
export function inexactIntegers(text: string): ReadonlySet<number> {
  const found = new Set<number>();
  if (!LONG_DIGITS.test(text)) return found;
  for (const [token] of text.matchAll(TOKENS)) {
    if (token.length < 16 || token.startsWith('"') || /[.eE]/.test(token)) continue;
    const value = Number(token);
    if (BigInt(token) !== BigInt(value) && String(value) !== token) found.add(value);
  }
  return found;
}
