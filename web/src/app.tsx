import { useEffect, useState } from "preact/hooks";
import { TidemarkClient } from "./api/client";
import type { Project } from "./api/types";
import { Admin } from "./pages/admin";
import { Funnel } from "./pages/funnel";
import { LiveEvents } from "./pages/live-events";
import { Overview } from "./pages/overview";
import { Retention } from "./pages/retention";
import { SignIn } from "./pages/sign-in";
import { Trends } from "./pages/trends";
import { navigate, useRoute } from "./router";
import { loadSession, projectClient, type Session, saveSession } from "./session";
import { errorText } from "./use-async";

const TITLES: Record<string, string> = {
  "/overview": "Overview",
  "/insights/trends": "Trends",
  "/insights/funnel": "Funnel",
  "/insights/retention": "Retention",
  "/live": "Live events",
  "/admin": "Projects",
};

const NAV: [string, string][] = [
  ["/overview", "Overview"],
  ["/insights/trends", "Insights"],
  ["/live", "Live events"],
];

/** The admin token's project picker; its list reloads when projects change on the admin page. */
function ProjectPicker(props: {
  session: Session & { kind: "admin" };
  version: number;
  onPick(id?: string): void;
}) {
  const { session, version, onPick } = props;
  const [projects, setProjects] = useState<Project[]>([]);
  const [error, setError] = useState<string>();
  useEffect(() => {
    new TidemarkClient(session.key).listProjects().then(
      (answer) => {
        setProjects(answer.projects);
        setError(undefined);
        if (!session.projectId && answer.projects[0]) onPick(answer.projects[0].id);
      },
      (failure: unknown) => setError(errorText(failure)),
    );
  }, [session.key, version]);
  return (
    <div class="picker">
      <label for="project-picker">Project</label>
      <select
        id="project-picker"
        value={session.projectId ?? ""}
        onChange={(e) => onPick(e.currentTarget.value || undefined)}
      >
        {projects.length === 0 ? <option value="">No projects</option> : null}
        {projects.map((p) => (
          <option key={p.id} value={p.id}>
            {p.name}
          </option>
        ))}
      </select>
      {error ? (
        <span class="error" role="alert">
          {error}
        </span>
      ) : null}
    </div>
  );
}

export function App() {
  const [session, setSession] = useState<Session | undefined>(loadSession);
  const [projectsVersion, setProjectsVersion] = useState(0);
  const route = useRoute();
  const update = (next: Session | undefined) => {
    saveSession(next);
    setSession(next);
  };
  const pageTitle = session ? (TITLES[route.path] ?? "Overview") : "Sign in";
  useEffect(() => {
    document.title = `${pageTitle} · Tidemark`;
  }, [pageTitle]);

  if (!session) return <SignIn onSignIn={update} />;

  const client = projectClient(session);
  const projectKey = session.kind === "admin" ? (session.projectId ?? "") : "read";
  const nav = session.kind === "admin" ? [...NAV, ["/admin", "Projects"] as [string, string]] : NAV;
  const section = route.path.startsWith("/insights") ? "/insights/trends" : route.path;

  let page = null;
  if (route.path === "/admin" && session.kind === "admin") {
    page = (
      <Admin
        adminKey={session.key}
        selectedId={session.projectId}
        onSelect={(id) => update({ ...session, projectId: id })}
        onProjectsChanged={() => setProjectsVersion((v) => v + 1)}
      />
    );
  } else if (!client) {
    page = (
      <p class="panel empty">
        No project yet. <a href="#/admin">Create one</a> to start sending events.
      </p>
    );
  } else if (route.path === "/insights/trends") {
    page = <Trends client={client} route={route} projectKey={projectKey} />;
  } else if (route.path === "/insights/funnel") {
    page = <Funnel client={client} route={route} projectKey={projectKey} />;
  } else if (route.path === "/insights/retention") {
    page = <Retention client={client} route={route} projectKey={projectKey} />;
  } else if (route.path === "/live") {
    page = <LiveEvents client={client} route={route} projectKey={projectKey} />;
  } else {
    page = <Overview client={client} route={route} projectKey={projectKey} />;
  }

  return (
    <>
      <button type="button" class="skip-link" onClick={() => document.getElementById("main")?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <div class="brand">
          <span class="logo" aria-hidden="true">
            ≈
          </span>{" "}
          Tidemark
        </div>
        <nav aria-label="Main">
          {nav.map(([path, label]) => (
            <a key={path} href={`#${path}`} aria-current={section === path ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <div class="session">
          {session.kind === "admin" ? (
            <ProjectPicker
              session={session}
              version={projectsVersion}
              onPick={(id) => update({ ...session, projectId: id })}
            />
          ) : (
            <span class="muted">Read key</span>
          )}
          <button
            type="button"
            class="secondary"
            onClick={() => {
              update(undefined);
              navigate("/overview");
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <h1 class="visually-hidden">{pageTitle}</h1>
        {page}
      </main>
    </>
  );
}
