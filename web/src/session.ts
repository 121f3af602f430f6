import { TidemarkClient } from "./api/client";

/**
 * Who is signed in. Kept in sessionStorage only: closing the tab forgets the key, and no key ever
 * lands in localStorage, a cookie or the URL.
 */
export type Session = { kind: "read"; key: string } | { kind: "admin"; key: string; projectId?: string };

const STORAGE_KEY = "tidemark.session";

export function loadSession(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    if (!raw) return undefined;
    const parsed = JSON.parse(raw) as Session;
    return typeof parsed.key === "string" && (parsed.kind === "read" || parsed.kind === "admin")
      ? parsed
      : undefined;
  } catch {
    return undefined;
  }
}

export function saveSession(session: Session | undefined): void {
  if (session) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(STORAGE_KEY);
}

/** The client for the session's project, or undefined when an admin has picked none yet. */
export function projectClient(session: Session): TidemarkClient | undefined {
  if (session.kind === "read") return new TidemarkClient(session.key);
  return session.projectId ? new TidemarkClient(session.key, session.projectId) : undefined;
}
