// A code document in the editor: name, main module, modules, global modules;
// save (with the revision it was loaded at: a newer one is never overwritten),
// delete, and a new document.

import {useEffect, useMemo, useRef, useState} from 'preact/hooks';
import {CodeEditor} from './editor.jsx';
import {CouchError} from './couch.js';
import {editedDocument, moduleNameProblem, parseCode, reportedLine, rfc1123, slug, workers} from './model.js';
import {codeHref, deviceHref, navigate, unsaved} from './hooks.js';

const EMPTY = {name: '', code: '', modules: {}, global_modules: {}};
const NEW_CODE = 'import time\n\n\ndef main():\n    while not should_quit():\n        log("hello")\n        time.sleep(10)\n';

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function revNumber(rev) {
  return parseInt(String(rev || '0'), 10) || 0;
}

function fileLabel(key) {
  if (key === 'code') {
    return 'main module (code)';
  }
  const [kind, name] = [key.slice(0, 1), key.slice(2)];
  return kind === 'm' ? `module ${name}` : `global module ${name}`;
}

function fileText(edit, key) {
  if (key === 'code') {
    return edit.code;
  }
  const map = key.startsWith('m:') ? edit.modules : edit.global_modules;
  return map[key.slice(2)] ?? '';
}

function withFile(edit, key, text) {
  if (key === 'code') {
    return {...edit, code: text};
  }
  const field = key.startsWith('m:') ? 'modules' : 'global_modules';
  return {...edit, [field]: {...edit[field], [key.slice(2)]: text}};
}

function describeFailure(e, what) {
  if (e instanceof CouchError) {
    if (e.offline) {
      return `Not ${what}: the database server cannot be reached. Your text is kept here; ` +
        'try again once the connection is back.';
    }
    if (e.status === 401) {
      return `Not ${what}: your session has ended. Log in again, then try again; your text is kept.`;
    }
    if (e.status === 403) {
      return `Not ${what}: the database refused it: ${e.reason || e.error}.`;
    }
    return `Not ${what}: the server answered ${e.status}: ${e.reason || e.error}.`;
  }
  return `Not ${what}: ${e.message || e}.`;
}

export function CodeDocEditor({store, couch, user, device, docId, creating}) {
  const stored = docId ? store.docs.get(docId) : null;
  const [base, setBase] = useState(creating ? null : stored);
  const parsed = useMemo(() => (base ? parseCode(base) : {...EMPTY, code: NEW_CODE, problem: null}), [base]);
  const [edit, setEdit] = useState(() => ({...EMPTY, ...parsed, problem: undefined}));
  const [file, setFile] = useState('code');
  const [status, setStatus] = useState(null);     // {tone, text}
  const [conflict, setConflict] = useState(null); // the newer revision, when a save was refused
  const [busy, setBusy] = useState(false);
  const [newModule, setNewModule] = useState({kind: null, name: '', error: ''});
  const token = useRef({});

  const original = base ? {name: parsed.name, code: parsed.code, modules: parsed.modules,
    global_modules: parsed.global_modules} : {...EMPTY, code: NEW_CODE};
  const current = {name: edit.name, code: edit.code, modules: edit.modules, global_modules: edit.global_modules};
  const dirty = creating ? true : !same(original, current);
  const problem = base ? parsed.problem : null;
  const newer = stored && base && stored._rev !== base._rev && revNumber(stored._rev) >= revNumber(base._rev)
    ? stored : null;
  // What the device says about the revision shown (a syntax error names its line).
  const worker = base && !creating
    ? workers(store.heartbeat(device)).find((w) => w.doc_id === base._id && w.rev === base._rev)
    : null;
  const failure = worker && worker.error ? String(worker.error) : null;
  const reported = failure ? reportedLine(failure, base) : null;

  // Unsaved work is announced to the page (leaving asks first).
  useEffect(() => {
    if (dirty && !problem) {
      unsaved.add(token.current);
    } else {
      unsaved.delete(token.current);
    }
  }, [dirty, problem]);
  useEffect(() => () => unsaved.delete(token.current), []);

  // The document arrived (page opened on its address) or changed elsewhere:
  // follow it while nothing is edited; otherwise keep the user's text and say so.
  useEffect(() => {
    if (creating || !stored) {
      return;
    }
    if (!base) {
      setBase(stored);
      const p = parseCode(stored);
      if (!p.problem) {
        setEdit({name: p.name, code: p.code, modules: p.modules, global_modules: p.global_modules});
      }
      return;
    }
    if (stored._rev !== base._rev && revNumber(stored._rev) >= revNumber(base._rev) && !dirty && !conflict) {
      setBase(stored);
      const p = parseCode(stored);
      if (!p.problem) {
        setEdit({name: p.name, code: p.code, modules: p.modules, global_modules: p.global_modules});
      }
    }
  }, [stored && stored._rev, creating]);

  const files = ['code', ...Object.keys(edit.modules).sort().map((n) => 'm:' + n),
    ...Object.keys(edit.global_modules).sort().map((n) => 'g:' + n)];
  const shownFile = files.includes(file) ? file : 'code';

  if (!creating && !base) {
    const deleted = !stored && store.devices.get(device) === 'ready';
    return (
      <section class="editor-panel" aria-labelledby="editor-title">
        <h2 id="editor-title" tabindex="-1">Code document {docId}</h2>
        <p class={deleted ? 'error-box' : 'muted'} role="status">
          {deleted ? 'This document does not exist (any more) in the database.' : 'Loading…'}
        </p>
        <a href={deviceHref(device)}>Back to the device</a>
      </section>
    );
  }

  const save = async () => {
    if (busy) {
      return;
    }
    if (!edit.name.trim()) {
      setStatus({tone: 'bad', text: 'Give the code a name: it names the worker in logs and ps.'});
      return;
    }
    setBusy(true);
    setStatus({tone: 'neutral', text: 'Saving…'});
    try {
      if (creating) {
        await create();
      } else {
        const doc = editedDocument(base, {...edit, name: edit.name.trim()});
        const r = await couch.put(doc);
        const saved = {...doc, _rev: r.rev};
        setBase(saved);
        setConflict(null);
        setEdit({name: doc.name, code: doc.code || '', modules: doc.modules || {},
          global_modules: doc.global_modules || {}});
        store.remember(saved);
        setStatus({tone: 'good', text: `Saved (revision ${revNumber(r.rev)}). The device restarts this worker within seconds.`});
      }
    } catch (e) {
      if (e instanceof CouchError && e.status === 409) {
        let latest = null;
        try {
          latest = await couch.get(base._id);
          store.remember(latest);
        } catch (ignored) {
          latest = null;
        }
        setConflict(latest || {});
        setStatus({tone: 'bad', conflict: true, text:
          'Not saved: this document was changed by someone else' +
          (latest ? ` (now revision ${revNumber(latest._rev)}, you started from revision ${revNumber(base._rev)})` : '') +
          ' since you opened it. Saving would overwrite their change, so it was refused. ' +
          'Your text is still in the editor: copy what you need, then load their version and edit again.'});
      } else {
        setStatus({tone: 'bad', text: describeFailure(e, 'saved')});
      }
    } finally {
      setBusy(false);
    }
  };

  const create = async () => {
    const name = edit.name.trim();
    const fields = editedDocument({}, {...edit, name});
    const base0 = `${device}_${slug(name)}`;
    for (let n = 1; n <= 50; n++) {
      const id = n === 1 ? base0 : `${base0}-${n}`;
      const doc = {_id: id, type: Number(device), ...fields, created_by: user,
        timestamp: rfc1123(couch.now())};
      try {
        const r = await couch.put(doc);
        unsaved.delete(token.current);
        store.remember({...doc, _rev: r.rev});
        setStatus({tone: 'good', text: 'Created.'});
        navigate(codeHref(device, id), true);
        return;
      } catch (e) {
        if (!(e instanceof CouchError && e.status === 409)) {
          throw e;
        }
      }
    }
    throw new Error('no free document id for this name');
  };

  const loadTheirs = () => {
    const latest = store.docs.get(base._id) || conflict;
    if (!latest || !latest._id) {
      setStatus({tone: 'bad', text: 'The document was deleted in the meantime.'});
      return;
    }
    const p = parseCode(latest);
    setBase(latest);
    setConflict(null);
    if (!p.problem) {
      setEdit({name: p.name, code: p.code, modules: p.modules, global_modules: p.global_modules});
    }
    setStatus({tone: 'neutral', text: `Loaded revision ${revNumber(latest._rev)}.`});
  };

  const remove = async () => {
    // eslint-disable-next-line no-alert
    if (!window.confirm(`Delete the code document "${parsed.name || base._id}"? Its worker stops on the device.`)) {
      return;
    }
    setBusy(true);
    try {
      await couch.remove(base._id, base._rev);
      unsaved.delete(token.current);
      store.forget(base._id);
      navigate(deviceHref(device), true);
    } catch (e) {
      if (e instanceof CouchError && e.status === 409) {
        setStatus({tone: 'bad', text: 'Not deleted: the document was changed by someone else since you opened it. ' +
          'Look at their version first.'});
      } else {
        setStatus({tone: 'bad', text: describeFailure(e, 'deleted')});
      }
    } finally {
      setBusy(false);
    }
  };

  const close = () => navigate(deviceHref(device));

  const addModule = (e) => {
    e.preventDefault();
    const name = newModule.name.trim();
    const taken = [...Object.keys(edit.modules), ...Object.keys(edit.global_modules)];
    const why = moduleNameProblem(name, taken);
    if (why) {
      setNewModule({...newModule, error: why});
      return;
    }
    const key = (newModule.kind === 'global' ? 'g:' : 'm:') + name;
    setEdit(withFile(edit, key, `# ${name}: imported as "import ${name}"\n`));
    setFile(key);
    setNewModule({kind: null, name: '', error: ''});
  };

  const removeModule = () => {
    if (shownFile === 'code') {
      return;
    }
    const field = shownFile.startsWith('m:') ? 'modules' : 'global_modules';
    const map = {...edit[field]};
    delete map[shownFile.slice(2)];
    setEdit({...edit, [field]: map});
    setFile('code');
  };

  const shownName = parsed.name || (typeof base?.name === 'string' && base.name) || base?._id;
  const title = creating ? 'New code document' : `Code: ${shownName}`;

  return (
    <section class="editor-panel" aria-labelledby="editor-title" data-doc={base ? base._id : ''}>
      <div class="editor-head">
        <h2 id="editor-title" tabindex="-1">{title}</h2>
        {base && <span class="sub">{base._id} · revision {revNumber(base._rev)}
          {base.created_by ? ` · created by ${base.created_by}` : ''}</span>}
      </div>
      {problem && (
        <div class="error-box" role="alert">
          This document cannot be edited in the page: {problem}. It is shown as stored; nothing is
          changed. Fix it with <code>himbeerecouch push</code> or in the database.
          <pre class="raw">{JSON.stringify(base, null, 2)}</pre>
        </div>
      )}
      {!problem && !creating && !stored && store.devices.get(device) === 'ready' && (
        <p class="warn-box gone-notice" role="status">
          This document was deleted in the database since you opened it. Your text is still
          here: copy what you need into a new document.
        </p>
      )}
      {!problem && newer && dirty && !conflict && (
        <p class="warn-box newer-notice" role="status">
          Someone else saved a newer version of this document (revision {revNumber(newer._rev)}) while you were editing.
          Saving your text will be refused; copy what you need, then load their version.
          <button type="button" onClick={loadTheirs}>Load their version</button>
        </p>
      )}
      {!problem && (
        <form class="editor-form" onSubmit={(e) => {
          e.preventDefault();
          save();
        }}>
          <label for="code-name">Name</label>
          <input id="code-name" value={edit.name} required
            onInput={(e) => setEdit({...edit, name: e.currentTarget.value})} />
          <div class="files" role="group" aria-label="Files of this document">
            {files.map((key) => (
              <button type="button" key={key} class={'file' + (key === shownFile ? ' current' : '')}
                aria-pressed={key === shownFile ? 'true' : 'false'} data-file={key}
                onClick={() => setFile(key)}>
                {key === 'code' ? 'main' : key.slice(2)}
                {key.startsWith('g:') && <span class="tag">global</span>}
              </button>
            ))}
            <button type="button" class="link" onClick={() => setNewModule({kind: 'module', name: '', error: ''})}>+ module</button>
            <button type="button" class="link" onClick={() => setNewModule({kind: 'global', name: '', error: ''})}>+ global module</button>
          </div>
          {newModule.kind && (
            <div class="new-module" role="group" aria-label="New module">
              <label for="new-module-name">
                Name of the new {newModule.kind === 'global' ? 'global module (every worker of the device can import it)' : 'module'}
              </label>
              <div class="row">
                <input id="new-module-name" value={newModule.name} autoFocus
                  onInput={(e) => setNewModule({...newModule, name: e.currentTarget.value, error: ''})}
                  onKeyDown={(e) => {
                    if (e.key === 'Enter') {
                      addModule(e);
                    } else if (e.key === 'Escape') {
                      setNewModule({kind: null, name: '', error: ''});
                    }
                  }} />
                <button type="button" onClick={addModule}>Add</button>
                <button type="button" onClick={() => setNewModule({kind: null, name: '', error: ''})}>Cancel</button>
              </div>
              <div class="error" role="alert">{newModule.error}</div>
            </div>
          )}
          {failure && (
            <p class="error-box reported-error" role="alert">
              The device cannot run revision {revNumber(base._rev)}: {failure}
              {reported && reported.file !== shownFile && (
                <> <button type="button" class="link" onClick={() => setFile(reported.file)}>
                  Show line {reported.line} of the {fileLabel(reported.file)}</button></>
              )}
              {reported && reported.file === shownFile && ` (line ${reported.line} is marked below)`}
            </p>
          )}
          <CodeEditor id="code-editor" fileKey={shownFile} value={fileText(edit, shownFile)}
            mark={reported && reported.file === shownFile ? {line: reported.line, message: failure} : null}
            label={'Python source: ' + fileLabel(shownFile)}
            onChange={(text) => setEdit((e) => withFile(e, shownFile, text))} />
          <p class="hint">Tab moves on to the next control; indent with Ctrl-] and Ctrl-[. Ctrl-F searches.</p>
          <div class="status" role="status" aria-live="polite" data-tone={status ? status.tone : ''}>
            {status ? status.text : (dirty && !creating ? 'Unsaved changes.' : '')}
          </div>
          <div class="actions">
            <button type="submit" class="primary" disabled={busy}>{creating ? 'Create' : 'Save'}</button>
            {conflict && <button type="button" onClick={loadTheirs}>Load their version (drops your edits)</button>}
            {shownFile !== 'code' && (
              <button type="button" onClick={removeModule}>Remove {fileLabel(shownFile)}</button>
            )}
            {!creating && <button type="button" class="danger" onClick={remove} disabled={busy}>Delete document</button>}
            <button type="button" onClick={close}>Close</button>
          </div>
        </form>
      )}
      {problem && <div class="actions"><button type="button" onClick={close}>Close</button></div>}
    </section>
  );
}
