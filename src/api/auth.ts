import type { FastifyRequest } from "fastify";
import { AppError } from "../core/errors.js";
import { constantTimeEqual, hashKey, keyKind } from "../core/keys.js";
import type { KeyMatch, Project, ProjectStore } from "../pipeline/project-store.js";

/** The bearer token of a request: `Authorization: Bearer x` or `X-API-Key: x`. */
export function requestKey(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (header) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match) return match[1];
  }
  const apiKey = request.headers["x-api-key"];
  return typeof apiKey === "string" && apiKey.length > 0 ? apiKey : undefined;
}

/**
 * The user name of `Authorization: Basic base64(user:password)`, as Segment's libraries send
 * their write key (with an empty password); undefined for any other scheme or a malformed value.
 */
export function basicAuthUser(request: FastifyRequest): string | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(request.headers.authorization ?? "");
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  const user = colon < 0 ? decoded : decoded.slice(0, colon);
  return user.length > 0 ? user : undefined;
}

interface CacheEntry {
  match: KeyMatch | undefined;
  expiresAt: number;
}

const MISSING_KEY = "Missing API key: Authorization: Bearer <key> or X-API-Key";

/** The project of a key's match, or the 401/403 it calls for. */
function projectOf(match: KeyMatch | undefined, kind: "write" | "read"): Project {
  if (!match) throw new AppError("unauthorized", { message: "Unknown API key" });
  if (match.kind !== kind) {
    throw new AppError("forbidden", {
      message:
        kind === "write"
          ? "A read key cannot send events; use the write key (wk_...)"
          : "A write key cannot query; use the read key (rk_...)",
    });
  }
  return match.project;
}

/**
 * Resolves keys to projects, with a short cache so ingest does not read the store per request.
 * A rotated or deleted key stops working at once in this process and within `ttlMs` in others.
 */
export class KeyResolver {
  private readonly cache = new Map<string, CacheEntry>();
  /** Store reads in flight by key hash: concurrent requests with an expired key share one. */
  private readonly loading = new Map<string, Promise<KeyMatch | undefined>>();
  /** Bumped by forgetProject, so a read that began before a rotation does not cache what it saw. */
  private generation = 0;

  constructor(
    private readonly projects: ProjectStore,
    private readonly secretToken: string,
    private readonly ttlMs: number,
  ) {}

  isAdmin(request: FastifyRequest): boolean {
    const key = requestKey(request);
    return key !== undefined && this.secretToken !== "" && constantTimeEqual(key, this.secretToken);
  }

  requireAdmin(request: FastifyRequest): void {
    if (!requestKey(request))
      throw new AppError("unauthorized", {
        message: "Missing admin token: Authorization: Bearer <SECRET_TOKEN>",
      });
    if (!this.isAdmin(request)) throw new AppError("unauthorized", { message: "Unknown admin token" });
  }

  /** The project of a key of the given kind; 401 for unknown keys, 403 for the wrong kind. */
  async require(request: FastifyRequest, kind: "write" | "read"): Promise<Project> {
    return this.resolveKey(requestKey(request), kind, MISSING_KEY);
  }

  /**
   * The project of a key found elsewhere than the usual headers (a Basic-auth user name, a field
   * of the body); `missing` is the 401's message when there is none.
   */
  async requireKey(key: string | undefined, kind: "write" | "read", missing: string): Promise<Project> {
    return this.resolveKey(key, kind, missing);
  }

  /** `require`, answered at once when it can be: see resolveKey. */
  resolve(request: FastifyRequest, kind: "write" | "read"): Project | Promise<Project> {
    return this.resolveKey(requestKey(request), kind, MISSING_KEY);
  }

  /**
   * `requireKey`, answered at once (no promise) when the key's lookup is cached, as it is for
   * every key in use: the ingest hook then runs synchronously (src/api/ingest/ingest-gate.ts).
   * Throws the 401 or 403 at once when it can tell.
   */
  resolveKey(key: string | undefined, kind: "write" | "read", missing: string): Project | Promise<Project> {
    if (!key) throw new AppError("unauthorized", { message: missing });
    if (keyKind(key) === undefined) throw new AppError("unauthorized", { message: "Unknown API key" });
    const hash = hashKey(key);
    const cached = this.cache.get(hash);
    if (cached && cached.expiresAt > Date.now()) return projectOf(cached.match, kind);
    return this.load(hash).then((match) => projectOf(match, kind));
  }

  private load(hash: string): Promise<KeyMatch | undefined> {
    const inFlight = this.loading.get(hash);
    if (inFlight) return inFlight;
    const generation = this.generation;
    const started = Date.now();
    const settled = () => {
      if (this.loading.get(hash) === loaded) this.loading.delete(hash);
    };
    const loaded: Promise<KeyMatch | undefined> = this.projects.findByKeyHash(hash).then(
      (match) => {
        settled();
        if (this.ttlMs > 0 && generation === this.generation) {
          if (this.cache.size > 100_000) this.cache.clear();
          // Unknown keys are cached briefly too, so a flood of bad keys does not reach the store.
          const ttl = match ? this.ttlMs : Math.min(this.ttlMs, 1000);
          this.cache.set(hash, { match, expiresAt: started + ttl });
        }
        return match;
      },
      (error: unknown) => {
        settled();
        throw error;
      },
    );
    this.loading.set(hash, loaded);
    return loaded;
  }

  /** Drops cached keys of a project (after a rotation, a plan change or a delete). */
  forgetProject(projectId: string): void {
    // Reads in flight may have seen the project as it was: later requests read again.
    this.generation++;
    this.loading.clear();
    for (const [hash, entry] of this.cache)
      if (entry.match?.project.id === projectId) this.cache.delete(hash);
  }
}
