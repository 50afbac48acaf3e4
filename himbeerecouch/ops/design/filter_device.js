// filters/device: ?macid=N: that device's code and command documents, and
// every deletion (a tombstone carries no type).
function (doc, req) {
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
}
