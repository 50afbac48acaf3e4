// filters/page: what the fleet page follows: every document but the
// devices' history and log archives, which are large and which the page
// reads only when a device's plots or old log lines are shown.  Deletions pass.
function (doc, req) {
  // @include classify
  var kind = classify(doc).kind;
  return doc._deleted || (kind !== 'history' && kind !== 'logarchive');
}
