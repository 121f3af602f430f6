import { createHash } from "node:crypto";

/**
 * The name-based UUID of RFC 9562 §5.5 (version 5: SHA-1 of the namespace's 16 bytes followed by
 * the name's UTF-8 bytes, with the version and variant bits set). The same name in the same
 * namespace always gives the same UUID, which is what makes a retried message idempotent when
 * its client's message id is not a UUID itself.
 */
export function uuidV5(name: string, namespace: string): string {
  const hash = createHash("sha1")
    .update(Buffer.from(namespace.replaceAll("-", ""), "hex"))
    .update(name, "utf8")
    .digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
