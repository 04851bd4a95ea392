// Clicks per user per window of event time: examples/clicks/windows (Rust)
// in JavaScript, configured the same way per vertex:
//
//   config = { window = "session", gap-ms = 30000 }
//   config = { window = "tumbling", size-ms = 60000 }
//   config = { window = "sliding", size-ms = 60000, slide-ms = 15000 }
//   # and, for any of them: allowed-lateness-ms = 0 (default)
//
// Each window's result is one JSON line, keyed by user,
// `{"clicks":7,"end":…,"start":…,"window":"session"}`, with the window's
// last millisecond as its timestamp; a click too late for its windows
// goes, unchanged, to the named output `late`. The window state is the
// Rust one's ("clicks", the same bytes and timer tags), so a savepoint
// moves between the two.

import { COUNT, WindowState, describe, emitted, fail, onTimers, processBatch, session, sliding, tumbling } from 'wrun';

// The Rust operator's format (the SDK's default), so a savepoint moves between them.
const FORMAT = { name: 'wrun-guest', version: 1 };
let kind;
let windows;

export const handler = {
  describe() {
    return describe(FORMAT, ['late']);
  },
  open(ctx) {
    const config = JSON.parse(new TextDecoder().decode(ctx.config) || '{}');
    const ms = (name) => {
      const v = config[name];
      if (!Number.isInteger(v)) fail(`config: \`${name}\` (milliseconds) is required`);
      return v;
    };
    kind = config.window;
    let spec;
    if (kind === 'session') spec = session(ms('gap-ms'));
    else if (kind === 'tumbling') spec = tumbling(ms('size-ms'));
    else if (kind === 'sliding') spec = sliding(ms('size-ms'), ms('slide-ms'));
    else fail(`config: \`window\` must be "session", "tumbling" or "sliding", not ${JSON.stringify(kind)}`);
    windows = new WindowState('clicks', spec.allowedLateness(config['allowed-lateness-ms'] ?? 0), COUNT);
  },
  process(batch) {
    return processBatch(batch, [windows], (click, out) => {
      if (!windows.add(click)) out.emitTo('late', click.key, click.value);
    });
  },
  onTimers(fired) {
    return onTimers(fired, [windows], (timer, out) => {
      const r = windows.fire(timer);
      if (r) {
        const [w, clicks] = r;
        out.emit(timer.key, `{"clicks":${clicks},"end":${w.end},"start":${w.start},"window":"${kind}"}`);
      }
    });
  },
  close() {
    return emitted();
  },
  snapshot() {
    return undefined;
  },
  restore(_snapshot) {},
};
