import type { ComponentChildren } from "preact";

/**
 * A titled section whose content comes from a query: a loading note once the query has run for
 * over 200 ms, and the query's error right here, next to what failed.
 */
export function Panel(props: {
  title: string;
  id?: string;
  loading?: boolean;
  slow?: boolean;
  error?: string | undefined;
  actions?: ComponentChildren;
  children?: ComponentChildren;
  class?: string;
}) {
  const headingId = `${props.id ?? props.title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}-title`;
  return (
    <section
      class={`panel ${props.class ?? ""}`}
      aria-labelledby={headingId}
      aria-busy={props.loading ? "true" : "false"}
      data-testid={props.id}
    >
      <header class="panel-head">
        <h2 id={headingId}>{props.title}</h2>
        {props.actions}
      </header>
      {props.slow ? (
        <p class="loading" role="status">
          <span class="spinner" aria-hidden="true" /> Loading…
        </p>
      ) : null}
      {props.error ? (
        <p class="error" role="alert">
          {props.error}
        </p>
      ) : null}
      <div class={props.slow ? "panel-body stale" : "panel-body"}>{props.children}</div>
    </section>
  );
}
