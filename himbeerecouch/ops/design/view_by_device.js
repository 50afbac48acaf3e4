// views/by_device: key [MacID, kind, name], kind being code, cmd, log or
// heartbeat (documents that carry that kind in their type, as classify reads it).
function (doc) {
  // @include classify
  var c = classify(doc);
  if (c.kind === 'code') {
    emit([c.device, 'code', doc.name || doc._id], null);
  } else if (c.kind === 'heartbeat' && doc.type === 'heartbeat') {
    emit([c.device, 'heartbeat', doc._id], null);
  } else if ((c.kind === 'cmd' || c.kind === 'log') && doc.type === c.device + '_' + c.kind) {
    emit([c.device, c.kind, c.kind === 'log' ? (doc.name || doc._id) : doc._id], null);
  }
}
