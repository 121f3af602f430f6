import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface ChartSeries {
  label: string;
  values: number[];
  dashed?: boolean;
}

/** Colours that keep 3:1 contrast on white (WCAG non-text contrast). */
export const SERIES_COLOURS = ["#1d4ed8", "#b45309", "#047857", "#9d174d", "#6d28d9", "#0e7490", "#4d7c0f"];

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function tickLabel(seconds: number, hourly: boolean): string {
  const date = new Date(seconds * 1000);
  const day = `${MONTHS[date.getUTCMonth()]} ${date.getUTCDate()}`;
  if (!hourly) return day;
  const hour = `${String(date.getUTCHours()).padStart(2, "0")}:00`;
  return date.getUTCHours() === 0 ? `${day}\n${hour}` : hour;
}

/**
 * A uPlot line chart over shared x values (epoch seconds). The canvas is an image for assistive
 * technology: `summary` describes it, and every view shows the same numbers in a table.
 */
export function LineChart(props: {
  x: number[];
  series: ChartSeries[];
  summary: string;
  hourly?: boolean;
  height?: number;
}) {
  const host = useRef<HTMLDivElement>(null);
  const { x, series, summary, hourly, height = 260 } = props;
  useEffect(() => {
    const element = host.current;
    if (!element) return;
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 280),
      height,
      legend: { show: true },
      // Tick positions at UTC midnights and hours, like the buckets.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true },
        y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] },
      },
      axes: [
        {
          stroke: "#374151",
          grid: { stroke: "#e5e7eb" },
          space: hourly ? 50 : 60,
          // Buckets are UTC hours or days: label them so, never with local 12am/12pm ticks.
          values: (_u, ticks) => ticks.map((t) => tickLabel(t, hourly === true)),
        },
        {
          stroke: "#374151",
          grid: { stroke: "#e5e7eb" },
          size: 56,
          // Counts are whole numbers.
          incrs: [
            1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8,
          ],
          values: (_u, ticks) => ticks.map((t) => t.toLocaleString("en-US")),
        },
      ],
      series: [
        {
          label: "Time",
          value: (_u, v) =>
            v == null
              ? ""
              : new Date(v * 1000)
                  .toISOString()
                  .slice(0, hourly ? 16 : 10)
                  .replace("T", " "),
        },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: SERIES_COLOURS[i % SERIES_COLOURS.length],
          width: 2,
          ...(s.dashed ? { dash: [6, 4] } : {}),
          points: { show: x.length <= 40 },
        })),
      ],
    };
    const plot = new uPlot(options, [x, ...series.map((s) => s.values)] as uPlot.AlignedData, element);
    const resize = new ResizeObserver(() =>
      plot.setSize({ width: Math.max(element.clientWidth, 280), height }),
    );
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [x, series, hourly, height]);
  return <div class="chart" ref={host} role="img" aria-label={summary} />;
}
