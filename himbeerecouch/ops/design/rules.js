// Who may write what: the rules shared by validate_doc_update and the update
// handler insert_with_timestamp (README, "Operators' tools").  The handler
// checks them itself because the test server validates a handler's write as
// an anonymous admin: without this, any device could write any document
// through it.
//
// Provisioning includes it where a design function says `// @include rules`,
// after `// @include settings` (OPERATOR_ROLES, DEVICE_ROLE, LIMITED_ROLE)
// and `// @include classify`.  Design functions must declare every variable:
// the test server runs them in strict mode.
var RFC1123 = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;

// What only a device writes (an operator may delete it).
var DEVICE_KINDS = ['heartbeat', 'log', 'history', 'logarchive'];

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

// A command is cancelled (cancelled_at, cancelled_by) before a device claims
// it, and stays so: nobody claims it afterwards or takes the cancellation back.
function cancelRule(newDoc, oldDoc, creating) {
  var before = creating ? {} : oldDoc;
  if (classify(newDoc).kind !== 'cmd') {
    return null;
  }
  if (before.cancelled_at !== undefined) {
    if (!same(before.cancelled_at, newDoc.cancelled_at) ||
        !same(before.cancelled_by, newDoc.cancelled_by) ||
        !same(before.claimed_at, newDoc.claimed_at)) {
      return 'this command was cancelled: it may not be claimed, and the cancellation stays';
    }
  } else if (newDoc.cancelled_at !== undefined &&
             (before.claimed_at !== undefined || newDoc.claimed_at !== undefined)) {
    return 'a device has claimed this command: it is too late to cancel it';
  }
  return null;
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
  // Its bounded history and log archive (rings overwritten in place).
  if ((newDoc.type === name + '_history' && id.indexOf(name + '_history_') === 0) ||
      (newDoc.type === name + '_logarchive' && id.indexOf(name + '_logarchive_') === 0)) {
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
         '_heartbeat), its own logs (' + name + '_log_*), history (' + name +
         '_history_*) and log archive (' + name + '_logarchive_*) and the results of its own commands';
}

function operatorMayWrite(subject, oldKind, deleting) {
  var kind = classify(subject).kind;
  if (deleting) {
    return null;
  }
  if (DEVICE_KINDS.indexOf(kind) !== -1 || DEVICE_KINDS.indexOf(oldKind) !== -1) {
    return 'heartbeat, log, history and log archive documents are written by the devices only';
  }
  if (kind === 'device') {
    return deviceDocumentProblem(subject);
  }
  return null;
}

// A device document: id <MacID>_device, type "device", macid the same MacID
// as a number, an optional name (a string), tags (a list of strings) and
// server (the URL the device moves to: http(s), no user name or password).
function deviceDocumentProblem(doc) {
  var m = /^(\d+)_device$/.exec(doc._id || '');
  var i;
  if (!m || doc.type !== 'device' || doc.macid !== Number(m[1])) {
    return 'a device document has the id <MacID>_device, type "device" and macid <MacID> ' +
           '(a number)';
  }
  if (doc.name !== undefined && typeof doc.name !== 'string') {
    return 'the name of a device must be a string';
  }
  if (doc.tags !== undefined) {
    if (!Array.isArray(doc.tags)) {
      return 'the tags of a device must be a list of strings';
    }
    for (i = 0; i < doc.tags.length; i++) {
      if (typeof doc.tags[i] !== 'string' || !doc.tags[i]) {
        return 'the tags of a device must be a list of strings';
      }
    }
  }
  if (doc.server !== undefined &&
      (typeof doc.server !== 'string' || !/^https?:\/\/[^\/@\s]+(\/\S*)?$/.test(doc.server))) {
    return 'the server of a device must be a URL such as https://couch.lab:6984, ' +
           'without user name or password';
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
  var device = hasRole(ctx, DEVICE_ROLE);
  var why = null;
  var i;
  if (hasRole(ctx, '_admin')) {
    return;
  }
  // A device is a user named by its MacID with the device role.  It is a
  // device only: no other role widens what it may write, not the lab's writer
  // role (which the lab's own rules need it to have) and not a role that
  // _security lists among the database's admins.
  if (device && !/^[0-9]+$/.test(name || '')) {
    fail('a device user is named by its MacID, and "' + name + '" is not one');
  }
  if (!device && isAdmin(ctx, sec)) {
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
    why = cancelRule(newDoc, oldDoc, creating);
    if (why) {
      fail(why);
    }
  }
  if (device) {
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
