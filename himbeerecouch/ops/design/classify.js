// What a document is, and which device (MacID as decimal digits) it belongs to.
//
// One source for two runtimes: provisioning includes it (without `export`)
// in the design functions that need it (validate_doc_update, the update
// handler, the view by_device); the page's build imports it (web/src/model.js).
// Plain ES5 (design functions run in old engines); provisioning drops `export`.
export function classify(doc) {
  var t = doc.type;
  var id = doc._id || '';
  var m;
  if (typeof t === 'number' && t >= 0 && Math.floor(t) === t) {
    return {kind: 'code', device: String(t)};
  }
  if (typeof t === 'string' && /^\d+$/.test(t)) {
    return {kind: 'code', device: t};
  }
  // A device document names a device and gives it tags; a group code
  // document (type "tag:<tag>") runs on the devices with that tag.
  if (t === 'device' || /^\d+_device$/.test(id)) {
    return {kind: 'device', device: id.replace(/_device$/, '')};
  }
  if (typeof t === 'string' && /^tag:./.test(t)) {
    return {kind: 'group', device: null, tag: t.slice(4)};
  }
  if (t === 'heartbeat' || /_heartbeat$/.test(id)) {
    return {kind: 'heartbeat', device: id.replace(/_heartbeat$/, '')};
  }
  if (typeof t === 'string') {
    m = /^(\d+)_(cmd|log|history|logarchive)$/.exec(t);
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
