import type { ComponentChildren } from "preact";

/**
 * A wide table's horizontal scroller. It takes focus so a keyboard user can scroll it (WCAG
 * 2.1.1; axe's scrollable-region-focusable), and its label names it for screen readers.
 */
export function TableScroll(props: { label: string; children: ComponentChildren }) {
  return (
    // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable by keyboard.
    // biome-ignore lint/a11y/useSemanticElements: a section here would add a landmark per table.
    <div class="table-scroll" tabIndex={0} role="region" aria-label={props.label}>
      {props.children}
    </div>
  );
}
