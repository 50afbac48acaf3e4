#!/usr/bin/env node
// A CouchDB-protocol server for the himbeerecouch tests: express-pouchdb on
// PouchDB 9, bound to 127.0.0.1 only.
//
//   node --unhandled-rejections=warn server.js --port N [--data DIR] [--exit-with-parent]
//
// Without --data every database lives in memory and the server works in a fresh
// temporary folder (removed on exit), so admins written to config.json never leak
// from one run into the next.  With --data DIR the leveldb files, config.json and
// log.txt all live in DIR, and a restart on the same DIR keeps everything.
//
// Prints exactly one line "listening on http://127.0.0.1:PORT" once it accepts
// connections (with --port 0 the kernel picks PORT).  Exits at once on SIGTERM and
// SIGINT: closing the HTTP server gracefully would wait forever on open continuous
// _changes feeds.  With --exit-with-parent it also exits when the process that
// started it goes away (the test fixtures use that, so that a test run killed
// outright leaves no server behind).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');

const HOST = '127.0.0.1';

function usage(message) {
  if (message) {
    process.stderr.write(message + '\n');
  }
  process.stderr.write('usage: node server.js --port N [--data DIR] [--exit-with-parent]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const args = { port: null, data: null, exitWithParent: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--exit-with-parent') {
      args.exitWithParent = true;
      continue;
    }
    let name = arg;
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq !== -1) {
      name = arg.slice(0, eq);
      value = arg.slice(eq + 1);
    }
    if (name !== '--port' && name !== '--data') {
      usage('unknown argument: ' + arg);
    }
    if (value === undefined) {
      i += 1;
      if (i >= argv.length) {
        usage('missing value for ' + name);
      }
      value = argv[i];
    }
    args[name.slice(2)] = value;
  }
  if (args.port === null || !/^\d+$/.test(args.port) || Number(args.port) > 65535) {
    usage('--port N is required (0 <= N <= 65535)');
  }
  args.port = Number(args.port);
  return args;
}

const args = parseArgs(process.argv.slice(2));

// Where the server works: config.json, log.txt (and, on disk, the databases).
let workDir;
let tempDir = null;
if (args.data) {
  workDir = path.resolve(args.data);
  fs.mkdirSync(workDir, { recursive: true });
} else {
  tempDir = fs.mkdtempSync(path.join(os.tmpdir(), 'himbeere-testserver-'));
  workDir = tempDir;
}
process.chdir(workDir);

function removeTempDir() {
  if (tempDir) {
    try {
      fs.rmSync(tempDir, { recursive: true, force: true });
    } catch (e) {
      // nothing to do: the folder is only a temporary one
    }
    tempDir = null;
  }
}

function exitNow(code) {
  removeTempDir();
  process.exit(code);
}

process.on('SIGTERM', () => exitNow(0));
process.on('SIGINT', () => exitNow(0));
process.on('exit', removeTempDir);

if (args.exitWithParent) {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) {
      exitNow(0);
    }
  }, 500).unref();
}

// Some express-pouchdb error paths reject promises nobody handles; with no handler
// node >= 15 would crash the whole server.  Log them and keep serving (node warns
// by itself when launched with --unhandled-rejections=warn, as the tests do).
// Such a request may never get an answer: every client call needs a timeout.
const nodeWarns = process.execArgv.some((a) => a.startsWith('--unhandled-rejections'));
process.on('unhandledRejection', (reason) => {
  if (!nodeWarns) {
    const text = reason && reason.stack ? reason.stack : String(reason);
    process.stderr.write('unhandled rejection: ' + text + '\n');
  }
});

const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-leveldb'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-mapreduce'))
  .plugin(require('pouchdb-replication'))
  .plugin(require('pouchdb-find'));

const ServerPouchDB = args.data
  ? PouchDB.defaults({ adapter: 'leveldb', prefix: workDir + path.sep })
  : PouchDB.defaults({ adapter: 'memory' });

// express-pouchdb 4.2.0 runs every database creation, opening and deletion on one
// global promise chain that never recovers once a step of it rejects: after a
// single refused DELETE /db (by a non-admin) every later database request hangs.
// Replace both helpers, before express-pouchdb loads the modules that use them,
// with versions whose chain survives a failed step.  A refused deletion also
// leaves the database in the cache (the original dropped it before trying).
const dbLifecycle = require('express-pouchdb/lib/create-or-delete-dbs');
let lifecycleChain = Promise.resolve();

function sequentially(step) {
  const result = lifecycleChain.then(step);
  lifecycleChain = result.catch(() => {});
  return result;
}

function dbCache(Pouch) {
  if (!Pouch.__dbCacheMap) {
    Pouch.__dbCacheMap = new Map();
  }
  return Pouch.__dbCacheMap;
}

dbLifecycle.getOrCreateDB = function getOrCreateDB(Pouch, name) {
  return sequentially(() => {
    const cache = dbCache(Pouch);
    let db = cache.get(name);
    if (!db) {
      db = new Pouch(name);
      cache.set(name, db);
    }
    return db;
  });
};

dbLifecycle.deleteDB = function deleteDB(Pouch, name, opts) {
  return sequentially(() => {
    const cache = dbCache(Pouch);
    const db = cache.get(name);
    if (!db) {
      return Pouch.destroy(name, opts);
    }
    return db.destroy(opts).then((result) => {
      if (cache.get(name) === db) {
        cache.delete(name);
      }
      return result;
    });
  });
};

const express = require('express');
const expressPouchDB = require('express-pouchdb');

const pouchApp = expressPouchDB(ServerPouchDB, {
  mode: 'fullCouchDB',
  configPath: path.join(workDir, 'config.json'),
  logPath: path.join(workDir, 'log.txt'),
  // No gzip: compression buffers the continuous _changes feed for every client
  // that sends Accept-Encoding: gzip, so changes and heartbeats arrive late.
  overrideMode: { exclude: ['compression'] },
});

const app = express();
app.disable('x-powered-by');

// express-pouchdb ignores a POSTed {"selector": ...} on _changes (CouchDB 2+ takes
// the selector from the body when filter=_selector).  Parse that body here and
// hand the selector to PouchDB through the query, which express-pouchdb passes on
// to db.changes().  body-parser marks the request as parsed, so express-pouchdb's
// own JSON parser leaves it alone and still finds doc_ids in req.body.
// express-pouchdb answers a continuous or longpoll _changes request of a user who
// may not read the database with 200 and then heartbeats only (the refusal is
// lost in an unhandled rejection), so a client never learns it is locked out.
// CouchDB refuses such a request up front: ask this server for the database with
// the same credentials first and pass on any refusal.
function refuseFeedsLikeCouchDB(req, res, next) {
  const feed = req.query.feed;
  if (feed !== 'continuous' && feed !== 'longpoll' && feed !== 'eventsource') {
    next();
    return;
  }
  const rawPath = req.originalUrl.split('?')[0];
  const dbPath = rawPath.slice(0, rawPath.lastIndexOf('/_changes'));
  const headers = { Accept: 'application/json' };
  for (const name of ['authorization', 'cookie']) {
    if (req.headers[name] !== undefined) {
      headers[name] = req.headers[name];
    }
  }
  let done = false;
  const finish = (answer, body) => {
    if (done) {
      return;
    }
    done = true;
    if (!answer || (answer.statusCode >= 200 && answer.statusCode < 300)) {
      next();
      return;
    }
    res.status(answer.statusCode);
    res.set('Content-Type', answer.headers['content-type'] || 'application/json');
    res.end(body);
  };
  const check = http.request({
    host: HOST, port: server.address().port, method: 'GET', path: dbPath, headers,
    timeout: 5000,
  }, (answer) => {
    const chunks = [];
    answer.on('data', (chunk) => chunks.push(chunk));
    answer.on('end', () => finish(answer, Buffer.concat(chunks)));
    answer.on('error', () => finish(null));
  });
  check.on('timeout', () => check.destroy(new Error('timeout')));
  check.on('error', () => finish(null));
  check.end();
}
app.get(/^\/[^/]+\/_changes$/, refuseFeedsLikeCouchDB);
app.post(/^\/[^/]+\/_changes$/, refuseFeedsLikeCouchDB);

const changesBody = express.json({ limit: '16mb', type: () => true, strict: false });
app.post(/^\/[^/]+\/_changes$/, changesBody, (req, res, next) => {
  const body = req.body;
  if (body && typeof body === 'object' && !Array.isArray(body) && body.selector !== undefined) {
    req.query.selector = body.selector;
    if (req.query.filter === undefined) {
      req.query.filter = '_selector';
    }
  }
  next();
}, (err, req, res, next) => {
  if (err && err.status === 400) {
    res.status(400).json({ error: 'bad_request', reason: 'invalid_json' });
    return;
  }
  next(err);
});

// A non-admin PUT /newdb hangs in express-pouchdb 4.2.0: the security plugin's
// PouchDB.new() answers with a rejected promise where the route expects a
// database.  Give the route an object whose info() reports that refusal, so the
// client gets the 401 CouchDB gives.  (The plugins install PouchDB.new when the
// server starts, so wrap whatever is there at the time of the request.)
let wrappedNew = null;
app.put(/^\/[^/]+\/?$/, (req, res, next) => {
  if (typeof ServerPouchDB.new === 'function' && ServerPouchDB.new !== wrappedNew) {
    const original = ServerPouchDB.new;
    wrappedNew = function (...newArgs) {
      const made = original.apply(this, newArgs);
      if (made && typeof made.then === 'function' && typeof made.info !== 'function') {
        made.catch(() => {});
        return {
          __opts: {},
          info(callback) {
            made.then((db) => db.info(callback), (err) => callback(err));
          },
        };
      }
      return made;
    };
    ServerPouchDB.new = wrappedNew;
  }
  next();
});

pouchApp.disable('x-powered-by');
app.use(pouchApp);

const server = http.createServer(app);
// Continuous feeds stay open for as long as the client wants them.
server.requestTimeout = 0;
server.timeout = 0;
server.keepAliveTimeout = 5000;

server.on('error', (err) => {
  process.stderr.write('cannot listen on ' + HOST + ':' + args.port + ': ' + err.message + '\n');
  exitNow(1);
});

server.listen(args.port, HOST, () => {
  const port = server.address().port;
  process.stdout.write('listening on http://' + HOST + ':' + port + '\n');
});
