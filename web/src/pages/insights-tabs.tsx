/** The three kinds of insight, as links (each keeps its own state in the URL). */
export function InsightsTabs(props: { current: "trends" | "funnel" | "retention" }) {
  const tabs = [
    ["trends", "Trends"],
    ["funnel", "Funnel"],
    ["retention", "Retention"],
  ] as const;
  return (
    <nav class="tabs" aria-label="Insights">
      {tabs.map(([id, label]) => (
        <a key={id} href={`#/insights/${id}`} aria-current={props.current === id ? "page" : undefined}>
          {label}
        </a>
      ))}
    </nav>
  );
}
