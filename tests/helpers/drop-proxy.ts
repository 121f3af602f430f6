import { connect, createServer, type Socket } from "node:net";

export interface DropProxy {
  /** The proxy's base URL: point a client here instead of at the target. */
  url: string;
  /**
   * The request line and headers of every request the proxy forwarded, in order; followed by
   * `\r\n\r\n[gzip]` when the body's first bytes are gzip's.
   */
  requests: string[];
  /** How many answers it cut off. */
  dropped: number;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of `target` that loses the answer to the first `drops` requests whose
 * request line matches `pattern`: the request reaches the server whole, the server answers (a
 * Tidemark ingest answer comes only once the events are durable), and then the client's
 * connection is reset before a byte of that answer reaches it. From the client's side the
 * request failed mid-way, so an SDK retries what was in fact stored: exactly the case idempotency
 * must absorb. Every other byte passes through unchanged.
 */
export async function startDropProxy(
  target: string,
  pattern: RegExp,
  drops = 1,
  /** Once a request line matches this, no answer is cut off any more. */
  until?: RegExp,
): Promise<DropProxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const proxy: DropProxy = { url: "", requests: [], dropped: 0, close: async () => undefined };
  let budget = drops;
  const server = createServer((client) => {
    const upstream = connect(Number(port), hostname);
    sockets.add(client);
    sockets.add(upstream);
    let doomed = false;
    /** The request whose body has not begun yet, when its head came alone. */
    let awaitingBody: number | undefined;
    const markGzip = (index: number, bytes: Buffer, at: number) => {
      if (bytes[at] === 0x1f && bytes[at + 1] === 0x8b) proxy.requests[index] += "\r\n\r\n[gzip]";
    };
    client.on("data", (chunk: Buffer) => {
      // A request starts a chunk here (one request at a time per connection, no pipelining):
      // its head is up to the blank line.
      const text = chunk.toString("latin1");
      const line = /^(GET|POST|PUT|PATCH|DELETE|OPTIONS|HEAD) (\S+) HTTP\/1\.[01]\r\n/.exec(text);
      if (line) {
        const end = text.indexOf("\r\n\r\n");
        proxy.requests.push(end < 0 ? text : text.slice(0, end));
        awaitingBody = undefined;
        if (end >= 0 && chunk.length > end + 4) markGzip(proxy.requests.length - 1, chunk, end + 4);
        else if (end >= 0) awaitingBody = proxy.requests.length - 1;
        if (until?.test(`${line[1]} ${line[2]}`)) budget = 0;
        if (budget > 0 && pattern.test(`${line[1]} ${line[2]}`)) {
          budget--;
          doomed = true;
        }
      } else if (awaitingBody !== undefined) {
        markGzip(awaitingBody, chunk, 0);
        awaitingBody = undefined;
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (doomed) {
        // The server has answered: the client never hears it.
        proxy.dropped++;
        client.resetAndDestroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", () => undefined);
    upstream.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("the proxy has no port");
  proxy.url = `http://127.0.0.1:${address.port}`;
  proxy.close = () =>
    new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return proxy;
}
