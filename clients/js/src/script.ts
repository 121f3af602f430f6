import { Tidemark } from "./browser.js";

/**
 * The script-tag build (dist/tidemark.js, served by Tidemark at /sdk/tidemark.js). It defines
 * `window.Tidemark`, the client class. With a `data-key` attribute it also makes
 * `window.tidemark`, a client sending to the server the script came from (or `data-host`), and
 * tracks a "Page View" unless `data-pageview="false"`.
 */
declare global {
  interface Window {
    Tidemark: typeof Tidemark;
    tidemark?: Tidemark;
  }
}

window.Tidemark = Tidemark;
const script = document.currentScript as HTMLScriptElement | null;
const apiKey = script?.dataset.key;
if (script && apiKey) {
  const client = new Tidemark({ apiKey, host: script.dataset.host || new URL(script.src).origin });
  window.tidemark = client;
  if (script.dataset.pageview !== "false") client.page();
}
