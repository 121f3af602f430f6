import { useState } from "preact/hooks";
import { ApiError, TidemarkClient } from "../api/client";
import type { Session } from "../session";
import { errorText } from "../use-async";

/** Checks a pasted key against the API: a read key runs a tiny query, anything else lists projects. */
async function signIn(raw: string): Promise<Session> {
  const key = raw.trim();
  if (key === "") throw new Error("Paste a read key (rk_...) or the admin token.");
  if (key.startsWith("wk_")) {
    throw new Error("That is a write key: it can only send events. Paste the project's read key (rk_...).");
  }
  try {
    if (key.startsWith("rk_")) {
      const now = Date.now();
      await new TidemarkClient(key).query({
        kind: "top_events",
        from: new Date(now - 60_000).toISOString(),
        to: new Date(now).toISOString(),
        limit: 1,
      });
      return { kind: "read", key };
    }
    await new TidemarkClient(key).listProjects();
    return { kind: "admin", key };
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      throw new Error(
        key.startsWith("rk_")
          ? "This read key is not known to Tidemark. Check that it is complete, or whether the keys were rotated."
          : "This is neither a project's read key nor the admin token.",
      );
    }
    throw error;
  }
}

export function SignIn(props: { onSignIn(session: Session): void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      props.onSignIn(await signIn(key));
    } catch (failure) {
      setError(errorText(failure));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="sign-in" id="main">
      <h1>
        <span class="logo" aria-hidden="true">
          ≈
        </span>{" "}
        Tidemark
      </h1>
      <form onSubmit={submit} class="panel">
        <h2>Sign in</h2>
        <p class="hint">
          Paste a project's read key (<code>rk_…</code>) to see that project, or the admin token to pick any
          project and manage them. The key is kept for this browser tab only.
        </p>
        <label for="key">Read key or admin token</label>
        <input
          id="key"
          name="key"
          type="password"
          autocomplete="off"
          spellcheck={false}
          value={key}
          aria-invalid={error ? "true" : "false"}
          aria-describedby={error ? "key-error" : undefined}
          onInput={(e) => setKey(e.currentTarget.value)}
        />
        {error ? (
          <p class="error" id="key-error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
