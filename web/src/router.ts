import { useEffect, useState } from "preact/hooks";

/**
 * Hash routing: `#/insights/trends?event=Signup&interval=day`. The whole view state is in the
 * URL, so a view is shared by copying the link, and the server only ever serves `/`.
 */
export interface Route {
  path: string;
  params: URLSearchParams;
}

export function currentRoute(): Route {
  const hash = location.hash.replace(/^#/, "") || "/overview";
  const at = hash.indexOf("?");
  const path = at === -1 ? hash : hash.slice(0, at);
  return { path, params: new URLSearchParams(at === -1 ? "" : hash.slice(at + 1)) };
}

export function routeHref(path: string, params?: Record<string, string | undefined>): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params ?? {})) {
    if (value !== undefined && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

/** Moves to a view; `replace` rewrites the current history entry instead of adding one. */
export function navigate(path: string, params?: Record<string, string | undefined>, replace = false): void {
  const href = routeHref(path, params);
  if (href === location.hash) return;
  if (replace) {
    history.replaceState(null, "", href);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else {
    location.hash = href;
  }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const update = () => setRoute(currentRoute());
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return route;
}
