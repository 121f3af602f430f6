import { useEffect, useState } from "preact/hooks";
import type { TidemarkClient } from "../api/client";
import type { StoredEvent } from "../api/types";
import { Panel } from "../components/panel";
import { navigate, type Route } from "../router";
import { errorText } from "../use-async";

const REFRESH_MS = 5000;
const PAGE = 50;

function EventRow(props: { event: StoredEvent }) {
  const { event } = props;
  const [open, setOpen] = useState(false);
  const detailsId = `props-${event.uuid}`;
  return (
    <li class="event-row" data-uuid={event.uuid}>
      <button
        type="button"
        class="event-toggle"
        aria-expanded={open ? "true" : "false"}
        aria-controls={detailsId}
        onClick={() => setOpen(!open)}
      >
        <span class="event-name">{event.event}</span>
        <span class="event-user">{event.distinct_id}</span>
        <time dateTime={event.timestamp}>{event.timestamp.replace("T", " ").slice(0, 19)}</time>
      </button>
      {open ? (
        <div id={detailsId} class="event-details">
          <dl>
            <dt>uuid</dt>
            <dd>{event.uuid}</dd>
            <dt>received</dt>
            <dd>{event.received_at}</dd>
          </dl>
          <pre>{JSON.stringify(event.properties, null, 2)}</pre>
        </div>
      ) : null}
    </li>
  );
}

/** The newest events, refreshed every few seconds, filtered by event name and user. */
export function LiveEvents(props: { client: TidemarkClient; route: Route; projectKey: string }) {
  const { client, route, projectKey } = props;
  const eventFilter = route.params.get("event") ?? "";
  const userFilter = route.params.get("user") ?? "";
  const [draft, setDraft] = useState({ event: eventFilter, user: userFilter });
  const [events, setEvents] = useState<StoredEvent[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string>();
  const [loading, setLoading] = useState(true);
  const [slow, setSlow] = useState(false);
  const [paused, setPaused] = useState(false);
  const [updated, setUpdated] = useState<Date>();

  const spec = {
    kind: "events" as const,
    limit: PAGE,
    ...(eventFilter ? { event: eventFilter } : {}),
    ...(userFilter ? { distinct_id: userFilter } : {}),
  };

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setEvents([]);
    setLoading(true);
    const slowTimer = setTimeout(() => setSlow(true), 200);
    const refresh = async () => {
      try {
        const answer = await client.query(spec);
        if (stopped) return;
        // Keep the older pages the person loaded; replace the newest page.
        setEvents((previous) => {
          const fresh = new Set(answer.events.map((e) => e.uuid));
          const older = previous.slice(PAGE).filter((e) => !fresh.has(e.uuid));
          return [...answer.events, ...older];
        });
        setCursor((previous) => previous ?? answer.next_cursor);
        setError(undefined);
        setUpdated(new Date());
      } catch (failure) {
        if (!stopped) setError(errorText(failure));
      } finally {
        clearTimeout(slowTimer);
        if (!stopped) {
          setLoading(false);
          setSlow(false);
          if (!paused) timer = setTimeout(refresh, REFRESH_MS);
        }
      }
    };
    setCursor(null);
    void refresh();
    return () => {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(slowTimer);
    };
  }, [projectKey, eventFilter, userFilter, paused]);

  const loadMore = async () => {
    if (!cursor) return;
    try {
      const answer = await client.query({ ...spec, cursor });
      setEvents((previous) => [...previous, ...answer.events]);
      setCursor(answer.next_cursor);
    } catch (failure) {
      setError(errorText(failure));
    }
  };

  return (
    <>
      <form
        class="panel query-form"
        aria-label="Filter live events"
        onSubmit={(e) => {
          e.preventDefault();
          navigate("/live", { event: draft.event.trim(), user: draft.user.trim() });
        }}
      >
        <div class="form-grid">
          <label>
            Event
            <input
              value={draft.event}
              onInput={(e) => setDraft({ ...draft, event: e.currentTarget.value })}
            />
          </label>
          <label>
            User (distinct_id)
            <input value={draft.user} onInput={(e) => setDraft({ ...draft, user: e.currentTarget.value })} />
          </label>
        </div>
        <div class="form-actions">
          <button type="submit">Filter</button>
          <button
            type="button"
            class="secondary"
            onClick={() => setPaused(!paused)}
            aria-pressed={paused ? "true" : "false"}
          >
            {paused ? "Resume auto refresh" : "Pause auto refresh"}
          </button>
        </div>
      </form>
      <Panel
        title="Live events"
        id="live-events"
        loading={loading}
        slow={slow}
        error={error}
        actions={
          <span class="muted" aria-live="polite">
            {paused ? "Paused" : updated ? `Updated ${updated.toISOString().slice(11, 19)} UTC` : ""}
          </span>
        }
      >
        {!loading && events.length === 0 ? <p class="empty">No events yet.</p> : null}
        <ul class="event-list" data-testid="event-list">
          {events.map((event) => (
            <EventRow event={event} key={event.uuid} />
          ))}
        </ul>
        {cursor ? (
          <button type="button" class="secondary" onClick={loadMore}>
            Load older events
          </button>
        ) : null}
      </Panel>
    </>
  );
}
