// Leaderboard tables: sorting, filtering and a column chooser (progressive enhancement: without JavaScript every
// row and the headline columns are there, unsorted, and the controls stay hidden).
// Each section.board holds one table.leaderboard and its controls (classes, so that index.html can hold several).
// * Sort: each header becomes a button. The first click on a number column puts the best values first
//   (data-best="high" | "low"), the next click reverses. Cells are compared by data-value when present, else by
//   text; cells without a value always go last. Ties keep their current order. Each tbody sorts on its own, so the
//   collapsed rows (tbody.collapsed-rows, under its heading row) stay apart, under the others.
// * Filters: .filter-text (case-insensitive substring of variant, regularizer, family, submission), .filter-family
//   (exact family), .filter-evaluator (rows with at least one value of that evaluator; only its metric columns and
//   accuracy are shown). Rows filtered out get the `hidden` attribute; .row-count says "N of M rows"; the heading
//   of the collapsed rows is hidden while none of them is shown.
// * Column chooser: a checkbox per column (data-column); a hidden column has `hidden` on its header and cells.
// * Companions: a header with data-read-beside="<column id>" (a metric that must be read beside another, e.g.
//   sensitivity beside infidelity) is hidden, with its cells, whenever that column is hidden (chooser, evaluator
//   filter or fit); .beside-note then says which and why (its data-hidden-columns lists them). The evaluator filter
//   shows the companions of the chosen evaluator's columns.
// * Fit: at load, while the table is wider than the page, the last shown metric column (never accuracy) is hidden
//   and .fit-note says how many were (its data-hidden-columns lists them).
(function () {
  "use strict";

  function key(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) { return null; }
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : (numeric ? null : cell.textContent);
    if (raw === null) { return null; }
    if (numeric) {
      var x = parseFloat(raw);
      return isNaN(x) ? null : x;
    }
    return raw.trim().toLowerCase();
  }

  function sortBy(table, th, index) {
    var numeric = th.getAttribute("data-type") === "number";
    var current = th.getAttribute("aria-sort");
    var ascending = current ? current !== "ascending" : !(numeric && th.getAttribute("data-best") === "high");
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = Array.prototype.map.call(body.querySelectorAll("tr.lb-row"), function (row, position) {
        return { row: row, position: position, key: key(row, index, numeric) };
      });
      rows.sort(function (a, b) {
        if (a.key === null || b.key === null) {
          return a.key === b.key ? a.position - b.position : (a.key === null ? 1 : -1);
        }
        var order = a.key < b.key ? -1 : (a.key > b.key ? 1 : 0);
        return (ascending ? order : -order) || a.position - b.position;
      });
      rows.forEach(function (item) { body.appendChild(item.row); });
    });
  }

  function setup(section) {
    var table = section.querySelector("table.leaderboard");
    if (!table) { return; }
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var rows = Array.prototype.slice.call(table.querySelectorAll("tbody tr.lb-row"));
    var text = section.querySelector(".filter-text");
    var family = section.querySelector(".filter-family");
    var evaluator = section.querySelector(".filter-evaluator");
    var count = section.querySelector(".row-count");
    var chooser = section.querySelector(".column-chooser");
    var controls = section.querySelector(".controls");
    if (controls) { controls.hidden = false; }

    headers.forEach(function (th, index) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.title = "Sort by this column";
      while (th.firstChild) { button.appendChild(th.firstChild); }
      th.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, th, index); });
    });

    var byId = {};
    headers.forEach(function (th) { byId[th.getAttribute("data-column")] = th; });
    var besideNote = section.querySelector(".beside-note");

    function companionOfChosen(id, chosen) {
      return headers.some(function (th) {
        return th.getAttribute("data-evaluator") === chosen && th.getAttribute("data-read-beside") === id;
      });
    }

    function shownColumn(th) {
      var id = th.getAttribute("data-column");
      if (id === "variant") { return true; }
      var chosen = evaluator ? evaluator.value : "";
      var of = th.getAttribute("data-evaluator");
      if (chosen && of) {
        return of === chosen || (of === "accuracy" && !th.hasAttribute("data-secondary"))
          || companionOfChosen(id, chosen);
      }
      var box = chooser ? chooser.querySelector('input[data-column="' + id + '"]') : null;
      return box ? box.checked : !th.hasAttribute("data-secondary");
    }

    function applyColumns() {
      var shown = headers.map(shownColumn);
      var held = [];
      headers.forEach(function (th, index) {
        var companion = byId[th.getAttribute("data-read-beside")];
        if (shown[index] && companion && !shown[headers.indexOf(companion)]) {
          shown[index] = false;
          held.push([th, companion]);
        }
      });
      headers.forEach(function (th, index) {
        var hide = !shown[index];
        th.hidden = hide;
        rows.forEach(function (row) { if (row.cells[index]) { row.cells[index].hidden = hide; } });
      });
      if (besideNote) {
        besideNote.hidden = held.length === 0;
        besideNote.textContent = held.map(function (pair) {
          var caveat = pair[0].getAttribute("data-caveat");
          return pair[0].getAttribute("data-metric") + " is shown only beside " + pair[1].getAttribute("data-evaluator")
            + " · " + pair[1].getAttribute("data-metric") + ", which is hidden" + (caveat ? ": " + caveat : "") + ".";
        }).join(" ");
        besideNote.setAttribute("data-hidden-columns", held.map(function (pair) {
          return pair[0].getAttribute("data-column");
        }).join(" "));
      }
    }

    function applyRows() {
      var query = text ? text.value.trim().toLowerCase() : "";
      var fam = family ? family.value : "";
      var ev = evaluator ? evaluator.value : "";
      var visible = 0;
      rows.forEach(function (row) {
        var haystack = [row.getAttribute("data-variant"), row.getAttribute("data-regularizer"),
          row.getAttribute("data-family"), row.getAttribute("data-submission")].join(" ").toLowerCase();
        var evaluators = (row.getAttribute("data-evaluators") || "").split(" ");
        var show = (!query || haystack.indexOf(query) !== -1) && (!fam || row.getAttribute("data-family") === fam)
          && (!ev || evaluators.indexOf(ev) !== -1);
        row.hidden = !show;
        if (show) { visible += 1; }
      });
      Array.prototype.forEach.call(table.querySelectorAll("tbody.collapsed-rows"), function (body) {
        var head = body.querySelector("tr.collapsed-head");
        if (head) { head.hidden = !body.querySelector("tr.lb-row:not([hidden])"); }
      });
      if (count) {
        count.textContent = visible + " of " + rows.length + " rows";
        count.setAttribute("data-visible", String(visible));
        count.setAttribute("data-total", String(rows.length));
      }
    }

    // Fit the page: while the table is wider than its box, hide the last shown metric column (never accuracy) and
    // say so; the column chooser shows it again.
    function fitWidth() {
      var wrap = table.parentElement;
      var note = section.querySelector(".fit-note");
      var hidden = [];
      while (chooser && wrap && wrap.scrollWidth > wrap.clientWidth + 1) {
        var last = null;
        headers.forEach(function (th) {
          var of = th.getAttribute("data-evaluator");
          if (of && of !== "accuracy" && !th.hidden) { last = th; }
        });
        if (!last) { break; }
        var box = chooser.querySelector('input[data-column="' + last.getAttribute("data-column") + '"]');
        if (!box) { break; }
        box.checked = false;
        hidden.push(last.getAttribute("data-column"));
        applyColumns();
      }
      if (note) {
        note.hidden = hidden.length === 0;
        note.textContent = hidden.length ? hidden.length + " column(s) hidden to fit the page width: choose them under Columns" : "";
        note.setAttribute("data-hidden-columns", hidden.join(" "));
      }
    }

    if (text) { text.addEventListener("input", applyRows); }
    if (family) { family.addEventListener("change", applyRows); }
    if (evaluator) { evaluator.addEventListener("change", function () { applyRows(); applyColumns(); }); }
    if (chooser) { chooser.addEventListener("change", applyColumns); }
    applyColumns();
    applyRows();
    fitWidth();
  }

  Array.prototype.forEach.call(document.querySelectorAll("section.board"), setup);
})();
