import { useEffect, useRef, useState } from "preact/hooks";
import { TidemarkClient } from "../api/client";
import { type Ledger, PLANS, type Plan, type Project, type ProjectWithKeys } from "../api/types";
import { CopyButton } from "../components/copy-button";
import { Panel } from "../components/panel";
import { curlSnippet, scriptSnippet, TRACK_EXAMPLE } from "../snippets";
import { formatNumber } from "../time-range";
import { errorText, useAsync } from "../use-async";

const LEDGER_REFRESH_MS = 3000;

/** Keys are shown once, right after they are made; nothing keeps them afterwards. */
function NewKeys(props: { project: ProjectWithKeys }) {
  const { project } = props;
  return (
    <div class="new-keys" role="status">
      <p>
        <strong>Keys of {project.name}</strong>: copy them now, Tidemark shows them only once.
      </p>
      <dl>
        <dt>Write key</dt>
        <dd>
          <code data-testid="new-write-key">{project.api_key}</code>
          <CopyButton text={project.api_key} label="Copy the write key" />
        </dd>
        <dt>Read key</dt>
        <dd>
          <code data-testid="new-read-key">{project.read_key}</code>
          <CopyButton text={project.read_key} label="Copy the read key" />
        </dd>
      </dl>
    </div>
  );
}

function LedgerView(props: { client: TidemarkClient; project: Project }) {
  const { client, project } = props;
  const [ledger, setLedger] = useState<Ledger>();
  const [error, setError] = useState<string>();
  const [rate, setRate] = useState<number>();
  const last = useRef<{ at: number; received: number } | undefined>(undefined);
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    last.current = undefined;
    setLedger(undefined);
    setRate(undefined);
    const refresh = async () => {
      try {
        const answer = await client.ledger(project.id);
        if (stopped) return;
        const now = performance.now();
        if (last.current) {
          const seconds = (now - last.current.at) / 1000;
          setRate(Math.max(0, (answer.received - last.current.received) / seconds));
        }
        last.current = { at: now, received: answer.received };
        setLedger(answer);
        setError(undefined);
      } catch (failure) {
        if (!stopped) setError(errorText(failure));
      }
      if (!stopped) timer = setTimeout(refresh, LEDGER_REFRESH_MS);
    };
    void refresh();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [client, project.id]);
  const rejected = Object.entries(ledger?.rejected ?? {});
  const rows: [string, string, number | undefined][] = [
    ["received", "Received", ledger?.received],
    ["accepted", "Accepted", ledger?.accepted],
    ["duplicate", "Duplicate", ledger?.duplicate],
    ["rate_limited", "Rate limited", ledger?.rate_limited],
    ["stored", "Stored", ledger?.stored],
  ];
  return (
    <Panel title="Loss ledger" id="ledger" loading={!ledger && !error} error={error}>
      <table class="data ledger" data-testid="ledger-table">
        <tbody>
          {rows.map(([key, label, value]) => (
            <tr key={key} data-field={key}>
              <th scope="row">{label}</th>
              <td>{value === undefined ? "–" : formatNumber(value)}</td>
            </tr>
          ))}
          {rejected.map(([reason, count]) => (
            <tr key={reason} data-field={`rejected.${reason}`}>
              <th scope="row">Rejected: {reason}</th>
              <td>{formatNumber(count)}</td>
            </tr>
          ))}
          {ledger && rejected.length === 0 ? (
            <tr data-field="rejected">
              <th scope="row">Rejected</th>
              <td>0</td>
            </tr>
          ) : null}
          <tr data-field="rate">
            <th scope="row">Ingest rate</th>
            <td>{rate === undefined ? "measuring…" : `${rate.toFixed(1)} events/s`}</td>
          </tr>
        </tbody>
      </table>
      <p class="hint">
        received = accepted + duplicate + rate limited + rejected, once requests in flight finish. The rate is
        measured between refreshes every {LEDGER_REFRESH_MS / 1000} s.
      </p>
    </Panel>
  );
}

function ProjectDetail(props: {
  client: TidemarkClient;
  project: Project;
  onChanged(): void;
  onDeleted(): void;
  onKeys(project: ProjectWithKeys): void;
  writeKey?: string | undefined;
}) {
  const { client, project, onChanged, onDeleted, onKeys, writeKey } = props;
  const [plan, setPlan] = useState<Plan>(project.plan);
  const [planError, setPlanError] = useState<string>();
  const [rotateError, setRotateError] = useState<string>();
  const [confirming, setConfirming] = useState(false);
  const [confirmName, setConfirmName] = useState("");
  const [deleteError, setDeleteError] = useState<string>();
  useEffect(() => {
    setPlan(project.plan);
    setConfirming(false);
    setConfirmName("");
  }, [project.id, project.plan]);
  return (
    <>
      <Panel title={`Project ${project.name}`} id="project-detail">
        <dl class="facts">
          <dt>Id</dt>
          <dd>
            <code>{project.id}</code>
          </dd>
          <dt>Rate limit</dt>
          <dd>{formatNumber(project.rate_limit_rpm)} requests/minute</dd>
          <dt>Created</dt>
          <dd>{project.created_at}</dd>
        </dl>
        <form
          class="inline-form"
          onSubmit={async (e) => {
            e.preventDefault();
            setPlanError(undefined);
            try {
              await client.changePlan(project.id, plan);
              onChanged();
            } catch (failure) {
              setPlanError(errorText(failure));
            }
          }}
        >
          <label for="plan">Plan</label>
          <select id="plan" value={plan} onChange={(e) => setPlan(e.currentTarget.value as Plan)}>
            {PLANS.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
          <button type="submit" class="secondary" disabled={plan === project.plan}>
            Change plan
          </button>
        </form>
        {planError ? (
          <p class="error" role="alert">
            {planError}
          </p>
        ) : null}
        <div class="danger-zone">
          <button
            type="button"
            class="secondary"
            onClick={async () => {
              setRotateError(undefined);
              try {
                onKeys(await client.rotateKeys(project.id));
              } catch (failure) {
                setRotateError(errorText(failure));
              }
            }}
          >
            Rotate keys
          </button>
          {rotateError ? (
            <p class="error" role="alert">
              {rotateError}
            </p>
          ) : null}
          {confirming ? (
            <form
              class="confirm"
              onSubmit={async (e) => {
                e.preventDefault();
                setDeleteError(undefined);
                try {
                  await client.deleteProject(project.id);
                  onDeleted();
                } catch (failure) {
                  setDeleteError(errorText(failure));
                }
              }}
            >
              <label for="confirm-name">
                Deleting removes the project, its keys and all its events. Type <code>{project.name}</code> to
                confirm.
              </label>
              <input
                id="confirm-name"
                value={confirmName}
                autocomplete="off"
                onInput={(e) => setConfirmName(e.currentTarget.value)}
              />
              <div class="form-actions">
                <button type="submit" class="danger" disabled={confirmName !== project.name}>
                  Delete for good
                </button>
                <button type="button" class="secondary" onClick={() => setConfirming(false)}>
                  Cancel
                </button>
              </div>
              {deleteError ? (
                <p class="error" role="alert">
                  {deleteError}
                </p>
              ) : null}
            </form>
          ) : (
            <button type="button" class="danger" onClick={() => setConfirming(true)}>
              Delete project…
            </button>
          )}
        </div>
      </Panel>
      <LedgerView client={client} project={project} />
      <Panel title="Send events" id="snippet">
        <p class="hint">
          {writeKey
            ? "With the write key just made."
            : "Put the project's write key (shown when it was created or its keys rotated) in place of $WRITE_KEY."}
        </p>
        <h3 class="snippet-title">From a web page</h3>
        <p class="hint">
          One line in the page's <code>&lt;head&gt;</code> loads Tidemark's browser client from this server
          and tracks a "Page View" with its <code>path</code>; it batches, compresses, retries, and sends what
          is left when the page closes.
        </p>
        <pre class="snippet" data-testid="script-snippet">
          {scriptSnippet(location.origin, writeKey ?? "$WRITE_KEY")}
        </pre>
        <CopyButton
          text={scriptSnippet(location.origin, writeKey ?? "$WRITE_KEY")}
          label="Copy the script tag"
        />
        <p class="hint">
          Then, anywhere on the page: <code>{TRACK_EXAMPLE}</code>; at sign-in,{" "}
          <code>tidemark.identify(userId, traits)</code>. For Node.js, the same client is in{" "}
          <code>clients/js</code> (see the README).
        </p>
        <h3 class="snippet-title">From anywhere, with curl</h3>
        <pre class="snippet" data-testid="curl-snippet">
          {curlSnippet(location.origin, writeKey ?? "$WRITE_KEY")}
        </pre>
        <CopyButton
          text={curlSnippet(location.origin, writeKey ?? "$WRITE_KEY")}
          label="Copy the curl command"
        />
      </Panel>
    </>
  );
}

/** Project administration with the admin token: create, plan, rotate keys, delete, the ledger. */
export function Admin(props: {
  adminKey: string;
  selectedId?: string | undefined;
  onSelect(id: string | undefined): void;
  onProjectsChanged(): void;
}) {
  const { adminKey, selectedId, onSelect, onProjectsChanged } = props;
  const client = new TidemarkClient(adminKey);
  const projects = useAsync(() => client.listProjects(), adminKey);
  const [name, setName] = useState("");
  const [plan, setPlan] = useState<Plan>("FREE");
  const [createError, setCreateError] = useState<string>();
  const [keys, setKeys] = useState<ProjectWithKeys>();
  const reload = () => {
    projects.reload();
    onProjectsChanged();
  };
  const selected = projects.data?.projects.find((p) => p.id === selectedId);
  return (
    <>
      <div class="grid-2">
        <Panel
          title="Projects"
          id="projects"
          loading={projects.loading}
          slow={projects.slow}
          error={projects.error}
        >
          {projects.data && projects.data.projects.length === 0 ? (
            <p class="empty">No projects yet: create the first one.</p>
          ) : null}
          <ul class="project-list">
            {projects.data?.projects.map((p) => (
              <li key={p.id}>
                <button
                  type="button"
                  class="link"
                  aria-current={p.id === selectedId ? "true" : undefined}
                  onClick={() => onSelect(p.id)}
                >
                  {p.name}
                </button>
                <span class="badge">{p.plan}</span>
              </li>
            ))}
          </ul>
        </Panel>
        <Panel title="Create a project" id="create-project">
          <form
            class="stack"
            onSubmit={async (e) => {
              e.preventDefault();
              setCreateError(undefined);
              try {
                const created = await client.createProject(name.trim(), plan);
                setKeys(created);
                setName("");
                reload();
                onSelect(created.id);
              } catch (failure) {
                setCreateError(errorText(failure));
              }
            }}
          >
            <label for="new-name">Name</label>
            <input id="new-name" value={name} required onInput={(e) => setName(e.currentTarget.value)} />
            <label for="new-plan">Plan</label>
            <select id="new-plan" value={plan} onChange={(e) => setPlan(e.currentTarget.value as Plan)}>
              {PLANS.map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
            <button type="submit">Create</button>
            {createError ? (
              <p class="error" role="alert">
                {createError}
              </p>
            ) : null}
          </form>
        </Panel>
      </div>
      {keys ? <NewKeys project={keys} /> : null}
      {selected ? (
        <ProjectDetail
          key={selected.id}
          client={client}
          project={selected}
          writeKey={keys && keys.id === selected.id ? keys.api_key : undefined}
          onChanged={reload}
          onKeys={setKeys}
          onDeleted={() => {
            setKeys(undefined);
            onSelect(undefined);
            reload();
          }}
        />
      ) : projects.data && projects.data.projects.length > 0 ? (
        <p class="hint">Pick a project to manage it and see its ledger.</p>
      ) : null}
    </>
  );
}
