// The sample page: overlay toggles, bank switches, and a click (or a dragged box) that asks the banks.
// Plain JS, no build step. A click navigates to the same page with x, y (or box) in its URL, and the
// server renders the hits, so a page's URL is the whole query (shareable, and the API's parameters).
(function () {
  const page = document.getElementById("page");
  const view = document.getElementById("view");
  if (!page || !view) return;
  const data = page.dataset;

  function overlays() {
    return Array.from(document.querySelectorAll("input.overlay:checked")).map((el) => el.value).join(",");
  }

  function go(extra) {
    const p = new URLSearchParams({ shards: data.shards, key: data.key });
    const bank = document.getElementById("bank").value, bank2 = document.getElementById("bank2").value;
    if (bank) p.set("bank", bank);
    if (bank2) p.set("bank2", bank2);
    if (overlays()) p.set("overlay", overlays());
    if (data.k) p.set("k", data.k);
    for (const [k, v] of Object.entries(extra)) p.set(k, v);
    window.location.href = "/sample?" + p.toString();
  }

  // The query that produced this page, to keep when only a bank changes.
  function currentQuery() {
    const now = new URLSearchParams(window.location.search), out = {};
    for (const k of ["x", "y", "box", "superpixel"]) if (now.has(k)) out[k] = now.get(k);
    return out;
  }

  document.querySelectorAll("input.overlay").forEach((box) =>
    box.addEventListener("change", () => {
      const p = new URLSearchParams({ shards: data.shards, key: data.key });
      if (overlays()) p.set("overlay", overlays());
      if (data.region) p.set("region", data.region);
      view.src = "/api/image?" + p.toString();
      const here = new URLSearchParams(window.location.search);
      overlays() ? here.set("overlay", overlays()) : here.delete("overlay");
      history.replaceState(null, "", "?" + here.toString());
    })
  );
  for (const id of ["bank", "bank2"]) document.getElementById(id).addEventListener("change", () => go(currentQuery()));

  // Image pixel under a mouse event: the picture is enlarged by a whole factor, so divide it out.
  function pixel(ev) {
    const r = view.getBoundingClientRect();
    const w = +view.dataset.w, h = +view.dataset.h;
    const x = Math.floor(((ev.clientX - r.left) * w) / r.width), y = Math.floor(((ev.clientY - r.top) * h) / r.height);
    return [Math.min(w - 1, Math.max(0, x)), Math.min(h - 1, Math.max(0, y)), ev.clientX - r.left, ev.clientY - r.top];
  }

  const band = document.getElementById("band");
  let start = null;
  view.addEventListener("mousedown", (ev) => { ev.preventDefault(); start = pixel(ev); });
  view.addEventListener("mousemove", (ev) => {
    if (!start) return;
    const now = pixel(ev);
    Object.assign(band.style, {
      left: Math.min(start[2], now[2]) + "px", top: Math.min(start[3], now[3]) + "px",
      width: Math.abs(now[2] - start[2]) + "px", height: Math.abs(now[3] - start[3]) + "px",
    });
    band.hidden = false;
  });
  view.addEventListener("mouseup", (ev) => {
    if (!start) return;
    const end = pixel(ev), s = start;
    start = null;
    band.hidden = true;
    const dragged = Math.abs(end[2] - s[2]) > 4 || Math.abs(end[3] - s[3]) > 4;
    if (!dragged) return go({ x: s[0], y: s[1] });
    const x0 = Math.min(s[0], end[0]), y0 = Math.min(s[1], end[1]);
    go({ box: [x0, y0, Math.max(s[0], end[0]) + 1, Math.max(s[1], end[1]) + 1].join(",") });
  });
})();
