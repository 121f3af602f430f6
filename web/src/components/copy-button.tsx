import { useState } from "preact/hooks";

/** Copies `text` to the clipboard and says so; falls back to selecting a hidden field. */
export function CopyButton(props: { text: string; label: string }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(props.text);
    } catch {
      const area = document.createElement("textarea");
      area.value = props.text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    setDone(true);
    setTimeout(() => setDone(false), 1500);
  };
  return (
    <button type="button" class="secondary" onClick={copy} aria-label={props.label}>
      {done ? "Copied" : "Copy"}
    </button>
  );
}
