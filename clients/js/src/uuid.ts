/**
 * A random (version 4) uuid from `crypto.getRandomValues`, which browsers offer on plain http
 * pages too (`crypto.randomUUID` only exists in secure contexts).
 */
export function uuidv4(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  let text = "";
  for (let i = 0; i < 16; i++) {
    text += (i === 4 || i === 6 || i === 8 || i === 10 ? "-" : "") + (bytes[i]! + 256).toString(16).slice(1);
  }
  return text;
}
