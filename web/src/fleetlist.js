// The fleet list's choices: search, filters and sorting of the devices, read
// from and written to the URL ("#/?q=logger&show=failing&tag=hall-b&sort=temperature").
//
// A device's tags are those of its device document (`<MacID>_device`, "tags":
// ["magnetometer", "hall-b"]), plus, the older way, the `tags` of its code
// documents (an optional list of strings on a code document).

import {liveness, macAddress, workers} from './model.js';

export const SHOW = {
  all: 'all devices',
  silent: 'silent devices',
  failing: 'devices with failing workers',
};

export const SORT = {
  name: 'name',
  alive: 'silent first',
  failing: 'most failing workers first',
  temperature: 'hottest first',
  load: 'highest load first',
};

// A worker that is crashing or cannot run: in backoff (it crashed and waits
// for its restart), fatal (its document cannot run), or exited with an error.
export function isFailing(w) {
  const state = String(w.state || '').toLowerCase();
  if (state === 'backoff' || state === 'fatal') {
    return true;
  }
  return state === 'exited' && typeof w.last_exit_code === 'number' && w.last_exit_code !== 0;
}

export function choices(query) {
  const q = query || {};
  return {
    q: typeof q.q === 'string' ? q.q : '',
    show: SHOW[q.show] ? q.show : 'all',
    tag: typeof q.tag === 'string' ? q.tag : '',
    sort: SORT[q.sort] ? q.sort : 'name',
  };
}

// The URL's query for choices ``c``: defaults left out, so "#/" is the plain list.
export function toQuery(c) {
  return {q: c.q, show: c.show === 'all' ? '' : c.show, tag: c.tag, sort: c.sort === 'name' ? '' : c.sort};
}

function words(row) {
  const hb = row.heartbeat;
  const out = [row.device, row.name, macAddress(row.device) || ''];
  if (hb && typeof hb.ip === 'string') {
    out.push(hb.ip);
  }
  for (const w of row.workers) {
    out.push(String(w.name || ''), String(w.doc_id || ''));
  }
  out.push(...row.tags);
  return out.join('\n').toLowerCase();
}

// rows: [{device, name, heartbeat, tags}] -> the rows to show, in order.
export function applyChoices(rows, c, now) {
  const needle = c.q.trim().toLowerCase();
  const out = [];
  for (const row of rows) {
    const r = {...row, workers: workers(row.heartbeat), live: liveness(row.heartbeat, now)};
    r.failing = r.workers.filter(isFailing).length;
    if (c.show === 'silent' && r.live.state !== 'silent') {
      continue;
    }
    if (c.show === 'failing' && !r.failing) {
      continue;
    }
    if (c.tag && !r.tags.includes(c.tag)) {
      continue;
    }
    if (needle && !needle.split(/\s+/).every((part) => words(r).includes(part))) {
      continue;
    }
    out.push(r);
  }
  const figure = (r, key) => {
    const v = r.heartbeat ? r.heartbeat[key] : null;
    if (key === 'load') {
      return Array.isArray(v) && typeof v[0] === 'number' ? v[0] : -Infinity;
    }
    return typeof v === 'number' ? v : -Infinity;
  };
  const aliveRank = {silent: 0, none: 1, late: 2, fresh: 3};
  const by = {
    name: () => 0,
    alive: (a, b) => aliveRank[a.live.state] - aliveRank[b.live.state],
    failing: (a, b) => b.failing - a.failing,
    temperature: (a, b) => figure(b, 'cpu_temperature') - figure(a, 'cpu_temperature'),
    load: (a, b) => figure(b, 'load') - figure(a, 'load'),
  }[c.sort];
  out.sort((a, b) => by(a, b) || a.name.localeCompare(b.name) || a.device.localeCompare(b.device));
  return out;
}

// Every tag of the fleet, sorted.
export function allTags(rows) {
  return [...new Set(rows.flatMap((r) => r.tags))].sort((a, b) => a.localeCompare(b));
}
