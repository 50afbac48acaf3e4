"""Design documents that behave like the lab's nEDM web interface's, for the tests.

Written from the description in NEDM-COMPAT.md (not copied from the
interface): ``nedm_default`` (filter ``doc_type``, update handler
``insert_with_timestamp``, ``validate_doc_update``), ``document_type`` (the
view the page lists devices and code with) and ``raspberry_def`` (the view
``running_processes`` and the rules for limited users).  Every variable is
declared: the test server runs design functions in strict mode.
"""

DOC_TYPE_FILTER = """function (doc, req) {
  var types = req.query.type;
  var wanted, i;
  if (doc._deleted) { return !!req.query.handle_deleted; }
  if (typeof types === 'string') {
    try { types = JSON.parse(types); } catch (e) { /* a single plain value */ }
  }
  wanted = Array.isArray(types) ? types : [types];
  for (i = 0; i < wanted.length; i++) {
    if (String(wanted[i]) === String(doc.type)) { return true; }
  }
  return false;
}"""

INSERT_WITH_TIMESTAMP = """function (doc, req) {
  var body = JSON.parse(req.body);
  var overwrite = req.query.overwrite === true || req.query.overwrite === 'true';
  var key;
  if (!doc) {
    doc = {_id: req.id || req.uuid};
  } else if (overwrite) {
    for (key in doc) {
      if (key.charAt(0) !== '_' && key !== 'created_by' && !(key in body)) { delete doc[key]; }
    }
  }
  for (key in body) {
    if (key !== '_id' && key !== '_rev') { doc[key] = body[key]; }
  }
  if (!doc.created_by) { doc.created_by = req.userCtx.name; }
  doc.timestamp = new Date().toUTCString();
  return [doc, JSON.stringify({ok: true, id: doc._id})];
}"""

NEDM_VALIDATE = """function (newDoc, oldDoc, userCtx, secObj) {
  var roles = userCtx.roles;
  // The test server leaves userCtx.db out of validate functions: this database's name then.
  var dbname = String(userCtx.db || 'nedm/raspberries').replace(/^nedm(%2F|\\/)?/, '');
  var adminRoles = (secObj && secObj.admins && secObj.admins.roles) || [];
  var allowed = false;
  var i, type;
  if (roles.indexOf('_admin') >= 0) { return; }
  if (roles.indexOf(dbname + '_writer') >= 0) { allowed = true; }
  for (i = 0; i < adminRoles.length; i++) {
    if (roles.indexOf(adminRoles[i]) >= 0) { allowed = true; }
  }
  if (!allowed) { throw {unauthorized: 'you may not write to this database'}; }
  if (!oldDoc) {
    if (newDoc.created_by !== userCtx.name) {
      throw {forbidden: 'created_by must be your user name'};
    }
  } else {
    type = String(oldDoc.type || '');
    if (type.slice(-3) !== 'cmd' && oldDoc.created_by !== userCtx.name) {
      throw {forbidden: 'only ' + oldDoc.created_by + ' may change this document'};
    }
    if (!newDoc._deleted && newDoc.created_by !== oldDoc.created_by) {
      throw {forbidden: 'created_by may not change'};
    }
  }
  if (newDoc.timestamp !== undefined &&
      !/^[A-Z][a-z]{2}, \\d{2} [A-Z][a-z]{2} \\d{4} \\d{2}:\\d{2}:\\d{2} GMT$/.test(newDoc.timestamp)) {
    throw {forbidden: 'bad_date_format'};
  }
}"""

DOCUMENT_TYPE_MAP = """function (doc) {
  var d;
  if (doc.type !== undefined && doc.timestamp) {
    d = new Date(doc.timestamp);
    emit([doc.type, d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(),
          d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()], 1);
  }
}"""

RUNNING_PROCESSES_MAP = """function (doc) {
  var i;
  if (doc.running_ids) {
    emit([doc.created_by, doc.timestamp, doc.ip], 1);
    for (i = 0; i < doc.running_ids.length; i++) {
      emit([doc.created_by, doc.timestamp, null], {_id: doc.running_ids[i]});
    }
  }
}"""

RASPBERRY_VALIDATE = """function (newDoc, oldDoc, userCtx) {
  var roles = userCtx.roles;
  var type, i, mine = false;
  if (roles.indexOf('_admin') >= 0 || roles.indexOf('raspberry_lmtd') < 0) { return; }
  type = String(newDoc._deleted && oldDoc ? oldDoc.type : newDoc.type);
  for (i = 0; i < roles.length; i++) {
    if (/^[0-9]+$/.test(roles[i]) && type.indexOf(roles[i]) === 0) { mine = true; }
  }
  if (!mine) { throw {forbidden: 'not one of your devices'}; }
  if (oldDoc && !newDoc._deleted && String(oldDoc.type) !== String(newDoc.type)) {
    throw {forbidden: 'type may not change'};
  }
}"""

DESIGN_DOCS = [
    {"_id": "_design/nedm_default", "language": "javascript",
     "filters": {"doc_type": DOC_TYPE_FILTER},
     "updates": {"insert_with_timestamp": INSERT_WITH_TIMESTAMP},
     "validate_doc_update": NEDM_VALIDATE},
    {"_id": "_design/document_type", "language": "javascript",
     "views": {"document_type": {"map": DOCUMENT_TYPE_MAP, "reduce": "_stats"}}},
    {"_id": "_design/raspberry_def", "language": "javascript",
     "views": {"running_processes": {"map": RUNNING_PROCESSES_MAP, "reduce": "_count"}},
     "validate_doc_update": RASPBERRY_VALIDATE},
]

SECURITY = {"admins": {"names": [], "roles": []},
            "members": {"names": [], "roles": ["raspberries_writer", "raspberry_lmtd"]}}


def install(db):
    """Put the lab's design documents and members into ``db`` (a couchdb.Database as admin)."""
    for doc in DESIGN_DOCS:
        existing = db.get(doc["_id"])
        doc = dict(doc)
        if existing:
            doc["_rev"] = existing["_rev"]
        db.save(doc)
    db.security = SECURITY
