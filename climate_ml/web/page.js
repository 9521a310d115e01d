// Everything drawn from data (model, data set and problem names, numbers) goes into the page as
// text or attribute values through el() below, never as HTML: a model file named like a tag is
// shown as its name, not run (the page also sends a Content-Security-Policy).
const $ = (id) => document.getElementById(id);
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";
const fmt = (v) => (v === null || v === undefined) ? "-" : v.toFixed(2);

function el(tag, attrs = {}, children = [], ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined && v !== "") node.setAttribute(k, String(v));
  }
  for (const c of [].concat(children)) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
const svgEl = (tag, attrs = {}, children = []) => el(tag, attrs, children, SVG);
const clear = (node) => node.replaceChildren();

function paramsFromForm() {
  const p = new URLSearchParams({problem: $("problem").value, score: $("score").value});
  if ($("dataset").value.trim()) p.set("dataset", $("dataset").value.trim());
  if ($("reference").value.trim()) p.set("reference", $("reference").value.trim());
  return p;
}

let PROBLEMS = [];  // from /problems: name, description, leads, units, panels

function panelOf(panel) {
  // "" when the chosen problem has this panel, else the one-line reason shown in its place
  const p = PROBLEMS.find((q) => q.name === $("problem").value);
  if (p && p.panels.includes(panel)) return "";
  const having = PROBLEMS.filter((q) => q.panels.includes(panel)).map((q) => q.name);
  return `drawn for ${having.join(", ") || "no problem"}`;
}

async function loadProblems() {
  const scores = await (await fetch("metrics")).json();  // every registered metric, then the map scores
  $("score").replaceChildren(...scores.map((s) => el("option", {value: s.name},
    `${s.kind === "map" ? "maps: " : ""}${s.name} - ${s.description} (${s.lower_is_better ? "lower" : "higher"} is better)`)));
  const res = await fetch("problems");
  const problems = await res.json();
  PROBLEMS = problems;
  $("problem").replaceChildren(...problems.map((p) => el("option", {value: p.name, title: p.description}, p.name)));
  const url = new URLSearchParams(location.search);
  for (const key of ["problem", "score", "dataset", "reference"]) {
    if (url.get(key) !== null) {
      if (key === "problem" && !problems.some((p) => p.name === url.get(key))) {
        $("problem").append(el("option", {value: url.get(key)}, url.get(key)));
      }
      $(key).value = url.get(key);
    }
  }
}

async function loadBoard() {
  $("error").textContent = "";
  const params = paramsFromForm();
  history.replaceState(null, "", "?" + params.toString());
  const res = await fetch("leaderboard?" + params.toString());
  const body = await res.json();
  if (!res.ok) {
    $("error").textContent = body.error || `HTTP ${res.status}`;
    for (const node of [$("board").querySelector("thead"), $("board").querySelector("tbody"), $("chart"), $("legend")]) clear(node);
    $("meta").textContent = "";
    drawReliability(null);
    return;
  }
  render(body);
}

function drawReliability(b) {
  // per category: observed frequency against forecast probability (bins of the backtest, all leads
  // pooled), one series per model, dots sized by the number of forecasts in the bin
  const box = $("reliability");
  clear(box);
  clear($("reliability-legend"));
  const rows = b ? b.rows.filter((r) => r.source && r.source.reliability) : [];
  const cats = [...new Set(rows.flatMap((r) => Object.keys(r.source.reliability)))];
  if (!cats.length) {
    $("reliability-meta").textContent = b ? `no category probabilities recorded for ${b.problem}` : "";
    return;
  }
  $("reliability-meta").textContent = `calibrated category probabilities of ${b.problem} in the backtest ` +
    `(inits ${b.test_period[0]}..${b.test_period[1]}): on the diagonal = reliable; dot area = number of forecasts`;
  const S = 300, m = {l: 42, r: 10, t: 22, b: 34}, w = S - m.l - m.r, h = S - m.t - m.b;
  const x = (v) => m.l + v * w, y = (v) => S - m.b - v * h;
  const most = Math.max(1, ...rows.flatMap((r) => cats.flatMap((c) => (r.source.reliability[c] || []).map((q) => q.n))));
  for (const c of cats) {
    const svg = svgEl("svg", {class: "reliability", "data-category": c, width: S, height: S, role: "img",
                              "aria-label": `reliability of P(${c})`});
    svg.append(svgEl("text", {x: S / 2, y: 14, "font-size": 12, "text-anchor": "middle"}, `P(${c})`),
               svgEl("line", {x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: "#bbb", "stroke-dasharray": "4,4"}),
               svgEl("line", {x1: x(0), y1: y(0), x2: x(1), y2: y(0), stroke: "#888"}),
               svgEl("line", {x1: x(0), y1: y(0), x2: x(0), y2: y(1), stroke: "#888"}),
               svgEl("text", {x: S / 2 + m.l / 2, y: S - 4, "font-size": 11, "text-anchor": "middle"}, "forecast probability"),
               svgEl("text", {x: 10, y: S / 2, "font-size": 11, "text-anchor": "middle",
                              transform: `rotate(-90 10 ${S / 2})`}, "observed frequency"));
    for (const t of [0, 0.5, 1]) {
      svg.append(svgEl("text", {x: x(t), y: y(0) + 14, "font-size": 10, "text-anchor": "middle"}, t),
                 svgEl("text", {x: x(0) - 5, y: y(t) + 4, "font-size": 10, "text-anchor": "end"}, t));
    }
    b.rows.forEach((r, i) => {
      const bins = ((r.source && r.source.reliability) || {})[c] || [];
      const pts = bins.filter((q) => q.n > 0 && q.forecast !== null && q.observed !== null);
      if (!pts.length) return;
      const color = COLORS[i % COLORS.length];
      svg.append(svgEl("path", {class: "rel-line", "data-model": r.model, fill: "none", stroke: color, "stroke-width": 1.5,
                                d: pts.map((q, k) => `${k ? "L" : "M"}${x(q.forecast).toFixed(1)},${y(q.observed).toFixed(1)}`).join(" ")}));
      for (const q of pts) {
        svg.append(svgEl("circle", {class: "rel-point", "data-model": r.model, "data-n": q.n, cx: x(q.forecast).toFixed(1),
                                    cy: y(q.observed).toFixed(1), r: (2 + 6 * Math.sqrt(q.n / most)).toFixed(1), fill: color,
                                    "fill-opacity": 0.6},
                                   [svgEl("title", {}, `${r.model}: forecast ${q.forecast.toFixed(2)}, observed ${q.observed.toFixed(2)}, n ${q.n}`)]));
      }
    });
    box.append(svg);
  }
  b.rows.forEach((r, i) => {
    if (r.source && r.source.reliability) $("reliability-legend").append(el("span", {style: `color:${COLORS[i % COLORS.length]}`}, `\u25A0 ${r.model}`));
  });
}

function render(b) {
  $("meta").textContent = `${b.problem} on ${b.dataset}, inits ${b.test_period[0]}..${b.test_period[1]}, ` +
    `refit every ${b.refit_every_months} months, reference ${b.reference}, ` +
    (b.bootstrap.n_years < b.bootstrap.min_years
      ? `no intervals: ${b.bootstrap.n_years} year(s) of inits, the bootstrap needs ${b.bootstrap.min_years}`
      : `${b.bootstrap.n_years} years resampled`);
  $("board").querySelector("thead").replaceChildren(el("tr", {}, [el("th", {}, "model"), ...b.leads.map((l) => el("th", {}, `L${l}`))]));
  $("board").querySelector("tbody").replaceChildren(...b.rows.map((r) => el("tr", {}, [el("td", {}, r.model), ...b.leads.map((l) => {
    const c = r.leads[String(l)];
    const cls = [c.leader ? "leader" : "", c.significantly_better_than_reference ? "better" : ""].join(" ").trim();
    const tip = `${b.score} ${fmt(c.score)} [${fmt(c.ci[0])}, ${fmt(c.ci[1])}]; minus ${b.reference} ${fmt(c.minus_reference)}`;
    return el("td", {class: cls, title: tip}, fmt(c.score));
  })])));
  drawChart(b);
  drawReliability(b);
}

function drawChart(b) {
  const svg = $("chart"), W = 760, H = 300, m = {l: 50, r: 10, t: 10, b: 35};
  const vals = b.rows.flatMap((r) => b.leads.map((l) => r.leads[String(l)].score)).filter((v) => v !== null);
  clear(svg);
  clear($("legend"));
  if (!vals.length) return;
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi === lo) { hi += 0.5; lo -= 0.5; }
  const x = (l) => m.l + (b.leads.length === 1 ? 0.5 : (b.leads.indexOf(l) / (b.leads.length - 1))) * (W - m.l - m.r);
  const y = (v) => H - m.b - (v - lo) / (hi - lo) * (H - m.t - m.b);
  svg.append(svgEl("line", {x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b, stroke: "#888"}),
             svgEl("line", {x1: m.l, y1: m.t, x2: m.l, y2: H - m.b, stroke: "#888"}));
  for (const t of [lo, (lo + hi) / 2, hi]) {
    svg.append(svgEl("text", {x: m.l - 6, y: y(t) + 4, "font-size": 11, "text-anchor": "end"}, t.toFixed(2)));
  }
  for (const l of b.leads) svg.append(svgEl("text", {x: x(l), y: H - m.b + 16, "font-size": 11, "text-anchor": "middle"}, l));
  svg.append(svgEl("text", {x: (W + m.l) / 2, y: H - 4, "font-size": 12, "text-anchor": "middle"}, "lead (months)"));
  b.rows.forEach((r, i) => {
    const pts = b.leads.map((l) => [l, r.leads[String(l)].score]).filter((p) => p[1] !== null);
    const d = pts.map((p, k) => `${k ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    svg.append(svgEl("path", {class: "series", "data-model": r.model, d: d, fill: "none", stroke: COLORS[i % COLORS.length],
                              "stroke-width": 2, "stroke-dasharray": r.model === b.reference ? "5,4" : null}));
    $("legend").append(el("span", {style: `color:${COLORS[i % COLORS.length]}`}, `\u25A0 ${r.model}`));
  });
}

function archiveParams() {
  const p = new URLSearchParams({problem: $("problem").value});
  if ($("dataset").value.trim()) p.set("dataset", $("dataset").value.trim());
  return p;
}

function download(model, format) {
  const p = archiveParams();
  p.set("model", model);
  p.set("format", format);
  return el("a", {href: "forecasts?" + p.toString()}, format === "netcdf" ? "NetCDF" : "CSV");
}

async function loadArchive() {
  const res = await fetch("archive?" + archiveParams().toString());
  const a = await res.json();
  const body = $("archive").querySelector("tbody");
  if (!res.ok) { clear(body); $("archive-meta").textContent = a.error || `HTTP ${res.status}`; return; }
  const last = a.history.length ? `; last commit ${a.history[0].written_at.slice(0, 19)}Z: ${a.history[0].message}` : "";
  $("archive-meta").textContent = a.models.length
    ? `${a.models.length} models archived for ${a.problem} on ${a.dataset}${last}`
    : `nothing archived for ${a.problem} on ${a.dataset}` + (a.datasets.length ? ` (data sets: ${a.datasets.join(", ")})` : "");
  body.replaceChildren(...a.models.map((m) => el("tr", {"data-model": m.model}, [
    el("td", {}, m.model), el("td", {}, m.n_inits), el("td", {}, m.first), el("td", {}, m.last),
    el("td", {}, Object.entries(m.kinds).map(([k, n]) => `${k} ${n}`).join(", ")), el("td", {}, m.observed),
    el("td", {}, m.last_written), el("td", {}, [download(m.model, "netcdf"), " ", download(m.model, "csv")]),
  ])));
}

async function loadMonitoring() {
  const res = await fetch("monitoring?" + archiveParams().toString());
  const d = await res.json();
  const body = $("monitoring").querySelector("tbody");
  if (!res.ok) { clear(body); $("monitoring-meta").textContent = d.error || `HTTP ${res.status}`; return; }
  const rows = d.rows.filter((r) => r.n > 0 || r.status === "drift");
  const drifting = rows.filter((r) => r.status === "drift").length;
  $("monitoring-meta").textContent = d.note ||
    `${d.scores.join(" and ")} of forecasts issued live, verified through ${d.verified_through}, against each model's backtest interval: ` +
    `${drifting} (model, lead) drifting`;
  body.replaceChildren(...rows.map((r) => el("tr", {}, [
    el("td", {}, r.model), el("td", {}, r.lead), el("td", {}, r.score), el("td", {}, fmt(r.live)), el("td", {}, r.n),
    el("td", {}, fmt(r.backtest)),
    el("td", {}, `[${fmt(r.backtest_ci[0])}, ${fmt(r.backtest_ci[1])}]`), el("td", {class: r.status === "drift" ? "drift" : ""}, r.status),
  ])));
}

const monthIndex = (ym) => Number(ym.slice(0, 4)) * 12 + Number(ym.slice(5, 7)) - 1;

async function loadPlume() {
  const res = await fetch("plume?" + archiveParams().toString());
  const p = await res.json();
  const svg = $("plume");
  clear(svg);
  clear($("plume-legend"));
  if (!res.ok) { $("plume-meta").textContent = p.error || `HTTP ${res.status}`; return; }
  if (!p.init) { $("plume-meta").textContent = `no live forecast of ${p.problem} on ${p.dataset} in the archive`; return; }
  $("plume-meta").textContent = `${p.problem} on ${p.dataset}: every model's forecast from ${p.init} (${p.units}), ` +
    `with the observed target of the two years before` + (p.thresholds.length ? ` and the thresholds ${p.thresholds.join(" / ")}` : "");
  const W = 760, H = 300, m = {l: 50, r: 10, t: 10, b: 35};
  const pts = [...p.observed.map((o) => [o.valid, o.value])];
  for (const f of p.models) {
    f.valid.forEach((v, k) => pts.push([v, f.mean[k]]));
    for (const member of f.members || []) f.valid.forEach((v, k) => pts.push([v, member[k]]));
  }
  const vals = pts.map((q) => q[1]).filter((v) => v !== null).concat(p.thresholds);
  const months = pts.map((q) => monthIndex(q[0]));
  const x0 = Math.min(...months), x1 = Math.max(...months);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi === lo) { hi += 0.5; lo -= 0.5; }
  const x = (ym) => m.l + (monthIndex(ym) - x0) / Math.max(1, x1 - x0) * (W - m.l - m.r);
  const y = (v) => H - m.b - (v - lo) / (hi - lo) * (H - m.t - m.b);
  const path = (series) => series.filter((q) => q[1] !== null)
    .map((q, k) => `${k ? "L" : "M"}${x(q[0]).toFixed(1)},${y(q[1]).toFixed(1)}`).join(" ");
  svg.append(svgEl("line", {x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b, stroke: "#888"}),
             svgEl("line", {x1: m.l, y1: m.t, x2: m.l, y2: H - m.b, stroke: "#888"}),
             svgEl("line", {class: "init", x1: x(p.init), y1: m.t, x2: x(p.init), y2: H - m.b, stroke: "#bbb"}));
  for (const t of [lo, (lo + hi) / 2, hi]) svg.append(svgEl("text", {x: m.l - 6, y: y(t) + 4, "font-size": 11, "text-anchor": "end"}, t.toFixed(2)));
  for (const ym of [...new Set(pts.map((q) => q[0]))].filter((v) => v.endsWith("-01"))) {
    svg.append(svgEl("text", {x: x(ym), y: H - m.b + 16, "font-size": 11, "text-anchor": "middle"}, ym.slice(0, 4)));
  }
  for (const t of p.thresholds) {
    svg.append(svgEl("line", {class: "threshold", x1: m.l, x2: W - m.r, y1: y(t), y2: y(t), stroke: "#999", "stroke-dasharray": "4,4"}));
  }
  p.models.forEach((f, i) => {
    const color = COLORS[i % COLORS.length];
    for (const member of f.members || []) {
      svg.append(svgEl("path", {class: "member", "data-model": f.model, d: path(f.valid.map((v, k) => [v, member[k]])),
                                fill: "none", stroke: color, "stroke-width": 0.7, opacity: 0.5}));
    }
    svg.append(svgEl("path", {class: "forecast", "data-model": f.model, d: path(f.valid.map((v, k) => [v, f.mean[k]])),
                              fill: "none", stroke: color, "stroke-width": 2}));
    $("plume-legend").append(el("span", {style: `color:${color}`}, `\u25A0 ${f.model}`));
  });
  drawProbabilities(p);
  if (p.observed.length) {
    svg.append(svgEl("path", {class: "observed", d: path(p.observed.map((o) => [o.valid, o.value])), fill: "none",
                              stroke: "#111", "stroke-width": 2.5}));
    $("plume-legend").append(el("span", {style: "color:#111"}, "\u25A0 observed"));
  }
}

const CATEGORY_COLORS = ["#2b6cb0", "#a0aec0", "#c53030"];  // below / near / above, La Nina / neutral / El Nino

function drawProbabilities(p) {
  // the multi-model mean of the category probabilities, lead by lead, as stacked bars
  const svg = $("probs");
  clear(svg);
  clear($("probs-legend"));
  const withProbs = p.models.filter((f) => f.probabilities && Object.keys(f.probabilities).length);
  if (!withProbs.length) { $("probs-meta").textContent = ""; return; }
  const leads = Object.keys(withProbs[0].probabilities).map(Number).sort((a, b) => a - b);
  const cats = Object.keys(withProbs[0].probabilities[String(leads[0])]);
  $("probs-meta").textContent = `probabilities from ${p.init}, mean of ${withProbs.map((f) => f.model).join(", ")}`;
  const W = 760, H = 160, m = {l: 50, r: 10, t: 8, b: 28};
  const bw = (W - m.l - m.r) / leads.length;
  leads.forEach((lead, i) => {
    let top = m.t;
    cats.forEach((c, j) => {
      const probs = withProbs.map((f) => (f.probabilities[String(lead)] || {})[c]).filter((v) => v !== undefined && v !== null);
      const v = probs.reduce((a, b) => a + b, 0) / Math.max(1, probs.length);
      const h = v * (H - m.t - m.b);
      svg.append(svgEl("rect", {class: "prob", "data-lead": lead, "data-category": c, "data-value": v.toFixed(4),
                                x: m.l + i * bw + 1, y: top, width: bw - 2, height: h, fill: CATEGORY_COLORS[j % 3]},
                               [svgEl("title", {}, `lead ${lead} ${c}: ${(100 * v).toFixed(0)}%`)]));
      top += h;
    });
    svg.append(svgEl("text", {x: m.l + (i + 0.5) * bw, y: H - m.b + 14, "font-size": 10, "text-anchor": "middle"}, lead));
  });
  svg.append(svgEl("text", {x: m.l - 6, y: m.t + 8, "font-size": 10, "text-anchor": "end"}, "100%"));
  svg.append(svgEl("text", {x: (W + m.l) / 2, y: H - 2, "font-size": 11, "text-anchor": "middle"}, "lead (months)"));
  cats.forEach((c, j) => $("probs-legend").append(el("span", {style: `color:${CATEGORY_COLORS[j % 3]}`}, `\u25A0 ${c}`)));
}

const MONTHS = "JFMAMJJASOND";

async function loadSeasonal() {
  // sea-ice extent by calendar month: recent years, each month's record low, the 1981-2010 mean
  // and every model's latest forecast at its valid months (a forecast crossing December wraps)
  const svg = $("seasonal");
  clear(svg);
  clear($("seasonal-legend"));
  const noSeasonal = panelOf("seasonal_cycle");
  if (noSeasonal) { $("seasonal-meta").textContent = noSeasonal; return; }
  const res = await fetch("seasonal?" + archiveParams().toString());
  const d = await res.json();
  if (!res.ok) { $("seasonal-meta").textContent = d.error || `HTTP ${res.status}`; return; }
  const W = 760, H = 300, m = {l: 50, r: 10, t: 10, b: 35};
  const fc = d.forecasts.models.map((f) => f.valid.map((v, k) => ({month: Number(v.slice(5, 7)), value: f.mean[k]})));
  const series = [...Object.values(d.years), d.record_low, d.climatology, ...fc];
  const vals = series.flat().map((q) => q.value).filter((v) => v !== null);
  if (!vals.length) { $("seasonal-meta").textContent = `no extent observed on ${d.dataset}`; return; }
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi === lo) { hi += 0.5; lo -= 0.5; }
  const x = (month) => m.l + (month - 1) / 11 * (W - m.l - m.r);
  const y = (v) => H - m.b - (v - lo) / (hi - lo) * (H - m.t - m.b);
  const path = (pts) => {
    let out = "", prev = null;
    for (const q of pts.filter((q) => q.value !== null)) {
      out += `${prev === null || q.month < prev ? "M" : "L"}${x(q.month).toFixed(1)},${y(q.value).toFixed(1)} `;
      prev = q.month;
    }
    return out.trim();
  };
  svg.append(svgEl("line", {x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b, stroke: "#888"}),
             svgEl("line", {x1: m.l, y1: m.t, x2: m.l, y2: H - m.b, stroke: "#888"}));
  for (let k = 1; k <= 12; k++) svg.append(svgEl("text", {x: x(k), y: H - m.b + 16, "font-size": 11, "text-anchor": "middle"}, MONTHS[k - 1]));
  for (const t of [lo, (lo + hi) / 2, hi]) svg.append(svgEl("text", {x: m.l - 6, y: y(t) + 4, "font-size": 11, "text-anchor": "end"}, t.toFixed(1)));
  const line = (cls, pts, attrs, label, key) => {
    svg.append(svgEl("path", {class: cls, "data-key": key, d: path(pts), fill: "none", ...attrs}));
    if (label) $("seasonal-legend").append(el("span", {style: `color:${attrs.stroke}`}, `\u25A0 ${label}`));
  };
  line("climatology", d.climatology, {stroke: "#999", "stroke-width": 3}, `mean ${d.climatology_years.join("-")}`, "climatology");
  line("record", d.record_low, {stroke: "#b2182b", "stroke-width": 1.5, "stroke-dasharray": "5,4"}, "record low", "record");
  const years = Object.keys(d.years);
  years.forEach((yr, i) => line("year", d.years[yr], {stroke: i === years.length - 1 ? "#111" : "#bbb", "stroke-width": i === years.length - 1 ? 2.5 : 1.2},
                                 yr, yr));
  d.forecasts.models.forEach((f, i) => line("forecast", fc[i], {stroke: COLORS[i % COLORS.length], "stroke-width": 2},
                                            `${f.model} from ${d.forecasts.init}`, f.model));
  $("seasonal-meta").textContent = `${d.problem} on ${d.dataset}: extent (${d.units}) by calendar month, observed to ${d.last}` +
    (d.forecasts.init ? `, with the forecasts from ${d.forecasts.init}` : "");
}

async function loadRainSeason() {
  // the problem's season (e.g. November-March) so far against the terciles of the season total, and each model's
  // latest archived season outlook: its total and P(below / near / above) as a stacked bar
  const svg = $("rain");
  clear(svg);
  clear($("rain-legend"));
  svg.setAttribute("height", 60);
  const noSeason = panelOf("season");
  if (noSeason) { $("rain-meta").textContent = noSeason; return; }
  const res = await fetch("rainseason?" + archiveParams().toString());
  const d = await res.json();
  if (!res.ok) { $("rain-meta").textContent = d.error || `HTTP ${res.status}`; return; }
  const [lower, upper] = d.tercile_edges;
  const W = 760, m = {l: 250, r: 20}, rowH = 26, top = 22;
  const rows = [{label: `observed ${d.season}` + (d.complete ? "" : " so far"), total: d.so_far}, ...d.outlooks.map(
    (o) => ({label: `${o.model} from ${o.init}`, total: o.forecast, probability: o.probability}))];
  const H = top + rows.length * rowH + 24;
  svg.setAttribute("height", H);
  const hi = Math.max(upper || 0, ...rows.map((r) => r.total)) * 1.15 || 1;
  const x = (v) => m.l + v / hi * (W - m.l - m.r);
  for (const [edge, label] of [[lower, "lower tercile"], [upper, "upper tercile"]]) {
    if (edge === null) continue;
    svg.append(svgEl("line", {class: "tercile", x1: x(edge), x2: x(edge), y1: top - 6, y2: H - 22, stroke: "#999", "stroke-dasharray": "4,4"}),
               svgEl("text", {x: x(edge), y: top - 9, "font-size": 10, "text-anchor": "middle"}, `${label} ${edge.toFixed(0)}`));
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    svg.append(svgEl("text", {x: m.l - 8, y: y + rowH / 2 + 4, "font-size": 11, "text-anchor": "end"}, r.label));
    if (!r.probability) {
      svg.append(svgEl("rect", {class: "so-far", x: x(0), y: y + 4, width: x(r.total) - x(0), height: rowH - 8, fill: "#333"},
                       [svgEl("title", {}, `${r.total.toFixed(0)} ${d.units}`)]));
      return;
    }
    const color = COLORS[(i - 1) % COLORS.length];
    svg.append(svgEl("circle", {class: "outlook", "data-total": r.total, cx: x(r.total), cy: y + rowH / 2, r: 5, fill: color},
                     [svgEl("title", {}, `${r.label}: ${r.total.toFixed(0)} ${d.units}`)]));
    const p = r.probability;
    svg.append(svgEl("text", {x: x(r.total) + 9, y: y + rowH / 2 + 4, "font-size": 10},
                     `P(below/near/above) ${["below", "near", "above"].map((c) => (p[c] ?? NaN).toFixed(2)).join("/")}`));
  });
  svg.append(svgEl("text", {x: (W + m.l) / 2, y: H - 4, "font-size": 11, "text-anchor": "middle"}, `${d.season_months} total (${d.units})`));
  $("rain-meta").textContent = `${d.problem} on ${d.dataset}: the ${d.season} season observed to ${d.last}` +
    ` (${d.so_far.toFixed(0)} ${d.units}), terciles of ${d.n_seasons} seasons` +
    (d.outlooks.length ? `, and ${d.outlooks.length} archived season outlooks` : ", no season outlook archived");
}

const LAND = [200, 200, 200], EDGE = [214, 39, 40];

function iceColour(p) {
  // white (0) to dark blue (1)
  return [255 - 247 * p, 255 - 207 * p, 255 - 148 * p].map(Math.round);
}

async function loadIceMap() {
  const canvas = $("icemap");
  const ctx = canvas.getContext("2d");
  const res = await fetch("icemap?" + archiveParams().toString());
  const d = await res.json();
  clear($("icemap-legend"));
  if (!res.ok) {
    canvas.width = 0;
    canvas.height = 0;
    canvas.dataset.cells = "0";
    $("icemap-meta").textContent = d.error || `HTTP ${res.status}`;
    return;
  }
  const [ny, nx] = d.shape;
  const scale = Math.max(1, Math.floor(480 / Math.max(nx, ny)));
  canvas.width = nx * scale;
  canvas.height = ny * scale;
  const img = ctx.createImageData(nx * scale, ny * scale);
  const at = (i, j) => i * nx + j;
  let ice = 0, edge = 0, cells = 0;
  for (let i = 0; i < ny; i++) {
    for (let j = 0; j < nx; j++) {
      const p = d.probability[at(i, j)], o = d.observed_ice[at(i, j)];
      let rgb = p === null ? LAND : iceColour(p);
      if (p !== null) { cells += 1; if (p >= 0.5) ice += 1; }
      // the observed ice edge: an ice cell next to observed open water (right or below)
      const right = j + 1 < nx ? d.observed_ice[at(i, j + 1)] : null, below = i + 1 < ny ? d.observed_ice[at(i + 1, j)] : null;
      if (o !== null && ((right !== null && right !== o) || (below !== null && below !== o))) { rgb = EDGE; edge += 1; }
      for (let a = 0; a < scale; a++) {
        for (let b = 0; b < scale; b++) {
          const k = 4 * ((i * scale + a) * nx * scale + j * scale + b);
          img.data[k] = rgb[0]; img.data[k + 1] = rgb[1]; img.data[k + 2] = rgb[2]; img.data[k + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  Object.assign(canvas.dataset, {cells: String(cells), ice: String(ice), edge: String(edge), scale: String(scale)});
  $("icemap-meta").textContent = `${d.model} on ${d.dataset}: probability of concentration >= ${Math.round(100 * d.threshold)}% ` +
    `(share of ${d.members} members) for ${d.valid}, from ${d.init} (lead ${d.lead}); red: the observed ice edge`;
  for (const [label, rgb] of [["P = 0", iceColour(0)], ["P = 0.5", iceColour(0.5)], ["P = 1", iceColour(1)],
                              ["land", LAND], ["observed edge", EDGE]]) {
    $("icemap-legend").append(el("span", {}, [
      el("span", {style: `background:rgb(${rgb.join(",")});border:1px solid #999;margin-right:.3rem`}, "\u00A0\u00A0\u00A0"), label]));
  }
}

const loadAll = () => Promise.all([loadBoard(), loadArchive(), loadMonitoring(), loadPlume(), loadSeasonal(),
                                    loadRainSeason(), loadIceMap()]);
$("controls").addEventListener("submit", (e) => { e.preventDefault(); loadAll(); });
loadProblems().then(loadAll);
