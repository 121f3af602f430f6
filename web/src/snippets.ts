/**
 * What the dashboard shows to copy for sending events. Plain functions of the server's origin and
 * the write key, so the browser client's end-to-end test (tests/e2e/client.e2e.test.ts) puts the
 * very same line in its page.
 */

/** The one line that puts Tidemark's browser client (clients/js, served at /sdk/tidemark.js) on a page. */
export function scriptSnippet(origin: string, writeKey: string): string {
  return `<script src="${origin}/sdk/tidemark.js" data-key="${writeKey}"></script>`;
}

/** What a page then calls, anywhere after that line. */
export const TRACK_EXAMPLE = `tidemark.track("Signup", { plan: "pro" })`;

export function curlSnippet(origin: string, writeKey: string): string {
  return [
    `curl -X POST ${origin}/api/v1/event \\`,
    `  -H "Authorization: Bearer ${writeKey}" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d '{"event": "Page View", "distinct_id": "user_1", "properties": {"path": "/pricing"}}'`,
  ].join("\n");
}
