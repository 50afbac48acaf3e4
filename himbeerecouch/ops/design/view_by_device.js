// views/by_device: key [MacID, kind, name], kind being code, cmd, log,
// heartbeat or device (documents that carry that kind in their type, as classify
// reads it); the value of a code row holds the document's tags, a device row the
// device's name and tags, for the fleet list.  A group code document's row is
// ["tag:<tag>", "group", name].
function (doc) {
  // @include classify
  var c = classify(doc);
  if (c.kind === 'code') {
    emit([c.device, 'code', doc.name || doc._id], Array.isArray(doc.tags) ? {tags: doc.tags} : null);
  } else if (c.kind === 'device' && doc.type === 'device') {
    emit([c.device, 'device', doc._id], {name: doc.name, tags: doc.tags});
  } else if (c.kind === 'group') {
    emit([doc.type, 'group', doc.name || doc._id], null);
  } else if (c.kind === 'heartbeat' && doc.type === 'heartbeat') {
    emit([c.device, 'heartbeat', doc._id], null);
  } else if ((c.kind === 'cmd' || c.kind === 'log') && doc.type === c.device + '_' + c.kind) {
    emit([c.device, c.kind, c.kind === 'log' ? (doc.name || doc._id) : doc._id], null);
  }
}
