// views/heartbeats: one row per device heartbeat, keyed by the device's user.
function (doc) {
  if (doc.type === 'heartbeat') {
    emit(doc.created_by || doc._id.replace(/_heartbeat$/, ''), {
      ip: doc.ip || null,
      hostname: doc.hostname || null,
      timestamp: doc.timestamp || null,
      running: (doc.running_ids || []).length
    });
  }
}
