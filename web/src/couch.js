// The page's only way to the server: fetch() to the origin it was loaded from.
//
// The page lives at  <root>/<page db>/_design/himbeerecouch/index.html?db=<db>
// (the fleet database's name URL-encoded, "nedm%2Fraspberries"), so the
// database and the server root come from its own address.  Every request is
// relative to that origin: the page never talks to any other host.

export class CouchError extends Error {
  // status: the HTTP status (0: no answer at all), error/reason: CouchDB's words.
  constructor(status, error, reason) {
    super(reason || error || (status ? 'HTTP ' + status : 'no answer'));
    this.status = status;
    this.error = error || '';
    this.reason = reason || '';
  }
  get offline() {
    return this.status === 0;
  }
}

export function locate(pathname, search = '') {
  const marker = pathname.indexOf('/_design/');
  if (marker < 0) {
    throw new Error('the page must be opened as <server>/<database>/_design/himbeerecouch/index.html');
  }
  const pagePath = pathname.slice(0, marker);        // "/prefix/himbeerecouch"
  const slash = pagePath.lastIndexOf('/');
  const root = pagePath.slice(0, slash);             // "" or "/prefix"
  // The fleet database is named in the address (?db=nedm%2Fraspberries) when
  // the page lives in the page database; else the page is in the fleet's own.
  const asked = new URLSearchParams(search).get('db');
  const dbName = asked || decodeURIComponent(pagePath.slice(slash + 1));
  const dbPath = root + '/' + encodeURIComponent(dbName);
  return {root, dbPath, design: '_design/himbeerecouch', dbName};
}

export function quoteId(id) {
  // Design documents keep their slash; every other id is one path segment.
  if (id.startsWith('_design/')) {
    return '_design/' + encodeURIComponent(id.slice(8));
  }
  return encodeURIComponent(id);
}

function query(params) {
  const parts = [];
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null) {
      continue;
    }
    const text = (k === 'key' || k === 'startkey' || k === 'endkey' || k === 'keys')
      ? JSON.stringify(v) : String(v);
    parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(text));
  }
  return parts.length ? '?' + parts.join('&') : '';
}

export class Couch {
  constructor(location) {
    this.loc = location;
    this.skew = 0;              // server clock - our clock, ms (from Date headers)
    this.onUnauthorized = null; // called when the session ran out
  }

  // Now, by the server's clock (ms since the epoch).
  now() {
    return Date.now() + this.skew;
  }

  // The Date header says the server's second when it answered: the skew lies
  // in [date - received, date + 1000 - sent].  Intersecting these intervals over
  // the responses narrows it down (to well under a second) instead of jumping
  // by up to a second with every answer; a clock that jumped starts over.
  _clock(response, sentAt) {
    const date = response.headers.get('Date');
    const when = date ? Date.parse(date) : NaN;
    if (Number.isNaN(when)) {
      return;
    }
    const lo = when - Date.now();
    const hi = when + 1000 - sentAt;
    if (this._skewRange && lo <= this._skewRange[1] && hi >= this._skewRange[0]) {
      this._skewRange = [Math.max(lo, this._skewRange[0]), Math.min(hi, this._skewRange[1])];
    } else {
      this._skewRange = [lo, hi];
    }
    this.skew = (this._skewRange[0] + this._skewRange[1]) / 2;
  }

  async request(method, path, {body, params, signal, raw} = {}) {
    const url = path + query(params);
    const headers = {Accept: 'application/json'};
    const init = {method, headers, credentials: 'same-origin', cache: 'no-store', signal};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const sentAt = Date.now();
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      if (e && e.name === 'AbortError') {
        throw e;
      }
      throw new CouchError(0, 'offline', 'the database server cannot be reached');
    }
    this._clock(response, sentAt);
    let text;
    try {
      text = await response.text();
    } catch (e) {
      if (e && e.name === 'AbortError') {
        throw e;
      }
      throw new CouchError(0, 'offline', 'the connection to the database server broke');
    }
    let data = null;
    if (text.trim()) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        if (!response.ok) {
          throw new CouchError(response.status, 'bad_response', text.slice(0, 200));
        }
        if (!raw) {
          throw new CouchError(response.status, 'bad_response',
            'the server answered something that is not JSON');
        }
      }
    }
    if (!response.ok) {
      const err = new CouchError(response.status, data && data.error, data && data.reason);
      if (response.status === 401 && this.onUnauthorized && !path.endsWith('/_session')) {
        this.onUnauthorized(err);
      }
      throw err;
    }
    return raw ? {data, text, headers: response.headers} : data;
  }

  // ------------------------------------------------------------ session
  session() {
    return this.request('GET', this.loc.root + '/_session');
  }

  login(name, password) {
    return this.request('POST', this.loc.root + '/_session', {body: {name, password}});
  }

  logout() {
    return this.request('DELETE', this.loc.root + '/_session');
  }

  // ------------------------------------------------------------ database
  db(path = '', opts) {
    return this.request((opts && opts.method) || 'GET',
      this.loc.dbPath + (path ? '/' + path : ''), opts);
  }

  info() {
    return this.db('');
  }

  get(id) {
    return this.db(quoteId(id));
  }

  // The document, or null when there is none, without a 404 in the browser's
  // console (a document that may not exist yet: a device's history).
  async find(id) {
    const answer = await this.db('_all_docs', {params: {keys: [id], include_docs: true}});
    const row = (answer.rows || [])[0];
    return (row && row.doc) || null;
  }

  put(doc) {
    return this.db(quoteId(doc._id), {method: 'PUT', body: doc});
  }

  remove(id, rev) {
    return this.db(quoteId(id), {method: 'DELETE', params: {rev}});
  }

  view(name, params) {
    return this.db(this.loc.design + '/_view/' + name, {params});
  }

  changes(params, signal) {
    return this.db('_changes', {params, signal});
  }
}
