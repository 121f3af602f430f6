import { connect } from "node:net";

export interface RawResponse {
  status: number;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: string;
  /** Everything the server wrote, as text. */
  text: string;
}

/**
 * Writes `data` as it is on a new TCP connection and reads the first HTTP answer, for requests
 * that fetch would refuse to send or would repair (bad request lines, broken framing).
 */
export function rawRequest(url: string, data: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(data));
    let text = "";
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    const head = Buffer.from(data).subarray(0, 5).toString("latin1") === "HEAD ";
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
      const parsed = parse(text, false, head);
      if (parsed) {
        clearTimeout(timer);
        socket.destroy();
        resolve(parsed);
      }
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      const parsed = parse(text, true, head);
      if (parsed) resolve(parsed);
      else reject(new Error(`no complete HTTP answer; got ${JSON.stringify(text.slice(0, 300))}`));
    });
  });
}

/** The first complete response in `text` (skipping 100 Continue), or undefined. */
function parse(text: string, closed: boolean, head: boolean): RawResponse | undefined {
  let rest = text;
  for (;;) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) return undefined;
    const [statusLine = "", ...lines] = rest.slice(0, end).split("\r\n");
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1]);
    if (!status) return undefined;
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const after = rest.slice(end + 4);
    if (status === 100) {
      rest = after;
      continue;
    }
    if (head) return { status, headers, body: "", text };
    const length = headers["content-length"];
    if (length !== undefined) {
      if (after.length < Number(length)) return undefined;
      return { status, headers, body: after.slice(0, Number(length)), text };
    }
    if (headers["transfer-encoding"] === "chunked") {
      if (!after.includes("0\r\n\r\n")) return closed ? { status, headers, body: after, text } : undefined;
      return { status, headers, body: dechunk(after), text };
    }
    return closed || status === 204 || status === 304 ? { status, headers, body: after, text } : undefined;
  }
}

function dechunk(data: string): string {
  let out = "";
  let rest = data;
  for (;;) {
    const line = rest.indexOf("\r\n");
    const size = Number.parseInt(rest.slice(0, line), 16);
    if (!size) return out;
    out += rest.slice(line + 2, line + 2 + size);
    rest = rest.slice(line + 2 + size + 2);
  }
}
