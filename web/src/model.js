// What the documents mean: pure functions, no DOM, no network.

export const DEFAULT_HEARTBEAT_INTERVAL = 10;   // seconds, as the agent's default
export const SILENT_PERIODS = 3;               // as `himbeerecouch status`

const isObject = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);

// ------------------------------------------------------------------ documents
// What a document is and which device it belongs to: the same function that
// the design document's rules include (one source for both).
export {classify} from '../../himbeerecouch/ops/design/classify.js';

// A row of the view by_device: key [MacID, kind, name] (a group code
// document's: ["tag:<tag>", "group", name]).
export function classifyRow(row) {
  const key = row.key;
  if (!Array.isArray(key) || key.length < 2) {
    return null;
  }
  if (key[1] === 'group') {
    return {kind: 'group', device: null, tag: String(key[0]).slice(4)};
  }
  return {kind: String(key[1]), device: String(key[0])};
}

// A device document's name and tags (strings only).
export function deviceInfo(doc) {
  const d = doc && typeof doc === 'object' ? doc : {};
  const tags = Array.isArray(d.tags) ? d.tags.filter((t) => typeof t === 'string' && t.trim()) : [];
  return {name: typeof d.name === 'string' && d.name.trim() ? d.name.trim() : null,
    tags: tags.map((t) => t.trim())};
}

// Where the rollout of group document `doc` stands, from the heartbeats of
// the devices with its tag (`rows`: [{device, heartbeat}]) as the devices
// report it: which one runs the document's revision, which holds it back
// (waiting, paused, halted) and which rolled it back.
export function rolloutProgress(doc, rows) {
  const r = doc && isObject(doc.rollout) ? doc.rollout : {};
  const canaries = Array.isArray(r.canary) ? r.canary.map(String) : [];
  const out = rows.map(({device, heartbeat}) => {
    const entry = workers(heartbeat).find((w) => w.doc_id === doc._id) || null;
    const held = heartbeat && isObject(heartbeat.rollouts) && isObject(heartbeat.rollouts[doc._id])
      ? heartbeat.rollouts[doc._id] : null;
    return {device, canary: canaries.includes(device), entry,
      current: !!entry && entry.rev === doc._rev && !entry.rolled_back_from,
      held: held ? String(held.state) : null};
  });
  let state = 'spreading';
  if (out.some((d) => d.held === 'halted' || (d.canary && d.entry && d.entry.rolled_back_from))) {
    state = 'halted';
  } else if (out.length && out.every((d) => d.current)) {
    state = 'complete';
  } else if (r.paused === true) {
    state = 'paused';
  } else if (out.some((d) => d.held === 'waiting')) {
    state = 'waiting for the canaries';
  }
  return {state, canaries, healthyFor: r.healthy_for, paused: r.paused === true, devices: out};
}

// ------------------------------------------------------------------ device ids
const MAC_RE = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i;

// "202481587074134", "b8:27:eb:12:34:56", "b827eb123456", "0xb827eb123456" ->
// "202481587074134"; null for anything else.
export function parseMacId(text) {
  const s = String(text || '').trim();
  if (/^\d{1,16}$/.test(s)) {
    const n = Number(s);
    return Number.isSafeInteger(n) ? String(n) : null;
  }
  let hex = null;
  const m = MAC_RE.exec(s);
  if (m) {
    hex = m.slice(1).join('');
  } else if (/^(0x)?[0-9a-f]{12}$/i.test(s)) {
    hex = s.replace(/^0x/i, '');
  }
  return hex === null ? null : String(parseInt(hex, 16));
}

// "202481587074134" -> "b8:27:eb:12:34:56"
export function macAddress(macid) {
  const n = Number(macid);
  if (!Number.isSafeInteger(n) || n < 0 || n >= 2 ** 48) {
    return null;
  }
  const hex = n.toString(16).padStart(12, '0');
  return hex.match(/../g).join(':');
}

// ------------------------------------------------------------------ heartbeats
export function parseTime(text) {
  if (typeof text !== 'string' || !text) {
    return null;
  }
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t;
}

export function heartbeatInterval(hb) {
  const i = hb && hb.heartbeat_interval;
  return (typeof i === 'number' && i > 0 && Number.isFinite(i)) ? i : DEFAULT_HEARTBEAT_INTERVAL;
}

// The age of the last heartbeat against the server's clock, and what it means:
// fresh (within 1.5 periods, plus a little slack for the writer), late, silent
// (more than three periods, as `himbeerecouch status`), or none (no heartbeat).
export function liveness(hb, nowMs) {
  if (!hb) {
    return {state: 'none', age: null, interval: DEFAULT_HEARTBEAT_INTERVAL};
  }
  const interval = heartbeatInterval(hb);
  const when = parseTime(hb.timestamp) ?? parseTime(hb.sent_at);
  if (when === null) {
    return {state: 'silent', age: null, interval, unreadable: true};
  }
  const age = Math.max(0, (nowMs - when) / 1000);
  let state = 'silent';
  if (age <= interval * 1.5 + 2) {
    state = 'fresh';
  } else if (age <= interval * SILENT_PERIODS) {
    state = 'late';
  }
  return {state, age, interval, stopped: hb.state === 'stopped'};
}

// What the page cannot use in a heartbeat document, or null.
export function heartbeatProblem(hb) {
  if (hb.workers !== undefined && !Array.isArray(hb.workers)) {
    return '"workers" is not a list';
  }
  if (Array.isArray(hb.workers) && hb.workers.some((w) => !isObject(w))) {
    return '"workers" holds something that is not an object';
  }
  if (parseTime(hb.timestamp) === null && parseTime(hb.sent_at) === null) {
    return 'no readable "timestamp"';
  }
  return null;
}

export function workers(hb) {
  return hb && Array.isArray(hb.workers) ? hb.workers.filter(isObject) : [];
}

const STATE_ORDER = ['running', 'starting', 'backoff', 'stopping', 'exited', 'fatal', 'stopped'];

// [["running", 3], ["fatal", 1]] in a stable order.
export function workerCounts(list) {
  const counts = new Map();
  for (const w of list) {
    const s = String(w.state || 'unknown').toLowerCase();
    counts.set(s, (counts.get(s) || 0) + 1);
  }
  const rank = (s) => {
    const i = STATE_ORDER.indexOf(s);
    return i < 0 ? STATE_ORDER.length : i;
  };
  return [...counts.entries()].sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
}

export function stateTone(state) {
  const s = String(state || '').toLowerCase();
  if (s === 'running') {
    return 'good';
  }
  if (s === 'fatal' || s === 'backoff') {
    return 'bad';
  }
  if (s === 'starting' || s === 'stopping') {
    return 'warn';
  }
  return 'neutral';
}

// ------------------------------------------------------------------ code documents
const SOURCE_KEYS = ['code', 'modules', 'global_modules'];

// What the editor can edit of a code document, or why it cannot.
export function parseCode(doc) {
  for (const key of ['modules', 'global_modules']) {
    const v = doc[key];
    if (v === undefined || v === null) {
      continue;
    }
    if (!isObject(v)) {
      return {problem: `"${key}" is ${describe(v)}, not an object of module name -> source`};
    }
    for (const [name, src] of Object.entries(v)) {
      if (typeof src !== 'string') {
        return {problem: `module "${name}" in "${key}" is ${describe(src)}, not source text`};
      }
    }
  }
  if (doc.code !== undefined && doc.code !== null && typeof doc.code !== 'string') {
    return {problem: `"code" is ${describe(doc.code)}, not source text`};
  }
  if (doc.name !== undefined && doc.name !== null && typeof doc.name !== 'string') {
    return {problem: `"name" is ${describe(doc.name)}, not text`};
  }
  return {
    problem: null,
    name: doc.name || '',
    code: doc.code || '',
    modules: {...(doc.modules || {})},
    global_modules: {...(doc.global_modules || {})},
  };
}

function describe(v) {
  if (v === null) {
    return 'null';
  }
  if (Array.isArray(v)) {
    return 'a list';
  }
  return 'a ' + typeof v;
}

// The document to save: the loaded one with its _rev and every key the page does
// not edit (restart, limits, timestamp, created_by, ...), and the edited sources.
// An empty main module or empty module maps are left out, as the CLI does.
export function editedDocument(base, edit) {
  const doc = {...base};
  doc.name = edit.name;
  for (const key of SOURCE_KEYS) {
    delete doc[key];
  }
  if (edit.code.trim()) {
    doc.code = edit.code;
  }
  if (Object.keys(edit.modules).length) {
    doc.modules = {...edit.modules};
  }
  if (Object.keys(edit.global_modules).length) {
    doc.global_modules = {...edit.global_modules};
  }
  return doc;
}

// Python identifier, not private, not the main module of the document.
export function moduleNameProblem(name, taken) {
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) {
    return 'a module name is a Python identifier that does not start with "_" (letters, digits, _)';
  }
  if (taken.includes(name)) {
    return `there is already a module "${name}"`;
  }
  return null;
}

export function slug(name) {
  const s = String(name).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  return s.slice(0, 60) || 'code';
}

// RFC 1123, the only format the lab's validation accepts in "timestamp".
export function rfc1123(ms) {
  return new Date(ms).toUTCString();
}

export function isoSeconds(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// ------------------------------------------------------------------ commands
// A command line -> argv, as a POSIX shell would split it (quotes and
// backslashes), without running a shell.
export function splitCommand(text) {
  const argv = [];
  let cur = '';
  let have = false;
  let i = 0;
  const s = String(text);
  while (i < s.length) {
    const c = s[i];
    if (c === '\\') {
      if (i + 1 < s.length) {
        cur += s[i + 1];
        have = true;
      }
      i += 2;
    } else if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) {
        throw new Error('unterminated single quote');
      }
      cur += s.slice(i + 1, end);
      have = true;
      i = end + 1;
    } else if (c === '"') {
      i += 1;
      let closed = false;
      while (i < s.length) {
        const d = s[i];
        if (d === '"') {
          closed = true;
          i += 1;
          break;
        }
        if (d === '\\' && i + 1 < s.length && '"\\$`'.includes(s[i + 1])) {
          cur += s[i + 1];
          i += 2;
        } else {
          cur += d;
          i += 1;
        }
      }
      if (!closed) {
        throw new Error('unterminated double quote');
      }
      have = true;
    } else if (/\s/.test(c)) {
      if (have) {
        argv.push(cur);
      }
      cur = '';
      have = false;
      i += 1;
    } else {
      cur += c;
      have = true;
      i += 1;
    }
  }
  if (have) {
    argv.push(cur);
  }
  return argv;
}

export function quoteArg(arg) {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : "'" + arg.replace(/'/g, "'\\''") + "'";
}

export function commandLine(cmd) {
  return Array.isArray(cmd) ? cmd.map((a) => quoteArg(String(a))).join(' ') : String(cmd);
}

// queued, running, done, failed (an error, or an exit code other than 0) or
// cancelled (by an operator, before a device claimed it).
export function commandStatus(doc) {
  if (doc.cancelled_at && doc.ret === undefined) {
    return 'cancelled';
  }
  if (doc.ret !== undefined || doc.exit_code !== undefined) {
    const nonZero = typeof doc.exit_code === 'number' && doc.exit_code !== 0;
    return doc.error || nonZero ? 'failed' : 'done';
  }
  if (doc.error) {
    return 'failed';
  }
  if (doc.claimed_at) {
    return 'running';
  }
  return 'queued';
}

// Where the worker says its code does not compile: "SyntaxError: ... (main.py,
// line 3)" -> {file: 'code', line: 3}; a module's file -> 'm:NAME' or 'g:NAME'
// (whichever the document has).  null when the error names no line.
export function reportedLine(error, doc) {
  const m = /\((\w+)\.py, line (\d+)\)/.exec(typeof error === 'string' ? error : '');
  if (!m) {
    return null;
  }
  const name = m[1];
  const has = (key) => doc && doc[key] && typeof doc[key] === 'object' && name in doc[key];
  let file = 'code';
  if (has('modules') && !(name === 'main' && doc.code)) {
    file = 'm:' + name;
  } else if (has('global_modules')) {
    file = 'g:' + name;
  } else if (name !== 'main') {
    return null;
  }
  return {file, line: Number(m[2])};
}

export function commandOutput(doc) {
  const ret = Array.isArray(doc.ret) ? doc.ret : [];
  const text = (x) => (typeof x === 'string' ? x : (x === undefined || x === null ? '' : JSON.stringify(x)));
  return {stdout: text(ret[0]), stderr: text(ret[1])};
}

// ------------------------------------------------------------------ logs
export function logLines(doc) {
  if (!doc || !Array.isArray(doc.lines)) {
    return [];
  }
  return doc.lines
    .filter((l) => Array.isArray(l) && l.length >= 3)
    .map((l) => ({time: String(l[0]), stream: String(l[1]), text: String(l[2])}));
}

// ------------------------------------------------------------------ formatting
export function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) {
    return '–';
  }
  const s = Math.max(0, Math.floor(seconds));
  if (s < 120) {
    return s + ' s';
  }
  if (s < 7200) {
    return Math.floor(s / 60) + ' min';
  }
  if (s < 172800) {
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }
  return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
}

export function number(x, digits = 1, unit = '') {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) + unit : '–';
}

export function loadText(load) {
  if (Array.isArray(load) && load.length) {
    return load.slice(0, 3).map((x) => number(x, 2)).join(' ');
  }
  return typeof load === 'number' ? number(load, 2) : '–';
}
