import {useEffect, useLayoutEffect, useRef, useState} from 'preact/hooks';
import {CouchError} from './couch.js';
import {
  commandLine, commandOutput, commandStatus, duration, heartbeatProblem, isoSeconds, liveness,
  loadText, logLines, macAddress, number, parseCode, rfc1123, splitCommand, stateTone, workers,
} from './model.js';
import {codeHref, deviceHref, groupHref} from './hooks.js';
import {AliveBadge, WorkerCounts, deviceName} from './fleet.jsx';
import {CodeDocEditor} from './code.jsx';
import {History} from './history.jsx';
import {LogTools} from './logs.jsx';

function localTime(text) {
  const t = Date.parse(text);
  if (Number.isNaN(t)) {
    return String(text || '');
  }
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function Fact({label, children}) {
  return (
    <div class="fact">
      <dt>{label}</dt>
      <dd>{children}</dd>
    </div>
  );
}

function Facts({device, hb, now}) {
  const live = liveness(hb, now);
  const feed = hb && hb.feed && typeof hb.feed === 'object' ? hb.feed : null;
  return (
    <dl class="facts">
      <Fact label="Alive"><AliveBadge live={live} /></Fact>
      <Fact label="MacID">{device}{macAddress(device) ? ` (${macAddress(device)})` : ''}</Fact>
      <Fact label="Last heartbeat">{hb && hb.timestamp ? localTime(hb.timestamp) : '–'}</Fact>
      <Fact label="IP">{hb && typeof hb.ip === 'string' ? hb.ip : '–'}</Fact>
      <Fact label="Uptime">{duration(hb && hb.system_uptime)} (agent {duration(hb && hb.uptime)})</Fact>
      <Fact label="Temperature">{number(hb && hb.cpu_temperature, 1, ' °C')}</Fact>
      <Fact label="Load">{loadText(hb && hb.load)}</Fact>
      <Fact label="Free memory / disk">{number(hb && hb.memory_free_mb, 0, ' MB')} / {number(hb && hb.disk_free_mb, 0, ' MB')}</Fact>
      <Fact label="Agent">{hb && hb.version ? 'version ' + hb.version : '–'}
        {feed ? (feed.connected === false ? ' · its feed is disconnected' + (feed.error ? ': ' + feed.error : '') : '') : ''}</Fact>
    </dl>
  );
}

function Workers({list, device}) {
  if (!list.length) {
    return <p class="empty">No worker runs on this device.</p>;
  }
  return (
    <table class="workers cards">
      <caption class="sr-only">Workers of the device</caption>
      <thead>
        <tr>
          <th scope="col">Worker</th>
          <th scope="col">State</th>
          <th scope="col">Restarts</th>
          <th scope="col">CPU</th>
          <th scope="col">RSS</th>
          <th scope="col">PID</th>
          <th scope="col">Last exit</th>
        </tr>
      </thead>
      <tbody>
        {list.map((w) => {
          const id = typeof w.doc_id === 'string' ? w.doc_id : '';
          const trace = typeof w.traceback === 'string' ? w.traceback
            : (Array.isArray(w.traceback) ? w.traceback.join('\n') : '');
          return [
            <tr key={id} data-worker={id}>
              <th scope="row" data-label="Worker">
                {id ? <a href={w.tag ? groupHref(id) : codeHref(device, id)}>{String(w.name || id)}</a> : String(w.name || '?')}
                <span class="sub">{id}{w.tag ? ` · for tag ${w.tag}` : ''}</span>
              </th>
              <td data-label="State"><span class={'badge tone-' + stateTone(w.state)}>{String(w.state || '?')}</span></td>
              <td data-label="Restarts">{w.restarts ?? '–'}</td>
              <td data-label="CPU">{number(w.cpu_percent, 1, ' %')}</td>
              <td data-label="RSS">{number(w.rss_mb, 1, ' MB')}</td>
              <td data-label="PID">{w.pid ?? '–'}</td>
              <td data-label="Last exit">{w.last_exit_code ?? '–'}</td>
            </tr>,
            (w.error || trace || w.rolled_back_from) ? (
              <tr key={id + '-detail'} class="detail">
                <td colSpan={7}>
                  {w.rolled_back_from && (
                    <p class="warn-box rolled-back">Rolled back: revision {String(w.rolled_back_from)} kept
                      failing, so revision {String(w.rev)} (the last one that ran healthy) runs instead.
                      {w.rolled_back_error ? ` It failed with: ${w.rolled_back_error}` : ''}</p>
                  )}
                  {w.error && w.error !== w.rolled_back_error && <p class="problem">{String(w.error)}</p>}
                  {trace && (
                    <details>
                      <summary>Last traceback of {String(w.name || id)}</summary>
                      <pre class="traceback">{trace}</pre>
                    </details>
                  )}
                </td>
              </tr>
            ) : null,
          ];
        })}
      </tbody>
    </table>
  );
}

function CodeList({store, device, list, hb}) {
  const byDoc = new Map(workers(hb).map((w) => [w.doc_id, w]));
  const docs = [...list].sort((a, b) => String(a.name || a._id).localeCompare(String(b.name || b._id)));
  return (
    <div>
      <p><a class="button" href={deviceHref(device) + '/new'}>New code document</a></p>
      {!docs.length && <p class="empty">No code document for this device yet.</p>}
      {docs.length > 0 && (
        <ul class="code-list">
          {docs.map((doc) => {
            const p = parseCode(doc);
            const w = byDoc.get(doc._id);
            const mods = p.problem ? 0 : Object.keys(p.modules).length;
            const globals = p.problem ? 0 : Object.keys(p.global_modules).length;
            return (
              <li key={doc._id} data-doc={doc._id}>
                <a href={codeHref(device, doc._id)}>{typeof doc.name === 'string' && doc.name ? doc.name : doc._id}</a>
                <span class="sub">{doc._id}</span>
                {w && <span class={'badge tone-' + stateTone(w.state)}>{String(w.state)}</span>}
                {!p.problem && <span class="sub">
                  {p.code ? 'main' : 'no main'}{mods ? ` · ${mods} module${mods === 1 ? '' : 's'}` : ''}
                  {globals ? ` · ${globals} global` : ''}{doc.created_by ? ` · by ${doc.created_by}` : ''}
                </span>}
                {p.problem && <span class="problem">cannot be shown: {p.problem}</span>}
              </li>
            );
          })}
        </ul>
      )}
    </div>
  );
}

function LogPanel({doc, worker, couch, device}) {
  const lines = logLines(doc);
  const pre = useRef(null);
  const stick = useRef(true);
  useLayoutEffect(() => {
    const el = pre.current;
    if (el && stick.current) {
      el.scrollTop = el.scrollHeight;
    }
  });
  const onScroll = () => {
    const el = pre.current;
    stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
  };
  const name = String(doc.name || doc.doc_id || doc._id);
  const headingId = 'log-' + doc._id.replace(/[^A-Za-z0-9_-]/g, '_');
  return (
    <section class="log" data-log={doc.doc_id || doc._id} aria-labelledby={headingId}>
      <h3 id={headingId}>{name}
        {worker && <span class={'badge tone-' + stateTone(worker.state)}>{String(worker.state)}</span>}
        <span class="sub">{lines.length} line{lines.length === 1 ? '' : 's'}
          {doc.dropped ? ` · ${doc.dropped} dropped on the device` : ''}
          {doc.updated_at ? ` · written ${localTime(doc.updated_at)}` : ''}</span>
      </h3>
      <LogTools couch={couch} device={device} doc={doc} />
      <pre class="log-lines" ref={pre} onScroll={onScroll} tabindex="0" aria-label={'Last lines of ' + name}>
        {lines.length ? lines.map((l, i) => (
          <span key={i} class={'line stream-' + l.stream}>
            <span class="time">{localTime(l.time)}</span>{' '}
            {l.stream !== 'stdout' && <span class="stream">{l.stream} </span>}
            {l.text}{'\n'}
          </span>
        )) : <span class="muted">(nothing yet)</span>}
      </pre>
    </section>
  );
}

function Logs({list, hb, couch, device}) {
  const byDoc = new Map(workers(hb).map((w) => [w.doc_id, w]));
  const docs = [...list].sort((a, b) => String(a.name || a._id).localeCompare(String(b.name || b._id)));
  if (!docs.length) {
    return <p class="empty">No worker of this device has printed anything yet.</p>;
  }
  return <div class="logs">{docs.map((doc) => <LogPanel key={doc._id} doc={doc} worker={byDoc.get(doc.doc_id)}
    couch={couch} device={device} />)}</div>;
}

function randomHex(n) {
  const a = new Uint8Array(n);
  crypto.getRandomValues(a);
  return [...a].map((b) => b.toString(16).padStart(2, '0')).join('');
}

const COMMANDS_PAGE = 10;

function CommandResult({doc, onCancel}) {
  const status = commandStatus(doc);
  const out = commandOutput(doc);
  const labels = {queued: 'waiting for the device', running: 'running', done: 'finished',
    failed: 'failed', cancelled: 'cancelled'};
  return (
    <article class={'cmd status-' + status} data-cmd={doc._id} aria-label={'Command ' + commandLine(doc.cmd)}>
      <header>
        <code class="cmdline">$ {commandLine(doc.cmd)}</code>
        <span class={'badge cmd-' + status}>{labels[status]}</span>
        <span class="sub">{doc.created_by ? 'by ' + doc.created_by : ''}
          {doc.created_at ? ' · ' + localTime(doc.created_at) : ''}
          {status === 'cancelled' ? ` · cancelled by ${doc.cancelled_by || '?'} ${localTime(doc.cancelled_at)}` : ''}</span>
        {status === 'queued' && (
          <button type="button" class="cancel-cmd" onClick={() => onCancel(doc)}
            aria-label={'Cancel ' + commandLine(doc.cmd)}>Cancel</button>
        )}
      </header>
      {(status === 'done' || status === 'failed') && (
        <div class="result">
          {doc.exit_code !== undefined && doc.exit_code !== null && (
            <p class="exit">Exit code <strong class="exit-code">{String(doc.exit_code)}</strong></p>
          )}
          {doc.error && <p class="problem cmd-error">{String(doc.error)}</p>}
          <h4>stdout</h4>
          <pre class="stdout">{out.stdout || <span class="muted">(empty)</span>}</pre>
          <h4>stderr</h4>
          <pre class="stderr">{out.stderr || <span class="muted">(empty)</span>}</pre>
        </div>
      )}
    </article>
  );
}

function Commands({store, couch, user, device, list, live}) {
  const [text, setText] = useState('');
  const [timeout, setTimeoutValue] = useState('300');
  const [status, setStatus] = useState(null);
  const [busy, setBusy] = useState(false);
  const [shown, setShown] = useState(COMMANDS_PAGE);
  const [allLoaded, setAllLoaded] = useState(false);
  const when = (d) => Date.parse(d.created_at) || 0;
  const docs = [...list].sort((a, b) => when(b) - when(a) || String(b._id).localeCompare(String(a._id)));

  // Older commands: from those loaded, else one page more from the database.
  const more = docs.length > shown || (!allLoaded && docs.length >= shown);
  const older = async () => {
    const want = shown + COMMANDS_PAGE;
    if (!allLoaded && docs.length <= want) {
      try {
        if (await store.loadCommands(device, want + 1) <= want) {
          setAllLoaded(true);
        }
      } catch (err) {
        setStatus({tone: 'bad', text: 'Older commands not loaded: ' + explain(err) + '.'});
        return;
      }
    }
    setShown(want);
  };

  const explain = (err) => {
    if (!(err instanceof CouchError)) {
      return String(err.message || err);
    }
    if (err.offline) {
      return 'the database server cannot be reached';
    }
    if (err.status === 401) {
      return 'your session has ended; log in again, then press Run again';
    }
    return `the database answered ${err.status}: ${err.reason || err.error}`;
  };

  // Cancelled with the revision shown: if the device claimed it meanwhile,
  // the save conflicts and the command runs (the page then shows it running).
  const cancel = async (doc) => {
    const changed = {...doc, cancelled_at: isoSeconds(couch.now()), cancelled_by: user};
    try {
      const r = await couch.put(changed);
      store.remember({...changed, _rev: r.rev});
      setStatus({tone: 'good', text: `Cancelled: ${commandLine(doc.cmd)}. The device will not run it.`});
    } catch (err) {
      const why = err instanceof CouchError && err.status === 409
        ? 'the device took it meanwhile' : explain(err);
      setStatus({tone: 'bad', text: `Not cancelled: ${why}.`});
    }
  };

  const run = async (e) => {
    e.preventDefault();
    let argv;
    try {
      argv = splitCommand(text);
    } catch (err) {
      setStatus({tone: 'bad', text: 'Cannot read the command: ' + err.message + '.'});
      return;
    }
    if (!argv.length) {
      setStatus({tone: 'bad', text: 'Type a command, such as: uptime'});
      return;
    }
    const seconds = Number(timeout);
    if (!(seconds > 0)) {
      setStatus({tone: 'bad', text: 'The time limit is a number of seconds above 0.'});
      return;
    }
    const now = couch.now();
    const stamp = isoSeconds(now).replace(/[-:]/g, '').replace('Z', '');
    const doc = {
      _id: `${device}_cmd_${stamp}_${randomHex(4)}`,
      type: `${device}_cmd`, cmd: argv, timeout: seconds, created_by: user,
      created_at: new Date(now).toISOString(), timestamp: rfc1123(now),
    };
    setBusy(true);
    try {
      const r = await couch.put(doc);
      store.remember({...doc, _rev: r.rev});
      setText('');
      setStatus({tone: 'good', text: live.state === 'fresh' || live.state === 'late'
        ? 'Sent; the output appears below when the device has run it.'
        : 'Stored. The device is not alive now: it runs the command when its agent is back.'});
    } catch (err) {
      setStatus({tone: 'bad', text: 'Not sent: ' + explain(err) + '. The command is still in the box.'});
    } finally {
      setBusy(false);
    }
  };

  return (
    <div>
      <form class="command-form" onSubmit={run}>
        <div class="field grow">
          <label for="command-input">Command (run without a shell; quotes work as in a shell)</label>
          <input id="command-input" value={text} onInput={(e) => setText(e.currentTarget.value)}
            placeholder="uptime" autocapitalize="none" spellcheck={false} autocomplete="off" />
        </div>
        <div class="field">
          <label for="command-timeout">Time limit (s)</label>
          <input id="command-timeout" type="number" min="1" step="1" value={timeout}
            onInput={(e) => setTimeoutValue(e.currentTarget.value)} />
        </div>
        <button type="submit" class="primary" disabled={busy}>Run</button>
      </form>
      <div class="status" role="status" aria-live="polite" data-tone={status ? status.tone : ''}>{status ? status.text : ''}</div>
      <div class="commands" aria-live="polite">
        {docs.slice(0, shown).map((doc) => <CommandResult key={doc._id} doc={doc} onCancel={cancel} />)}
      </div>
      {more && (
        <p class="more">
          <button type="button" onClick={older}>Show older commands</button>
          <span class="sub"> (the {Math.min(shown, docs.length)} newest are shown)</span>
        </p>
      )}
    </div>
  );
}

export function Device({store, couch, user, route, now}) {
  const device = route.device;
  const unloaded = !store.devices.has(device);    // also after an error, once resumed
  useEffect(() => {
    if (unloaded) {
      store.loadDevice(device);
    }
  }, [device, unloaded]);

  const hb = store.heartbeat(device);
  const info = store.fleet().get(device) || {label: null, tags: []};
  const live = liveness(hb, now);
  const problem = hb ? heartbeatProblem(hb) : null;
  const state = store.devices.get(device);
  const list = workers(hb);
  const editing = route.edit !== undefined || route.creating;

  return (
    <div class="device-view" data-device={device}>
      <nav class="crumbs" aria-label="Breadcrumb"><a href="#/">Fleet</a> <span aria-hidden="true">›</span> {deviceName(device, hb, info.label)}</nav>
      <div class="view-head">
        <h1 id="view-title" tabindex="-1">{deviceName(device, hb, info.label)}</h1>
        {hb && list.length > 0 && <WorkerCounts list={list} />}
        {info.tags.length > 0 && (
          <span class="tags">{info.tags.map((t) => <a class="tag" key={t} href={'#/?tag=' + encodeURIComponent(t)}>{t}</a>)}</span>
        )}
      </div>
      {state instanceof CouchError && (
        <p class="error-box" role="alert">Could not load this device's documents: {state.message}</p>
      )}
      {!hb && (
        <p class="warn-box no-heartbeat" role="status">
          Device {device} has not sent a heartbeat yet. Code and commands saved here wait in the
          database and run as soon as its agent (<code>himbeerecouch run</code>) follows this database.
        </p>
      )}
      {problem && (
        <p class="error-box" role="alert">The heartbeat document of this device cannot be read fully: {problem}.
          What can be read is shown.</p>
      )}
      <Facts device={device} hb={hb} now={now} />

      <section aria-labelledby="history-h">
        <h2 id="history-h">History</h2>
        <History couch={couch} device={device} route={route} now={now} />
      </section>

      <section aria-labelledby="workers-h">
        <h2 id="workers-h">Workers</h2>
        {hb ? <Workers list={list} device={device} /> : <p class="empty">Unknown until the device sends a heartbeat.</p>}
      </section>

      <section aria-labelledby="code-h">
        <h2 id="code-h">Code</h2>
        {editing ? (
          <CodeDocEditor key={route.creating ? 'new' : route.edit} store={store} couch={couch} user={user}
            device={device} docId={route.creating ? null : route.edit} creating={!!route.creating} />
        ) : (
          <CodeList store={store} device={device} list={store.ofDevice(device, 'code')} hb={hb} />
        )}
      </section>

      <section aria-labelledby="logs-h">
        <h2 id="logs-h">Logs</h2>
        <Logs list={store.ofDevice(device, 'log')} hb={hb} couch={couch} device={device} />
      </section>

      <section aria-labelledby="commands-h">
        <h2 id="commands-h">Commands</h2>
        <Commands store={store} couch={couch} user={user} device={device}
          list={store.ofDevice(device, 'cmd')} live={live} />
      </section>
    </div>
  );
}
