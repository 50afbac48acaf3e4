// updates/insert_with_timestamp, as the lab's nedm_default handler
// (NEDM-COMPAT.md): create or merge, created_by when not set, the server's
// clock in timestamp; ?overwrite=true first drops the fields the body lacks
// (created_by stays: it may never change).  The new revision is in the
// X-Couch-Update-NewRev header, as CouchDB sends it: an update function
// cannot know it.
function (doc, req) {
  // @include settings
  // @include classify
  // @include rules
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
}
