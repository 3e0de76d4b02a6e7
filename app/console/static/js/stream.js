// A workflow's live events: the SSE stream of GET /v1/workflows/{id}/events, read with
// fetch so that it resumes from the last event seen (Last-Event-ID) and re-syncs from
// a snapshot whenever the stream drops.

const MAX_DELAY_MS = 5000;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Follow the events after `lastEventId`.
 * - onEvent(event): each event, in order;
 * - onState(state): "connecting" | "live" | "reconnecting" | "ended";
 * - resync(): called after the stream ends or drops, before reconnecting; it reads the
 *   status document and answers whether nothing more can happen (then following ends).
 * Returns { restart(), stop() }.
 */
export function follow(workflowId, { lastEventId, onEvent, onState, resync }) {
  const url = `/v1/workflows/${encodeURIComponent(workflowId)}/events`;
  let last = lastEventId;
  let controller = null;
  let running = false;
  let generation = 0;

  async function run(mine) {
    let delay = 500;
    while (mine === generation) {
      onState("connecting");
      let endedCleanly = false;
      controller = new AbortController();
      try {
        const response = await fetch(url, {
          headers: { Accept: "text/event-stream", "Last-Event-ID": String(last) },
          credentials: "same-origin",
          signal: controller.signal,
        });
        if (response.status === 401) {
          location.assign(`/ui/login?next=${encodeURIComponent(location.pathname + location.search)}`);
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onState("live");
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
            if (!data.length) continue; // a keep-alive comment
            const event = JSON.parse(data.join("\n"));
            if (event.id <= last) continue;
            last = event.id;
            onEvent(event);
          }
        }
        endedCleanly = true;
      } catch (error) {
        if (mine !== generation) return;
      }
      if (mine !== generation) return;
      let finished = false;
      try {
        finished = await resync();
      } catch (error) {
        finished = false;
      }
      if (mine !== generation) return;
      if (finished && endedCleanly) {
        onState("ended");
        running = false;
        return;
      }
      onState("reconnecting");
      await sleep(delay);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  function start() {
    generation += 1;
    running = true;
    run(generation);
  }

  start();
  return {
    /** Follow again (after an action reopened a finished workflow). */
    restart() {
      if (controller) controller.abort();
      start();
    },
    get running() {
      return running;
    },
    get lastEventId() {
      return last;
    },
  };
}
