"""The design document ``_design/himbeerecouch`` that provisioning installs.

It holds, as JavaScript source strings:

- ``validate_doc_update``: who may write what (README, "Operators' tools");
- the update handler ``insert_with_timestamp``, with the semantics of the
  lab's ``nedm_default`` handler (NEDM-COMPAT.md), so that heartbeats get the
  server's clock;
- the filters ``device`` and ``doc_type`` for ``_changes`` (deletions pass);
- the views ``heartbeats`` and ``by_device``.

The agent itself needs none of it to run.  Design functions must declare
every variable: the test server runs them in strict mode.
"""
import json

from . import __version__

DESIGN_NAME = "himbeerecouch"
DESIGN_ID = "_design/" + DESIGN_NAME
DEVICE_ROLE = "raspberry"
OPERATOR_ROLE = "operator"
LIMITED_ROLE = "raspberry_lmtd"   # the lab's users limited to the devices named in their roles

# The rules, shared by validate_doc_update and the update handler.  The
# handler checks them itself because the test server validates a handler's
# write as an anonymous admin: without this, any device could write any
# document through it.  ``%(operator_roles)s`` is a JSON list.
_RULES = r"""
  var OPERATOR_ROLES = %(operator_roles)s;
  var DEVICE_ROLE = %(device_role)s;
  var LIMITED_ROLE = %(limited_role)s;
  var RFC1123 = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;

  function fail(reason) {
    throw({forbidden: reason});
  }

  function hasRole(ctx, role) {
    return (ctx.roles || []).indexOf(role) !== -1;
  }

  function isAdmin(ctx, sec) {
    var admins = (sec && sec.admins) || {};
    var roles = admins.roles || [];
    var i;
    if (hasRole(ctx, '_admin')) {
      return true;
    }
    if (ctx.name && (admins.names || []).indexOf(ctx.name) !== -1) {
      return true;
    }
    for (i = 0; i < roles.length; i++) {
      if (hasRole(ctx, roles[i])) {
        return true;
      }
    }
    return false;
  }

  // What a document is, and which device (MacID as decimal digits) it belongs to.
  function classify(doc) {
    var t = doc.type;
    var id = doc._id || '';
    var m;
    if (typeof t === 'number' && t >= 0 && Math.floor(t) === t) {
      return {kind: 'code', device: String(t)};
    }
    if (typeof t === 'string' && /^\d+$/.test(t)) {
      return {kind: 'code', device: t};
    }
    if (t === 'heartbeat' || /_heartbeat$/.test(id)) {
      return {kind: 'heartbeat', device: id.replace(/_heartbeat$/, '')};
    }
    if (typeof t === 'string') {
      m = /^(\d+)_(cmd|log)$/.exec(t);
      if (m) {
        return {kind: m[2], device: m[1]};
      }
    }
    m = /^(\d+)_log_/.exec(id);
    if (m) {
      return {kind: 'log', device: m[1]};
    }
    return {kind: 'other', device: null};
  }

  function same(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  function checkFields(newDoc, oldDoc, name, creating) {
    if (creating) {
      if (newDoc.created_by !== name) {
        fail('created_by must be "' + name + '", the name of the user who creates the document');
      }
    } else if (oldDoc.created_by !== undefined) {
      if (newDoc.created_by !== oldDoc.created_by) {
        fail('created_by may not change');
      }
    } else if (newDoc.created_by !== undefined && newDoc.created_by !== name) {
      fail('created_by must be "' + name + '", the name of the writer');
    }
    if (newDoc.timestamp !== undefined &&
        (typeof newDoc.timestamp !== 'string' || !RFC1123.test(newDoc.timestamp))) {
      fail('bad_date_format: timestamp must look like "Thu, 26 Nov 2026 23:30:00 GMT"');
    }
  }

  function deviceMayWrite(newDoc, oldDoc, name, creating, deleting) {
    var id = newDoc._id || '';
    if (deleting) {
      return 'a device may not delete documents';
    }
    if (id === name + '_heartbeat') {
      return newDoc.type === 'heartbeat' ? null : 'a heartbeat document must have type "heartbeat"';
    }
    if (newDoc.type === name + '_log' && id.indexOf(name + '_log_') === 0) {
      return null;
    }
    if (newDoc.type === name + '_cmd') {
      if (creating) {
        return 'a device may not create commands';
      }
      if (oldDoc.type !== newDoc.type) {
        return 'a device may not change the type of a document';
      }
      if (!same(oldDoc.cmd, newDoc.cmd) || !same(oldDoc.timeout, newDoc.timeout)) {
        return 'a device may not change the cmd or timeout of a command';
      }
      return null;
    }
    return 'device ' + name + ' may write only its own heartbeat (' + name +
           '_heartbeat), its own logs (' + name + '_log_*) and the results of its own commands';
  }

  function operatorMayWrite(subject, oldKind, deleting) {
    var kind = classify(subject).kind;
    if (deleting) {
      return null;
    }
    if (kind === 'heartbeat' || kind === 'log' || oldKind === 'heartbeat' || oldKind === 'log') {
      return 'heartbeat and log documents are written by the devices only';
    }
    return null;
  }

  function limitedMayWrite(ctx, newDoc, oldDoc, creating, deleting) {
    var docs = deleting ? [oldDoc] : (creating ? [newDoc] : [oldDoc, newDoc]);
    var i, c;
    if (!creating && !deleting && !same(oldDoc.type, newDoc.type)) {
      return 'the type of a document may not change';
    }
    for (i = 0; i < docs.length; i++) {
      c = classify(docs[i]);
      if ((c.kind !== 'code' && c.kind !== 'cmd') || !hasRole(ctx, c.device)) {
        return 'you may write code and commands only for the devices named in your roles';
      }
    }
    return null;
  }

  function check(newDoc, oldDoc, ctx, sec) {
    var name = ctx.name;
    var creating = !oldDoc || !!oldDoc._deleted;
    var deleting = !!newDoc._deleted;
    var why = null;
    var i;
    if (isAdmin(ctx, sec)) {
      return;
    }
    if (!name) {
      throw({unauthorized: 'log in to write to this database'});
    }
    if (deleting && creating) {
      return;
    }
    if (!deleting) {
      checkFields(newDoc, oldDoc, name, creating);
    }
    // A device is a device only: no other role widens what it may write.
    if (hasRole(ctx, DEVICE_ROLE)) {
      why = deviceMayWrite(newDoc, oldDoc, name, creating, deleting);
      if (why) {
        fail(why);
      }
      return;
    }
    // A user whose name is a MacID is a device of the lab, whatever its other
    // roles (the nEDM lab gives its Pis the writer role, not this one): it
    // writes its own heartbeat, logs and command results.
    if (/^[0-9]+$/.test(name) && !deviceMayWrite(newDoc, oldDoc, name, creating, deleting)) {
      return;
    }
    // Limited users stay limited, also when they hold a writer role (the lab's
    // limited users need its writer role to write at all).
    if (hasRole(ctx, LIMITED_ROLE)) {
      why = limitedMayWrite(ctx, newDoc, oldDoc, creating, deleting);
      if (why) {
        fail(why);
      }
      return;
    }
    for (i = 0; i < OPERATOR_ROLES.length; i++) {
      if (hasRole(ctx, OPERATOR_ROLES[i])) {
        why = operatorMayWrite(deleting ? oldDoc : newDoc,
                               creating ? null : classify(oldDoc).kind, deleting);
        if (why) {
          fail(why);
        }
        return;
      }
    }
    fail('only admins, operators and devices may write to this database');
  }
"""

_VALIDATE = r"""function (newDoc, oldDoc, userCtx, secObj) {
%(rules)s
  check(newDoc, oldDoc, userCtx, secObj || {});
}"""

# NEDM-COMPAT.md: create or merge, created_by when not set, the server's
# clock in timestamp; ?overwrite=true first drops the fields the body lacks
# (created_by stays: it may never change).  The new revision is in the
# X-Couch-Update-NewRev header, as CouchDB sends it: an update function
# cannot know it.
_UPDATE = r"""function (doc, req) {
%(rules)s
  var body, key, old, overwrite;
  var ctx = req.userCtx || {};
  try {
    body = JSON.parse(req.body || '{}');
  } catch (e) {
    return [null, {code: 400, json: {error: 'bad_request', reason: 'the body must be a JSON object'}}];
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return [null, {code: 400, json: {error: 'bad_request', reason: 'the body must be a JSON object'}}];
  }
  if (!doc) {
    if (!req.id) {
      return [null, {code: 400, json: {error: 'bad_request', reason: 'a document id is needed'}}];
    }
    doc = {_id: req.id};
    old = null;
  } else {
    old = JSON.parse(JSON.stringify(doc));
  }
  overwrite = req.query && (req.query.overwrite === true || req.query.overwrite === 'true');
  if (overwrite) {
    for (key in doc) {
      if (doc.hasOwnProperty(key) && key.charAt(0) !== '_' && key !== 'created_by' &&
          !body.hasOwnProperty(key)) {
        delete doc[key];
      }
    }
  }
  for (key in body) {
    if (body.hasOwnProperty(key) && key.charAt(0) !== '_') {
      doc[key] = body[key];
    }
  }
  if (doc.created_by === undefined && ctx.name) {
    doc.created_by = ctx.name;
  }
  doc.timestamp = new Date().toUTCString();
  try {
    check(doc, old, ctx, req.secObj || {});
  } catch (e) {
    if (e && e.unauthorized) {
      return [null, {code: 401, json: {error: 'unauthorized', reason: e.unauthorized}}];
    }
    if (e && e.forbidden) {
      return [null, {code: 403, json: {error: 'forbidden', reason: e.forbidden}}];
    }
    throw e;
  }
  return [doc, {json: {ok: true, id: doc._id, timestamp: doc.timestamp}}];
}"""

# ?macid=N: that device's code and command documents, and every deletion
# (a tombstone carries no type).
_FILTER_DEVICE = r"""function (doc, req) {
  var m = req.query ? req.query.macid : undefined;
  var t = doc.type;
  if (doc._deleted) {
    return true;
  }
  if (m === undefined || m === null || m === '') {
    return false;
  }
  m = String(m);
  if (typeof t === 'number') {
    t = String(t);
  }
  return t === m || t === m + '_cmd';
}"""

# The lab's nedm_default/doc_type: ?type=<JSON list or one value>, and
# ?handle_deleted=true to let deletions through.  CouchDB hands query values
# over as strings, the test server JSON-parsed: accept both.
_FILTER_DOC_TYPE = r"""function (doc, req) {
  var q = req.query || {};
  var wanted = q.type;
  var i;
  if (doc._deleted) {
    return q.handle_deleted === true || q.handle_deleted === 'true';
  }
  if (typeof wanted === 'string') {
    try {
      wanted = JSON.parse(wanted);
    } catch (e) {
      wanted = q.type;
    }
  }
  if (!Array.isArray(wanted)) {
    wanted = [wanted];
  }
  for (i = 0; i < wanted.length; i++) {
    if (String(wanted[i]) === String(doc.type)) {
      return true;
    }
  }
  return false;
}"""

_VIEW_HEARTBEATS = r"""function (doc) {
  if (doc.type === 'heartbeat') {
    emit(doc.created_by || doc._id.replace(/_heartbeat$/, ''), {
      ip: doc.ip || null,
      hostname: doc.hostname || null,
      timestamp: doc.timestamp || null,
      running: (doc.running_ids || []).length
    });
  }
}"""

# [MacID, kind, name]: kind is code, cmd, log or heartbeat.
_VIEW_BY_DEVICE = r"""function (doc) {
  var t = doc.type;
  var m;
  if ((typeof t === 'number' && t >= 0 && Math.floor(t) === t) ||
      (typeof t === 'string' && /^\d+$/.test(t))) {
    emit([String(t), 'code', doc.name || doc._id], null);
    return;
  }
  if (t === 'heartbeat') {
    emit([doc._id.replace(/_heartbeat$/, ''), 'heartbeat', doc._id], null);
    return;
  }
  if (typeof t === 'string') {
    m = /^(\d+)_(cmd|log)$/.exec(t);
    if (m) {
      emit([m[1], m[2], m[2] === 'log' ? (doc.name || doc._id) : doc._id], null);
    }
  }
}"""


def design_document(operator_roles=(OPERATOR_ROLE,)):
    """The design document (without ``_rev``) for these operator roles."""
    roles = sorted(set(operator_roles) | {OPERATOR_ROLE})
    rules = _RULES % {"operator_roles": json.dumps(roles),
                      "device_role": json.dumps(DEVICE_ROLE),
                      "limited_role": json.dumps(LIMITED_ROLE)}
    return {
        "_id": DESIGN_ID,
        "language": "javascript",
        "himbeerecouch": {"version": __version__, "operator_roles": roles},
        "validate_doc_update": _VALIDATE % {"rules": rules},
        "updates": {"insert_with_timestamp": _UPDATE % {"rules": rules}},
        "filters": {"device": _FILTER_DEVICE, "doc_type": _FILTER_DOC_TYPE},
        "views": {"heartbeats": {"map": _VIEW_HEARTBEATS},
                  "by_device": {"map": _VIEW_BY_DEVICE}},
    }


def managed_keys():
    """The keys of the design document that provisioning owns (others are left alone)."""
    return [k for k in design_document() if k != "_id"]
