// What the page knows of the database, kept current by its _changes feed.
//
// docs:  id -> the newest revision seen of every heartbeat, code, command and
//        log document the page has loaded or that came by the feed;
// index: id -> {kind, device} of every such document the database holds (from
//        the view by_device), so that the fleet lists devices that have code
//        but no heartbeat yet without loading every document.
//
// The feed starts at the database's update_seq read *before* the first load,
// so nothing that changes while the page loads is missed, and resumes from the
// last sequence it processed after a lost connection or an expired session.

import {CouchError} from './couch.js';
import {classify, classifyRow, deviceInfo} from './model.js';

const FEED_HEARTBEAT = 15000;   // ms: the server sends a newline this often
const FEED_CLIENT_TIMEOUT = 60000; // ms: a long poll is closed and reopened after this
const RETRY_FIRST = 1000;
const RETRY_MAX = 15000;
const RECENT_COMMANDS = 20;
// Every change but the devices' history and log archives (large; read on demand).
const PAGE_FILTER = 'page';

function latestCommands(device, count) {
  return {startkey: [device, 'cmd', {}], endkey: [device, 'cmd'], descending: true, limit: count,
    include_docs: true};
}

export class Store {
  constructor(couch) {
    this.couch = couch;
    this.listeners = new Set();
    this.reset();
  }

  reset() {
    this.docs = new Map();
    this.index = new Map();
    this.devices = new Map();        // MacID -> 'loading' | 'ready' | CouchError
    this.seq = null;
    this.loaded = false;
    this.loadError = null;
    this.connection = {state: 'ok', message: '', retryAt: 0};
    this.running = false;
    this.paused = false;
    this._abort = null;
    this._wake = null;
    this.version = 0;
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit() {
    this.version += 1;
    for (const fn of [...this.listeners]) {
      fn(this.version);
    }
  }

  // ------------------------------------------------------------ loading
  async start() {
    this.running = true;
    this.paused = false;
    try {
      await this.load();
    } catch (e) {
      this.loadError = e;
      this.emit();
      if (e instanceof CouchError && e.status === 401) {
        return;             // the session handler takes over
      }
      // Keep trying: a server that is down now may answer soon.
      this._lost(e);
      await this._sleep(this._delay());
      if (this.running && !this.paused) {
        return this.start();
      }
      return;
    }
    this.follow();
  }

  async load() {
    const info = await this.couch.info();
    const seq = info.update_seq;
    const [beats, rows, groups] = await Promise.all([
      this.couch.view('heartbeats', {include_docs: true}),
      this.couch.view('by_device', {}),
      // Group code documents (few), whole: their page shows the rollout.
      this.couch.view('by_device', {startkey: ['tag:'], endkey: ['tag:\ufff0', {}], include_docs: true}),
    ]);
    for (const row of rows.rows || []) {
      const c = classifyRow(row);
      if (c) {
        if (c.kind === 'code') {
          c.tags = tagsOf(row.value);
        } else if (c.kind === 'device') {
          Object.assign(c, deviceInfo(row.value));
        }
        this.index.set(row.id, c);
      }
    }
    for (const row of [...(beats.rows || []), ...(groups.rows || [])]) {
      if (row.doc) {
        this._apply(row.doc);
      }
    }
    this.seq = seq;
    this.loaded = true;
    this.loadError = null;
    this._ok();
    this.emit();
  }

  // The `count` latest commands of a device (the page pages back on request);
  // how many there were, so that fewer than asked means there are no more.
  async loadCommands(device, count) {
    const result = await this.couch.view('by_device', latestCommands(device, count));
    const rows = (result.rows || []).filter((row) => row.doc);
    rows.forEach((row) => this._apply(row.doc));
    this.emit();
    return rows.length;
  }

  // All of one device's code and log documents and its latest commands.
  async loadDevice(device, force = false) {
    const state = this.devices.get(device);
    if (!force && (state === 'loading' || state === 'ready')) {
      return;
    }
    this.devices.set(device, 'loading');
    this.emit();
    try {
      const span = (kind) => ({startkey: [device, kind], endkey: [device, kind, {}]});
      const [code, logs, cmds, beat] = await Promise.all([
        this.couch.view('by_device', {...span('code'), include_docs: true}),
        this.couch.view('by_device', {...span('log'), include_docs: true}),
        this.couch.view('by_device', latestCommands(device, RECENT_COMMANDS)),
        this.couch.view('by_device', {...span('heartbeat'), include_docs: true}),
      ]);
      for (const result of [code, logs, cmds, beat]) {
        for (const row of result.rows || []) {
          if (row.doc) {
            this._apply(row.doc);
          }
        }
      }
      this.devices.set(device, 'ready');
    } catch (e) {
      this.devices.set(device, e);
    }
    this.emit();
  }

  // ------------------------------------------------------------ the feed
  async follow() {
    if (this._following) {
      return;
    }
    this._following = true;
    try {
      while (this.running && !this.paused) {
        const abort = new AbortController();
        this._abort = abort;
        const timer = setTimeout(() => abort.abort(), FEED_CLIENT_TIMEOUT);
        try {
          const r = await this.couch.changes({
            feed: 'longpoll', since: this.seq, include_docs: true,
            filter: this.couch.loc.design.replace(/^_design\//, '') + '/' + PAGE_FILTER,
            heartbeat: FEED_HEARTBEAT, timeout: FEED_CLIENT_TIMEOUT - 5000,
          }, abort.signal);
          for (const change of r.results || []) {
            this._change(change);
          }
          if (r.last_seq !== undefined) {
            this.seq = r.last_seq;
          }
          this._ok();
          this.emit();
        } catch (e) {
          if (e && e.name === 'AbortError') {
            continue;        // our own timeout, going offline, or stop()
          }
          if (e instanceof CouchError && e.status === 401) {
            this.paused = true;   // resumed after a new login
            break;
          }
          this._lost(e);
          await this._sleep(this._delay());
        } finally {
          clearTimeout(timer);
          this._abort = null;
        }
      }
    } finally {
      this._following = false;
    }
  }

  _change(change) {
    if (change.deleted) {
      this.docs.delete(change.id);
      this.index.delete(change.id);
      return;
    }
    if (change.doc) {
      this._apply(change.doc);
    }
  }

  _apply(doc) {
    const c = classify(doc);
    if (c.kind === 'other') {
      return;
    }
    const old = this.docs.get(doc._id);
    if (old && revNumber(old._rev) > revNumber(doc._rev)) {
      return;           // an older revision (a load racing the feed)
    }
    if (c.kind === 'code') {
      c.tags = tagsOf(doc);
    } else if (c.kind === 'device') {
      Object.assign(c, deviceInfo(doc));
    }
    this.docs.set(doc._id, doc);
    this.index.set(doc._id, c);
  }

  // A document the page itself just wrote (the feed brings it too).
  remember(doc) {
    this._apply(doc);
    this.emit();
  }

  forget(id) {
    this.docs.delete(id);
    this.index.delete(id);
    this.emit();
  }

  // ------------------------------------------------------------ connection
  _ok() {
    if (this.connection.state !== 'ok') {
      this.connection = {state: 'ok', message: '', retryAt: 0, failures: 0};
      this._forgetFailedDevices();    // the views load them again
      this.emit();
    }
  }

  _forgetFailedDevices() {
    for (const [device, state] of this.devices) {
      if (state instanceof CouchError) {
        this.devices.delete(device);
      }
    }
  }

  _lost(e) {
    const failures = (this.connection.failures || 0) + 1;
    let message;
    if (e instanceof CouchError) {
      message = e.offline ? 'The connection to the database server is lost.'
        : `The database server answered ${e.status}${e.reason ? ': ' + e.reason : ''}.`;
    } else {
      message = String(e && e.message ? e.message : e);
    }
    this.connection = {state: 'lost', message, failures,
      retryAt: Date.now() + this._delay(failures)};
    this.emit();
  }

  _delay(failures = this.connection.failures || 1) {
    return Math.min(RETRY_MAX, RETRY_FIRST * 2 ** Math.max(0, failures - 1));
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this._wake = done;
    }).finally(() => {
      this._wake = null;
    });
  }

  // "Retry now", coming back online, a new login.
  retryNow() {
    if (this._wake) {
      this._wake();
    }
  }

  offline() {
    if (this._abort) {
      this._abort.abort();
    }
    this._lost(new CouchError(0, 'offline', 'this computer is offline'));
  }

  resume() {
    this.paused = false;
    this.running = true;
    if (!this.loaded) {
      this.start();
      return;
    }
    this._forgetFailedDevices();
    this.follow();
    this.retryNow();
  }

  stop() {
    this.running = false;
    if (this._abort) {
      this._abort.abort();
    }
    this.retryNow();
  }

  // ------------------------------------------------------------ queries
  ofDevice(device, kind) {
    const out = [];
    for (const [id, c] of this.index) {
      if (c.device === device && c.kind === kind) {
        const doc = this.docs.get(id);
        if (doc) {
          out.push(doc);
        }
      }
    }
    return out;
  }

  heartbeat(device) {
    return this.docs.get(device + '_heartbeat') || null;
  }

  // The group code documents, by name.
  groups() {
    const out = [];
    for (const [id, c] of this.index) {
      if (c.kind === 'group' && this.docs.get(id)) {
        out.push(this.docs.get(id));
      }
    }
    return out.sort((a, b) => String(a.name || a._id).localeCompare(String(b.name || b._id)));
  }

  // Every device the page knows of: MacID -> {heartbeat, code: count, tags,
  // label}.  The device document's tags (and name: the label) come first; the
  // `tags` of its code documents (the older way) are added to them.
  fleet() {
    const devices = new Map();
    const entry = (d) => {
      if (!devices.has(d)) {
        devices.set(d, {device: d, heartbeat: null, code: 0, tags: [], label: null});
      }
      return devices.get(d);
    };
    for (const [id, c] of this.index) {
      if (!c.device) {
        continue;
      }
      const e = entry(c.device);
      if (c.kind === 'heartbeat') {
        e.heartbeat = this.docs.get(id) || null;
      } else if (c.kind === 'device') {
        e.label = c.name;
        e.tags = [...new Set([...c.tags, ...e.tags])];
      } else if (c.kind === 'code') {
        e.code += 1;
        for (const tag of c.tags || []) {
          if (!e.tags.includes(tag)) {
            e.tags.push(tag);
          }
        }
      }
    }
    return devices;
  }
}

// The tags of a code document (or of its row's value): a list of strings.
function tagsOf(doc) {
  const tags = doc && Array.isArray(doc.tags) ? doc.tags : [];
  return tags.filter((t) => typeof t === 'string' && t.trim()).map((t) => t.trim());
}

function revNumber(rev) {
  const n = parseInt(String(rev || '0'), 10);
  return Number.isNaN(n) ? 0 : n;
}
