// The hall board. Live from /board/events (server-sent events): `board` (the board JSON) on
// every change and every few seconds, `windows` (the grid) when a window changes. EventSource
// reconnects by itself after a gateway restart; if the browser gives up (an error answer), or
// nothing arrives for STALE_MS, the page opens the stream again itself: it never needs a reload.
"use strict";

const STALE_MS = 40000; // the gateway sends at least every 15 s; past this the link is dead
const REOPEN_MS = 3000; // a closed stream is opened again after this
const PAGE_MS = 8000; // a list longer than its panel pages through, this long per page
const WEEKDAYS = "日一二三四五六";
const REASONS = { official: "因公", private: "因私" };

let board = null;
let grid = [];
let offsetMs = 0; // hall clock minus this screen's clock, from each event's `ts`
let zoneMin = 480; // the hall's UTC offset, from `ts`
let lastEvent = 0;
let source = null;
let page = 0;

const $ = (id) => document.getElementById(id);

function parseTs(ts) {
  const m = /([+-])(\d\d):(\d\d)$/.exec(ts);
  if (m) zoneMin = (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
  return Date.parse(ts);
}

function hallNow() {
  return new Date(Date.now() + offsetMs + zoneMin * 60000); // read with getUTC*
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

function hhmm(ts) {
  return ts ? ts.slice(11, 16) : "";
}

function minutesSince(ts) {
  return Math.max(0, Math.floor((Date.now() + offsetMs - Date.parse(ts)) / 60000));
}

function duration(min) {
  return min >= 60 ? `${Math.floor(min / 60)}小时${min % 60}分` : `${min}分钟`;
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function tick() {
  const t = hallNow();
  $("date").textContent =
    `${t.getUTCFullYear()}年${t.getUTCMonth() + 1}月${t.getUTCDate()}日 星期${WEEKDAYS[t.getUTCDay()]}`;
  $("time").textContent = `${pad2(t.getUTCHours())}:${pad2(t.getUTCMinutes())}:${pad2(t.getUTCSeconds())}`;
  if (source && Date.now() - lastEvent > STALE_MS) reopen();
}

function setLive(state) {
  const el = $("live");
  el.dataset.state = state;
  $("live-text").textContent = { live: "实时", connecting: "连接中", lost: "重新连接中" }[state];
}

// rows that fit a panel; a longer list pages through
function capacity(tbodyId) {
  const panel = $(tbodyId).closest(".panel");
  const head = panel.querySelector("h2").offsetHeight + panel.querySelector("thead").offsetHeight;
  return Math.max(1, Math.floor((panel.clientHeight - head - 36) / 61));
}

function pageOf(items, size, label) {
  const pages = Math.max(1, Math.ceil(items.length / size));
  const index = page % pages;
  $(label).textContent = pages > 1 ? `第${index + 1}/${pages}页` : "";
  return items.slice(index * size, index * size + size);
}

function renderOut() {
  const items = board.out;
  $("out-n").textContent = items.length;
  $("out-empty").style.display = items.length ? "none" : "";
  const body = $("out-rows");
  body.replaceChildren();
  for (const item of pageOf(items, capacity("out-rows"), "out-page")) {
    const tr = document.createElement("tr");
    if (item.overdue) tr.className = "overdue";
    tr.append(
      text("td", item.name, "name"),
      text("td", item.window_name || "—"),
      text("td", REASONS[item.reason] || item.reason),
      text("td", hhmm(item.since), "num"),
    );
    const back = text("td", hhmm(item.expected_back), "num");
    if (item.overdue) back.append(text("span", `超时${minutesSince(item.expected_back)}分`, "badge"));
    tr.append(back);
    body.append(tr);
  }
}

function renderOff() {
  const items = board.off_post;
  $("off-n").textContent = items.length;
  $("off-empty").style.display = items.length ? "none" : "";
  const body = $("off-rows");
  body.replaceChildren();
  for (const item of pageOf(items, capacity("off-rows"), "off-page")) {
    const tr = document.createElement("tr");
    tr.append(
      text("td", item.name, "name"),
      text("td", item.window_name || "—"),
      text("td", hhmm(item.since), "num"),
      text("td", duration(minutesSince(item.since)), "num dur"),
    );
    body.append(tr);
  }
}

function renderUnattended() {
  const items = board.unattended_windows;
  $("un-n").textContent = items.length;
  $("un-empty").style.display = items.length ? "none" : "";
  const chips = $("un-chips");
  chips.replaceChildren();
  for (const item of items) {
    const chip = text("span", item.name || item.window_id, "chip");
    chip.append(text("small", `${hhmm(item.since)}起`));
    chips.append(chip);
  }
}

function renderCounts() {
  const c = board.counts;
  const cards = [
    ["在岗", c.on_post + c.standby, "ok", c.standby ? `其中B岗待岗 ${c.standby}` : ""],
    ["外出", c.out, board.out.some((i) => i.overdue) ? "alert" : "warn"],
    ["离岗", c.off_post, c.off_post ? "alert" : ""],
    ["请假", c.on_leave, ""],
    ["未到岗", c.not_arrived, c.not_arrived ? "warn" : ""],
    ["空岗窗口", c.unattended, c.unattended ? "alert" : ""],
  ];
  const box = $("counts");
  box.replaceChildren();
  for (const [label, value, cls, note] of cards) {
    const card = text("div", "", `count ${cls}`);
    card.append(text("div", String(value), "v"), text("div", label, "k"));
    if (note) card.append(text("div", note, "note"));
    box.append(card);
  }
  document.body.classList.toggle("offduty", c.off_duty === c.staff_total && c.staff_total > 0);
}

function renderLeave() {
  const names = board.on_leave.map((i) => i.name);
  $("leave").textContent = names.length ? `今日请假（${names.length}人）：${names.join("、")}` : "今日请假：无";
  $("updated").textContent = `· ${hhmm(board.ts)}:${board.ts.slice(17, 19)}`;
}

function shortName(item) {
  const m = /(\d+)/.exec(item.name || "");
  return m ? m[1] : item.window_id;
}

function renderGrid() {
  const floors = new Map();
  for (const w of grid) {
    if (!floors.has(w.floor)) floors.set(w.floor, []);
    floors.get(w.floor).push(w);
  }
  const box = $("floors");
  box.replaceChildren();
  const small = grid.length > 40;
  for (const floor of [...floors.keys()].sort((a, b) => a - b)) {
    const row = text("div", "", "floor");
    row.append(text("div", `${floor}楼`, "label"));
    const tiles = text("div", "", small ? "tiles small" : "tiles");
    for (const w of floors.get(floor)) {
      const tile = text("div", shortName(w), `tile ${w.status}`);
      tile.title = `${w.name}`;
      tiles.append(tile);
    }
    row.append(tiles);
    box.append(row);
  }
}

function render() {
  if (!board) return;
  renderOut();
  renderOff();
  renderUnattended();
  renderCounts();
  renderLeave();
}

function open() {
  setLive("connecting");
  source = new EventSource("/board/events");
  lastEvent = Date.now();
  source.addEventListener("board", (e) => {
    board = JSON.parse(e.data);
    offsetMs = parseTs(board.ts) - Date.now();
    lastEvent = Date.now();
    setLive("live");
    render();
    tick();
  });
  source.addEventListener("windows", (e) => {
    grid = JSON.parse(e.data);
    lastEvent = Date.now();
    renderGrid();
  });
  source.onerror = () => {
    setLive("lost");
    if (source.readyState === EventSource.CLOSED) {
      source = null;
      setTimeout(open, REOPEN_MS);
    }
  };
}

function reopen() {
  if (source) source.close();
  source = null;
  setLive("lost");
  setTimeout(open, REOPEN_MS);
}

setInterval(tick, 1000);
setInterval(() => {
  page += 1;
  render();
}, PAGE_MS);
tick();
open();
