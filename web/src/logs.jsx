// A worker's whole log: its archive (older days, agent/logarchive.py: up to a
// week, one document per day) and its live log document, searchable and
// downloadable as text.  The archive is read when first searched or downloaded.

import {useState} from 'preact/hooks';
import {logLines} from './model.js';

// The archive documents of one worker, oldest day first.
async function archiveDocs(couch, device, workerId) {
  const prefix = `${device}_logarchive_${workerId}_`;
  const r = await couch.db('_all_docs', {params: {startkey: prefix, endkey: prefix + '\ufff0',
    include_docs: true}});
  return (r.rows || []).map((row) => row.doc)
    .filter((d) => d && d.doc_id === workerId && typeof d.day === 'string')
    .sort((a, b) => a.day.localeCompare(b.day));
}

// Archived lines, then the live lines the archive does not hold yet.
export function mergeLines(archives, live) {
  const out = archives.flatMap(logLines);
  const last = out.length ? out[out.length - 1].time : '';
  const held = new Map();
  for (const l of out) {
    if (l.time >= last) {
      const key = l.time + '\0' + l.stream + '\0' + l.text;
      held.set(key, (held.get(key) || 0) + 1);
    }
  }
  for (const l of logLines(live)) {
    if (l.time < last) {
      continue;
    }
    const key = l.time + '\0' + l.stream + '\0' + l.text;
    if (held.get(key)) {
      held.set(key, held.get(key) - 1);
      continue;
    }
    out.push(l);
  }
  return out;
}

export function asText(lines) {
  return lines.map((l) => `${l.time} ${l.stream} ${l.text}\n`).join('');
}

const SHOWN = 200;

export function LogTools({couch, device, doc}) {
  const workerId = String(doc.doc_id || '');
  const name = String(doc.name || workerId || doc._id);
  const [needle, setNeedle] = useState('');
  const [archive, setArchive] = useState({state: 'none', docs: [], error: null});
  const fieldId = 'log-search-' + doc._id.replace(/[^A-Za-z0-9_-]/g, '_');

  const loadArchive = async () => {
    if (archive.state === 'ready') {
      return archive.docs;
    }
    setArchive({state: 'loading', docs: [], error: null});
    try {
      const docs = await archiveDocs(couch, device, workerId);
      setArchive({state: 'ready', docs, error: null});
      return docs;
    } catch (e) {
      setArchive({state: 'error', docs: [], error: e});
      return [];
    }
  };

  const download = async () => {
    const docs = await loadArchive();
    const blob = new Blob([asText(mergeLines(docs, doc))], {type: 'text/plain;charset=utf-8'});
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `${device}-${name.replace(/[^A-Za-z0-9_.-]+/g, '_')}-log.txt`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  };

  const query = needle.trim().toLowerCase();
  const lines = query ? mergeLines(archive.docs, doc) : [];
  const found = query ? lines.filter((l) => l.text.toLowerCase().includes(query)) : [];
  return (
    <div class="log-tools">
      <form class="row" role="search" onSubmit={(e) => e.preventDefault()}>
        <label for={fieldId} class="sr-only">Search the log of {name}</label>
        <input id={fieldId} type="search" value={needle} placeholder={`search the log of ${name}`}
          data-log-search={workerId}
          onInput={(e) => {
            setNeedle(e.currentTarget.value);
            if (archive.state === 'none') {
              loadArchive();
            }
          }} />
        <button type="button" class="quiet" data-log-download={workerId} onClick={download}>Download as text</button>
      </form>
      {archive.state === 'error' && (
        <p class="error-box" role="alert">Older lines could not be read: {archive.error.message}</p>
      )}
      {query && (
        <div class="log-found" data-log-found={workerId} role="status">
          <p class="sub">{found.length} of {lines.length} lines match
            {archive.state === 'loading' ? ' (reading older days…)' : ` (${archive.docs.length} archived day${archive.docs.length === 1 ? '' : 's'} searched)`}
            {found.length > SHOWN ? `; the last ${SHOWN} are shown` : ''}</p>
          {found.length > 0 && <pre class="log-lines">
            {found.slice(-SHOWN).map((l, i) => (
              <span key={i} class={'line stream-' + l.stream}>
                <span class="time">{l.time}</span>{' '}{l.stream !== 'stdout' && <span class="stream">{l.stream} </span>}{l.text}{'\n'}
              </span>
            ))}
          </pre>}
        </div>
      )}
    </div>
  );
}
