import type {
  EventsAnswer,
  EventsSpec,
  FunnelAnswer,
  FunnelSpec,
  Ledger,
  Plan,
  Project,
  ProjectWithKeys,
  RetentionAnswer,
  RetentionSpec,
  TopEventsAnswer,
  TopEventsSpec,
  TopValuesAnswer,
  TopValuesSpec,
  TrendsAnswer,
  TrendsSpec,
} from "./types";

/** An error answer of the API (`{"error": {"code", "message", "details"}}`), or a network failure. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: { field?: string; message?: string }[] = [],
  ) {
    super(message);
  }

  /** The message with the fields the API named, for showing beside what failed. */
  describe(): string {
    const fields = this.details
      .map((d) => [d.field, d.message].filter(Boolean).join(" "))
      .filter((s) => s !== "");
    return fields.length > 0 ? `${this.message} (${fields.join("; ")})` : this.message;
  }
}

interface AnswerOf {
  trends: TrendsAnswer;
  funnel: FunnelAnswer;
  retention: RetentionAnswer;
  events: EventsAnswer;
  top_events: TopEventsAnswer;
  top_values: TopValuesAnswer;
}
export type QuerySpec = TrendsSpec | FunnelSpec | RetentionSpec | EventsSpec | TopEventsSpec | TopValuesSpec;

async function call<T>(method: string, path: string, key: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? null : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "Tidemark did not answer; is the server running?");
  }
  if (response.status === 204) return undefined as T;
  let parsed: unknown;
  try {
    parsed = await response.json();
  } catch {
    throw new ApiError(response.status, "bad_answer", `Unexpected answer (HTTP ${response.status})`);
  }
  if (!response.ok) {
    const error = (parsed as { error?: { code?: string; message?: string; details?: [] } }).error;
    throw new ApiError(
      response.status,
      error?.code ?? "error",
      error?.message ?? `HTTP ${response.status}`,
      error?.details ?? [],
    );
  }
  return parsed as T;
}

/**
 * Tidemark's public API, same origin, with one credential: a project's read key, or the admin
 * token (which names the project of a query with ?project_id=).
 */
export class TidemarkClient {
  constructor(
    private readonly key: string,
    private readonly projectId?: string,
  ) {}

  query<S extends QuerySpec>(spec: S): Promise<AnswerOf[S["kind"]]> {
    const suffix = this.projectId ? `?project_id=${encodeURIComponent(this.projectId)}` : "";
    return call("POST", `/api/v1/query${suffix}`, this.key, spec);
  }

  listProjects(): Promise<{ projects: Project[] }> {
    return call("GET", "/api/v1/project", this.key);
  }

  createProject(name: string, plan: Plan): Promise<ProjectWithKeys> {
    return call("POST", "/api/v1/project", this.key, { name, plan });
  }

  changePlan(id: string, plan: Plan): Promise<Project> {
    return call("PATCH", `/api/v1/project/${encodeURIComponent(id)}`, this.key, { plan });
  }

  rotateKeys(id: string): Promise<ProjectWithKeys> {
    return call("POST", `/api/v1/project/${encodeURIComponent(id)}/rotate-keys`, this.key);
  }

  deleteProject(id: string): Promise<void> {
    return call("DELETE", `/api/v1/project/${encodeURIComponent(id)}`, this.key);
  }

  ledger(id: string): Promise<Ledger> {
    return call("GET", `/api/v1/project/${encodeURIComponent(id)}/stats`, this.key);
  }
}
