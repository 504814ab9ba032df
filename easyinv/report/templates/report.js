// easyinv report: sortable tables, the per-image view (filter, sort, pages) and the side-by-side view.
// Everything runs from the embedded JSON; the DOM is built with createElement (no markup from strings).
(function () {
  "use strict";

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (v === null || v === undefined) return;
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    });
    (children || []).forEach((c) => { if (c) node.appendChild(c); });
    return node;
  }

  // ---------------------------------------------------------------- tabs
  const buttons = Array.from(document.querySelectorAll("nav [data-tab]"));
  const sections = Array.from(document.querySelectorAll("section.tab"));
  function showTab(id) {
    sections.forEach((s) => { s.hidden = s.id !== id; });
    buttons.forEach((b) => b.classList.toggle("active", b.dataset.tab === id));
  }
  buttons.forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));

  // ---------------------------------------------------------------- sortable tables
  // A cell sorts by its unrounded number (data-sort, written from the table's frame; "" is a missing value), else by
  // its leading number ("+0.512 [..]*", "43.694 ± 1.778", "∞"); "—" and text without a number sort last.
  // Every header holds a button: Tab reaches it, Enter or Space sorts; the header's aria-sort says the order.
  function cellNumber(text) {
    const t = text.replace(/\u2212/g, "-").trim();
    if (/^[+-]?\u221e/.test(t)) return t.startsWith("-") ? -Infinity : Infinity;
    const m = t.match(/^[+-]?\d+(\.\d+)?/);
    return m ? parseFloat(m[0]) : null;
  }
  function sortValue(cell) {
    const raw = cell.dataset.sort;
    if (raw !== undefined) {
      const x = raw === "" ? NaN : Number(raw);
      return { missing: Number.isNaN(x), number: Number.isNaN(x) ? null : x, text: cell.textContent.trim() };
    }
    const text = cell.textContent.trim();
    return { missing: text === "—", number: cellNumber(text), text };
  }
  function compareValues(a, b) {
    const x = a.number, y = b.number;
    if (x !== null && y !== null) return x === y ? 0 : (x < y ? -1 : 1);
    if (x !== null) return -1;
    if (y !== null) return 1;
    return a.text.localeCompare(b.text);
  }
  document.querySelectorAll("table.sortable").forEach((table) => {
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((th, col) => th.addEventListener("click", () => {
      const desc = th.getAttribute("aria-sort") === "ascending";
      heads.forEach((h) => h.setAttribute("aria-sort", "none"));
      th.setAttribute("aria-sort", desc ? "descending" : "ascending");
      const body = table.tBodies[0];
      const keys = new Map(Array.from(body.rows).map((r) => [r, sortValue(r.cells[col])]));
      const rows = Array.from(body.rows);
      rows.sort((r, s) => {
        const x = keys.get(r), y = keys.get(s);
        if (x.missing !== y.missing) return x.missing ? 1 : -1;  // missing values last either way
        const c = compareValues(x, y);
        return desc ? -c : c;
      });
      rows.forEach((r) => body.appendChild(r));
    }));
  });

  // ---------------------------------------------------------------- per-image view
  function num(v) {
    if (v === null || v === undefined) return NaN;
    return typeof v === "string" ? Number(v) : v;
  }
  function fmt(v, decimals) {
    if (Number.isNaN(v)) return "—";
    if (!Number.isFinite(v)) return v > 0 ? "∞" : "-∞";
    return v.toFixed(decimals);
  }
  function matches(cell, status) {
    if (!status) return true;
    if (status === "missing") return cell === null;
    if (cell === null) return false;
    if (status === "failures") return cell[0] !== "ok";
    return cell[0] === status;
  }

  function PerImage(root) {
    const data = JSON.parse(root.querySelector(".view-data").textContent);
    const pageSize = Number(root.dataset.pageSize) || 25;
    const q = (role) => root.querySelector(`[data-role="${role}"]`);
    const ui = {};
    ["method", "status", "part", "sort", "sort-method", "order", "a", "b", "head", "rows", "scroller", "compare",
      "compare-title", "panels", "compare-metrics", "gain", "close"].forEach((r) => { ui[r] = q(r); });
    const pager = {};  // the pagers above and below the table
    ["prev", "next", "range", "count"].forEach((r) => {
      pager[r] = Array.from(root.querySelectorAll(`.pager [data-role="${r}"]`));
    });
    const methods = data.methods;
    let page = 0;
    let current = null;  // the item index shown side by side

    methods.forEach((m, i) => {
      ["method", "sort-method", "a", "b"].forEach((r) => ui[r].appendChild(el("option", { value: String(i), text: m })));
    });
    // A: the tables' baseline where it is one of the methods (B − A then has the sign of the tables' Δ)
    const base = methods.indexOf(data.baseline === undefined ? null : data.baseline);
    ui.a.value = String(Math.max(0, base));
    ui.b.value = String(base > 0 ? 0 : Math.min(1, methods.length - 1));
    Array.from(new Set(data.items.map((it) => it[1]))).sort().forEach((p) => ui.part.appendChild(
      el("option", { value: p, text: p })));
    data.metrics.forEach((m, k) => {
      ui.sort.appendChild(el("option", { value: `m${k}`, text: m.name }));
    });
    data.metrics.forEach((m, k) => {
      ui.sort.appendChild(el("option", { value: `d${k}`, text: `${m.name}: B − A` }));
    });

    function src(dir, stem, thumb) {
      const d = data.dirs[dir];
      return `${d[thumb ? 1 : 0]}/${stem}.${thumb ? "jpg" : "png"}`;
    }
    function value(i, m, k) {
      const cell = data.cells[i][m];
      return cell === null ? NaN : num(cell[2][k]);
    }
    function sortKey(i) {
      const s = ui.sort.value;
      if (s === "item") return null;
      const k = Number(s.slice(1));
      if (s[0] === "m") return value(i, Number(ui["sort-method"].value), k);
      const a = value(i, Number(ui.a.value), k), b = value(i, Number(ui.b.value), k);
      return a === b ? 0 : b - a;  // B − A, as the tables' row − baseline; ∞ − ∞ (two identical images) is none
    }
    function selected() {
      const method = ui.method.value, status = ui.status.value, part = ui.part.value;
      const shown = method === "" ? methods.map((_, i) => i) : [Number(method)];
      const rows = [];
      data.items.forEach((it, i) => {
        if (part && it[1] !== part) return;
        if (status && !shown.some((m) => matches(data.cells[i][m], status))) return;
        rows.push(i);
      });
      const desc = ui.order.value === "desc";
      if (ui.sort.value === "item") {
        if (desc) rows.reverse();
      } else {
        const keys = new Map(rows.map((i) => [i, sortKey(i)]));
        rows.sort((i, j) => {
          const x = keys.get(i), y = keys.get(j);
          const nx = Number.isNaN(x), ny = Number.isNaN(y);
          if (nx || ny) return nx === ny ? i - j : (nx ? 1 : -1);  // missing values last either way
          if (x === y) return i - j;
          return (x < y ? -1 : 1) * (desc ? -1 : 1);
        });
      }
      return { rows, shown };
    }
    function thumbLink(dir, stem, label) {
      if (dir < 0) return el("span", { class: "none", text: `no ${label}` });
      return el("a", { href: src(dir, stem, false), title: label }, [
        el("img", { src: src(dir, stem, true), alt: `${label} ${stem}` })]);
    }
    function metricsText(cell) {
      return data.metrics.map((m, k) => `${m.name.replace(/ [↑↓]$/, "")} ${fmt(num(cell[2][k]), m.decimals)}`);
    }
    function render() {
      const { rows, shown } = selected();
      const pages = Math.max(1, Math.ceil(rows.length / pageSize));
      page = Math.min(page, pages - 1);
      const start = page * pageSize, stop = Math.min(rows.length, start + pageSize);
      pager.count.forEach((n) => { n.textContent = String(rows.length); });
      pager.range.forEach((n) => { n.textContent = rows.length ? `${start + 1}–${stop}` : "0"; });
      pager.prev.forEach((b) => { b.disabled = page === 0; });
      pager.next.forEach((b) => { b.disabled = page >= pages - 1; });
      ui.head.replaceChildren(el("th", { text: "image" }), el("th", { text: "reference" }),
        ...shown.map((m) => el("th", { text: methods[m] })));
      const body = [];
      rows.slice(start, stop).forEach((i) => {
        const [id, part, stem, ref] = data.items[i];
        const button = el("button", { type: "button", class: "open-compare", text: "A | B" });
        button.addEventListener("click", () => openAndShow(i));
        const cells = [el("td", { class: "id" }, [el("div", { text: id }), el("small", { text: part }), button]),
          el("td", {}, [thumbLink(ref, stem, "reference")])];
        shown.forEach((m) => {
          const cell = data.cells[i][m];
          if (cell === null) {
            cells.push(el("td", { class: "cell status-missing", text: "no record" }));
            return;
          }
          const parts = data.kinds.map((kind, k) => thumbLink(cell[3][k], stem, kind));
          parts.push(el("div", { class: "metrics" }, metricsText(cell).map((t) => el("div", { text: t }))));
          if (cell[0] !== "ok" || cell[1]) {
            parts.push(el("div", { class: "status", text: cell[1] ? `${cell[0]}: ${cell[1]}` : cell[0] }));
          }
          cells.push(el("td", { class: `cell status-${cell[0]}` }, parts));
        });
        body.push(el("tr", { class: "item-row", "data-item": id }, cells));
      });
      ui.rows.replaceChildren(...body);
      if (current !== null) openCompare(current);
    }
    function errorMap(refDir, dir, stem, label) {
      if (refDir < 0 || dir < 0) return el("figure", {}, [el("figcaption", { text: `${label}: no image` })]);
      const gain = Number(ui.gain.value);
      const wrap = el("div", { class: "errmap", style: `filter: brightness(${gain})` }, [
        el("img", { src: src(refDir, stem, false), alt: "reference" }),
        el("img", { src: src(dir, stem, false), alt: `${label} error` })]);
      return el("figure", {}, [wrap, el("figcaption", { text: `|${label} − reference| ×${gain}` })]);
    }
    function full(dir, stem, label) {
      if (dir < 0) return el("figure", {}, [el("figcaption", { text: `${label}: no image` })]);
      return el("figure", {}, [el("a", { href: src(dir, stem, false) }, [
        el("img", { src: src(dir, stem, false), alt: label })]), el("figcaption", { text: label })]);
    }
    function openCompare(i) {
      current = i;
      const [id, , stem, ref] = data.items[i];
      const a = Number(ui.a.value), b = Number(ui.b.value);
      const ca = data.cells[i][a], cb = data.cells[i][b];
      ui["compare-title"].textContent = `${id}: A = ${methods[a]}, B = ${methods[b]}`;
      const panels = [full(ref, stem, "reference")];
      [[ca, methods[a]], [cb, methods[b]]].forEach(([c, name]) => {
        data.kinds.forEach((kind, k) => panels.push(full(c === null ? -1 : c[3][k], stem, `${name} ${kind}`)));
      });
      [[ca, methods[a]], [cb, methods[b]]].forEach(([c, name]) => {
        panels.push(errorMap(ref, c === null ? -1 : c[3][0], stem, name));
      });
      ui.panels.replaceChildren(...panels);
      const head = el("tr", {}, ["metric", `A: ${methods[a]}`, `B: ${methods[b]}`, "B − A"].map(
        (t) => el("th", { text: t })));
      const lines = data.metrics.map((m, k) => {
        const x = value(i, a, k), y = value(i, b, k);
        const d = x === y ? 0 : y - x;  // the tables' sign: row (B) − baseline (A)
        return el("tr", {}, [m.name, fmt(x, m.decimals), fmt(y, m.decimals), fmt(d, m.decimals)].map(
          (t) => el("td", { text: t })));
      });
      const status = el("tr", {}, ["status", ca ? ca[0] : "no record", cb ? cb[0] : "no record", ""].map(
        (t) => el("td", { text: t })));
      ui["compare-metrics"].replaceChildren(head, ...lines, status);
      ui.compare.hidden = false;
    }
    function openAndShow(i) {
      openCompare(i);
      ui.compare.scrollIntoView();
    }
    ["method", "status", "part", "sort", "sort-method", "order", "a", "b"].forEach((r) => ui[r].addEventListener(
      "change", () => { page = 0; render(); }));
    ui.gain.addEventListener("change", () => { if (current !== null) openCompare(current); });
    function turn(step, below) {
      page += step;
      render();
      ui.scroller.scrollTop = 0;
      if (below) ui.scroller.scrollIntoView({ block: "nearest" });  // from the lower pager: back to the first row
    }
    const below = (b) => b.closest("[data-role='pager-bottom']") !== null;
    pager.prev.forEach((b) => b.addEventListener("click", () => turn(-1, below(b))));
    pager.next.forEach((b) => b.addEventListener("click", () => turn(1, below(b))));
    ui.close.addEventListener("click", () => { current = null; ui.compare.hidden = true; });
    render();
  }
  document.querySelectorAll("section.per-image").forEach((root) => PerImage(root));
}());
