// filters/doc_type, the lab's nedm_default/doc_type: ?type=<JSON list or one
// value>, and ?handle_deleted=true to let deletions through.  CouchDB hands
// query values over as strings, the test server JSON-parsed: accept both.
function (doc, req) {
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
}
