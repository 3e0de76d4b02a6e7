// The drawn DAG: zoom, fit, edge highlighting and keyboard moves between nodes.

export function setupGraph({ viewport, canvas, onZoom }) {
  const width = parseFloat(canvas.style.width);
  const height = parseFloat(canvas.style.height);
  let zoom = 1;

  function setZoom(value) {
    zoom = Math.min(2, Math.max(0.15, value));
    canvas.style.zoom = String(zoom);
    onZoom(zoom);
  }

  function fitZoom() {
    const w = viewport.clientWidth - 24;
    const h = viewport.clientHeight - 24;
    return Math.min(1, w / width, h / height);
  }

  const fit = fitZoom();
  setZoom(fit >= 0.7 ? fit : Math.max(0.7, fit));

  document.getElementById("zoom-in").addEventListener("click", () => setZoom(zoom * 1.25));
  document.getElementById("zoom-out").addEventListener("click", () => setZoom(zoom / 1.25));
  document.getElementById("zoom-fit").addEventListener("click", () => setZoom(fitZoom()));
  viewport.addEventListener("wheel", (event) => {
    if (!event.ctrlKey) return;
    event.preventDefault();
    setZoom(zoom * (event.deltaY < 0 ? 1.1 : 1 / 1.1));
  }, { passive: false });

  // Neighbours of each drawn node, from the edges and the column order.
  const nodes = [...canvas.querySelectorAll("[data-node]")];
  const byId = new Map(nodes.map((n) => [n.dataset.node, n]));
  const left = new Map();
  const right = new Map();
  const paths = new Map();
  for (const path of canvas.querySelectorAll("svg.edges path")) {
    const from = path.dataset.from;
    const to = path.dataset.to;
    if (!right.has(from)) right.set(from, []);
    if (!left.has(to)) left.set(to, []);
    right.get(from).push(to);
    left.get(to).push(from);
    for (const id of [from, to]) {
      if (!paths.has(id)) paths.set(id, []);
      paths.get(id).push(path);
    }
  }
  const column = new Map();
  for (const node of nodes) {
    const x = node.style.left;
    if (!column.has(x)) column.set(x, []);
    column.get(x).push(node);
  }

  function nearest(from, candidates) {
    const y = parseFloat(from.style.top);
    let best = null;
    for (const id of candidates || []) {
      const node = byId.get(id);
      if (node && (!best || Math.abs(parseFloat(node.style.top) - y) < Math.abs(parseFloat(best.style.top) - y))) best = node;
    }
    return best;
  }

  canvas.addEventListener("keydown", (event) => {
    const node = event.target.closest("[data-node]");
    if (!node || event.altKey || event.ctrlKey || event.metaKey) return;
    let target = null;
    const id = node.dataset.node;
    if (event.key === "ArrowLeft") target = nearest(node, left.get(id));
    else if (event.key === "ArrowRight") target = nearest(node, right.get(id));
    else if (event.key === "ArrowUp" || event.key === "ArrowDown") {
      const list = column.get(node.style.left);
      const at = list.indexOf(node);
      target = list[at + (event.key === "ArrowUp" ? -1 : 1)] || null;
    } else if (event.key === " " && node.tagName === "A") {
      node.click();
      event.preventDefault();
      return;
    } else return;
    event.preventDefault();
    if (target) {
      target.focus({ preventScroll: true });
      target.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
  });

  let hot = [];
  function highlight(id) {
    for (const path of hot) path.classList.remove("hot");
    hot = id ? paths.get(id) || [] : [];
    for (const path of hot) path.classList.add("hot");
  }
  canvas.addEventListener("focusin", (event) => {
    const node = event.target.closest("[data-node]");
    if (node) highlight(node.dataset.node);
  });
  canvas.addEventListener("mouseover", (event) => {
    const node = event.target.closest("[data-node]");
    if (node) highlight(node.dataset.node);
  });

  return {
    zoomIn: () => setZoom(zoom * 1.25),
    zoomOut: () => setZoom(zoom / 1.25),
    fit: () => setZoom(fitZoom()),
    highlight,
    reveal(id) {
      // Scroll the graph only, never the page.
      const node = byId.get(id);
      if (!node) return;
      const box = node.getBoundingClientRect();
      const view = viewport.getBoundingClientRect();
      viewport.scrollLeft += box.left + box.width / 2 - (view.left + view.width / 2);
      viewport.scrollTop += box.top + box.height / 2 - (view.top + view.height / 2);
    },
    node: (id) => byId.get(id),
  };
}
