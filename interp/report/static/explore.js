// interp explorer: one hand-written ES module, no dependencies, no network.
// The model is anywidget's (in Jupyter) or the local server's shim (interp explore): both
// hold the state traits (example, round, layer, head, query, filters, order, concept) and one data trait,
// "data", that Python recomputes from the state.
const h = (tag, attrs = {}, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") el.style.cssText = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const kid of kids.flat()) if (kid != null) el.append(kid);
  return el;
};
const fmt = (x) => (x == null ? "–" : Number.isInteger(x) ? String(x) : Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(3));
const COLORS = { user: "#eef4ff", instruction: "#fff1c2", prefix: "#f0f0f0", answer: "#e3f7e3", other: "#ffffff" };

function missing(view) {
  return view && view.missing ? h("div", { class: "ix-missing", style: "color:#888;font-style:italic" }, "no data: " + view.missing) : null;
}

function table(rows, columns) {
  if (!rows || !rows.length) return h("div", { style: "color:#888" }, "no rows");
  columns = columns || Object.keys(rows[0]);
  return h("table", { style: "border-collapse:collapse;font-size:12px" },
    h("tr", {}, columns.map((c) => h("th", { style: "text-align:left;padding:2px 6px;border-bottom:1px solid #ccc" }, c))),
    rows.map((r) => h("tr", {}, columns.map((c) => {
      const v = r[c];
      return h("td", { style: "padding:2px 6px" }, typeof v === "number" ? fmt(v) : v == null ? "–" : String(v));
    }))));
}

// Colour stops: diverging (blue, white at 0, red) when the values straddle 0, else sequential.
const DIVERGING = [[33, 102, 172], [247, 247, 247], [178, 24, 43]];
const SEQUENTIAL = [[255, 255, 217], [65, 182, 196], [8, 29, 88]];
const sig = (x) => (x == null ? "–" : Number(x.toPrecision(3)).toString());

function colour(v, scale) {
  if (v == null || !scale) return "#eee";
  const span = scale.hi - scale.lo;
  let t = span > 0 ? (v - scale.lo) / span : 0.5;
  t = Math.max(0, Math.min(1, t));
  const stops = scale.kind === "diverging" ? DIVERGING : SEQUENTIAL;
  const x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  const c = stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function legend(scale) {
  if (!scale) return null;
  const ns = "http://www.w3.org/2000/svg", w = 160;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", 12);
  for (let i = 0; i < w; i += 4) {
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", i); r.setAttribute("y", 0); r.setAttribute("width", 4); r.setAttribute("height", 12);
    r.setAttribute("fill", colour(scale.lo + (i / (w - 4)) * (scale.hi - scale.lo), scale));
    svg.append(r);
  }
  const mid = scale.kind === "diverging" ? " 0 " : " ";
  return h("div", { class: "ix-legend", "data-lo": scale.lo, "data-hi": scale.hi, "data-kind": scale.kind, style: "font-size:11px;margin:4px 0;display:flex;align-items:center;gap:4px" },
    h("span", {}, "colour scale"), h("span", { class: "ix-legend-lo" }, sig(scale.lo)), svg,
    h("span", { class: "ix-legend-hi" }, sig(scale.hi)),
    h("span", { style: "color:#666" }, scale.kind === "diverging" ? `(white at${mid}· shared by the maps)` : "(shared by the maps)"));
}

function heatmap(grid, layers, rounds, title, pick, state, scale, name) {
  if (!grid || grid.missing) return h("div", { style: "display:inline-block;margin-right:16px;vertical-align:top" }, h("div", {}, title), missing(grid));
  const cw = 34, ch = layers.length > 16 ? 12 : 18, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", 40 + cw * rounds.length);
  svg.setAttribute("height", 20 + ch * layers.length);
  const text = (x, y, s) => { const t = document.createElementNS(ns, "text"); t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("font-size", "10"); t.textContent = s; svg.append(t); };
  rounds.forEach((r, j) => text(40 + j * cw + 8, 12, "R" + r));
  layers.forEach((l, i) => {
    text(2, 20 + i * ch + ch - 4, "L" + l);
    rounds.forEach((r, j) => {
      const v = grid[i][j];
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", 40 + j * cw); rect.setAttribute("y", 20 + i * ch);
      rect.setAttribute("width", cw - 2); rect.setAttribute("height", ch - 2);
      rect.setAttribute("fill", colour(v, scale));
      if (state.layer === l && state.round === r) { rect.setAttribute("stroke", "#000"); rect.setAttribute("stroke-width", "2"); }
      const tip = document.createElementNS(ns, "title"); tip.textContent = `layer ${l}, round ${r}: ${fmt(v)}`; rect.append(tip);
      rect.setAttribute("data-layer", l); rect.setAttribute("data-round", r);
      rect.setAttribute("data-value", v == null ? "" : v);
      rect.style.cursor = "pointer";
      rect.addEventListener("click", () => pick(l, r));
      svg.append(rect);
    });
  });
  return h("div", { class: "ix-heatmap", "data-name": name, style: "display:inline-block;margin-right:16px;vertical-align:top" }, h("div", {}, title), svg);
}

function bars(probs, label) {
  if (!probs) return null;
  return h("div", { class: "ix-probs", "data-kind": label.split(" ")[0], style: "font-size:12px" }, label + ": ",
    probs.map((p, i) => h("span", { class: "ix-prob", "data-p": p, style: "margin-right:8px" }, String.fromCharCode(97 + i) + " " + sig(p))));
}

function attention(view, set) {
  if (!view || view.missing) return missing(view);
  const pickHead = h("select", { class: "ix-head" }, Array.from({ length: view.n_heads }, (_, i) => {
    const o = h("option", { value: i }, `L${view.layer}.H${i}`);
    if (i === view.head) o.selected = true;
    return o;
  }));
  pickHead.addEventListener("change", () => set({ head: Number(pickHead.value) }));
  return h("div", {}, "head ", pickHead, " (the layer: click the heatmap)",
    view.rounds.map((r) => h("div", { style: "font-size:12px;padding:2px 0" },
      `R${r.round} read-out: share per round [${r.per_round.map(fmt).join(", ")}]; strongest: `,
      r.top.map((t) => h("span", { title: `position ${t.pos}, round ${t.round}`, style: "margin-right:6px;background:#f3f3f3" },
        `${JSON.stringify(t.text)} ${fmt(t.weight)}`)))));
}

function render({ model, el }) {
  const root = h("div", { class: "interp-explore", style: "font-family:sans-serif;font-size:13px" });
  el.append(root);
  // The busy line shows until Python's answer redraws the page.
  const busyLine = h("div", { class: "ix-busy", style: "color:#888;min-height:1em" }, "");
  const set = (changes) => {
    busyLine.textContent = "computing…";
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.save_changes();
  };
  const draw = () => {
    const d = model.get("data") || {};
    if (!d.state) { root.replaceChildren(h("div", {}, "loading…")); return; }
    const s = d.state, run = d.run, ex = d.example;
    busyLine.textContent = "";
    const search = h("input", { type: "search", class: "ix-search", placeholder: "search id, category, question, answer", value: s.query, style: "width:260px" });
    search.addEventListener("change", () => set({ query: search.value }));
    const filters = run.filters.map((f) => {
      const box = h("input", { type: "checkbox", "data-filter": f });
      box.checked = s.filters.includes(f);
      box.addEventListener("change", () => {
        const now = s.filters.filter((x) => x !== f);
        if (box.checked) now.push(f);
        set({ filters: now });
      });
      return h("label", { style: "margin-right:6px" }, box, f.replaceAll("_", " "));
    });
    // a permuted run: only the examples in one option order (or every order)
    const orderFilter = run.orders && run.orders.length ? h("select", { class: "ix-order-filter" },
      h("option", { value: "" }, "every option order"),
      run.orders.map((o) => {
        const opt = h("option", { value: o }, "order " + o);
        if (o === s.order) opt.selected = true;
        return opt;
      })) : null;
    if (orderFilter) orderFilter.addEventListener("change", () => set({ order: orderFilter.value }));
    const picker = h("select", { class: "ix-example" },
      d.examples.map((r) => {
        const o = h("option", { value: r.example_index }, `${r.example_index} ${r.example_id} ${r.category} ${r.context_condition}${r.permutation ? " order " + r.permutation : ""}${r.changed ? " (changed)" : ""}`);
        if (r.example_index === s.example) o.selected = true;
        return o;
      }));
    picker.addEventListener("change", () => set({ example: Number(picker.value) }));
    const slider = h("input", { type: "range", min: 0, max: run.n_rounds - 1, value: s.round, class: "ix-round" });
    slider.addEventListener("change", () => set({ round: Number(slider.value) }));
    const orders = ex.orders ? h("select", { class: "ix-order" }, ex.orders.map((o) => {
      const opt = h("option", { value: o.example_index }, "order " + o.permutation);
      if (o.example_index === s.example) opt.selected = true;
      return opt;
    })) : null;
    if (orders) orders.addEventListener("change", () => set({ example: Number(orders.value) }));
    const transcript = h("div", { class: "ix-transcript", style: "white-space:pre-wrap;font-family:monospace;font-size:12px;max-height:300px;overflow:auto;border:1px solid #ddd;padding:4px" },
      ex.transcript.segments.map((g) => h("span", {
        title: `round ${g.round} ${g.kind}${g.readout ? " (read-out)" : ""}`,
        "data-round": g.round,
        style: `background:${g.readout ? "#ffb3b3" : COLORS[g.kind] || "#fff"};${g.round === s.round ? "" : "opacity:0.55;"}${g.readout ? "outline:1px solid #c00;" : ""}`,
      }, g.text)));
    const perRound = ex.rounds.map((r) => h("div", { class: "ix-round-row", style: `padding:2px 0;${r.round === s.round ? "font-weight:bold" : ""}` },
      `R${r.round}: ${r.answer_text} (${r.correct ? "right" : "wrong"}${r.biased ? ", stereotyped" : ""})`,
      bars(r.raw, "raw"), bars(r.debiased, "debiased (original option order)"), bars(r.control, "control")));
    const hm = d.heatmap;
    const pick = (layer, round) => set({ layer, round });
    const heat = hm.missing ? missing(hm) : h("div", {},
      h("div", {}, "concept " + hm.concept + " (click a cell: layer and round)"),
      legend(hm.scale),
      heatmap(hm.example, hm.layers, hm.rounds, "this example", pick, s, hm.scale, "example"),
      heatmap(hm.run_mean, hm.layers, hm.rounds, "run mean", pick, s, hm.scale, "run_mean"),
      heatmap(hm.control, hm.layers, hm.rounds, "control", pick, s, hm.scale, "control"));
    const analyses = (view, body) => missing(view) || h("div", {}, view.analyses.map((a) => h("div", {}, h("b", {}, a.name), body(a))));
    const m = d.metrics;
    const cols = ["round", "accuracy", "accuracy_lo", "accuracy_hi", "bias_amb", "bias_dis", "entropy", "flips_changed"];
    const pickCols = (rows) => rows.map((r) => Object.fromEntries(cols.filter((c) => c in r).map((c) => [c, r[c]])));
    const tab = (name, view) => h("div", {}, h("h4", {}, name), missing(view) || table(pickCols(view)));
    root.replaceChildren(
      h("div", {}, search, " ", filters, orderFilter), busyLine,
      h("div", {}, `${d.n_listed} of ${run.n_examples} examples `, picker, orders, " round ", slider, ` R${s.round}`, s.layer >= 0 ? ` layer ${s.layer}` : ""),
      h("h3", {}, `example ${ex.example_index}: ${ex.example_id}`),
      transcript, h("div", {}, perRound),
      h("h3", {}, "concept score per layer × round"), heat,
      h("h3", {}, "patching" + (s.layer >= 0 ? ` (layer ${s.layer})` : "")), analyses(d.patching, (a) => table(a.rows.slice(0, 60))),
      h("h3", {}, "SAE latents that moved most"), analyses(d.sae, (a) => table(a.latents.map(({ contexts, ...rest }) => rest))),
      h("h3", {}, "circuit edges"), analyses(d.circuit, (a) => table(a.edges)),
      h("h3", {}, "attention from each round's read-out"), attention(d.attention, set),
      h("h3", {}, "run: metrics per round"), m.missing ? missing(m) : h("div", {}, tab("raw", m.raw), tab("debiased", m.debiased), tab("control", m.control)),
    );
  };
  model.on("change:data", draw);
  draw();
}

export default { render };
