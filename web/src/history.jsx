// A device's past: plots of temperature, load, free memory and restarts, the
// workers' state timelines and the periods the device was silent, over 1 h,
// 24 h or 30 d (the choice is in the URL: "#/device/<MacID>?range=30d").
//
// The data are the device's history documents (agent/history.py):
// <MacID>_history_1m (a slot a minute, 24 h) and <MacID>_history_15m (15 min,
// 30 d), read when shown and again every minute (the feed leaves them out).

import {useEffect, useMemo, useState} from 'preact/hooks';
import {setQuery} from './hooks.js';
import {Plot, Timeline, clockText} from './plots.jsx';
import {duration} from './model.js';

export const RANGES = {
  '1h': {label: '1 hour', seconds: 3600, tier: '1m'},
  '24h': {label: '24 hours', seconds: 86400, tier: '1m'},
  '30d': {label: '30 days', seconds: 30 * 86400, tier: '15m'},
};
const REFRESH = 60000;

const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);

// The part of a history document inside [from, to] (seconds), as columns.
export function historyColumns(doc, from, to) {
  const step = isNumber(doc && doc.step) && doc.step > 0 ? doc.step : 60;
  const start = isNumber(doc && doc.start) ? doc.start : 0;
  const online = Array.isArray(doc && doc.online) ? doc.online : [];
  const series = (doc && typeof doc.series === 'object' && doc.series) || {};
  const column = (list, i) => (Array.isArray(list) && isNumber(list[i]) ? list[i] : null);
  const index = [];
  for (let i = 0; i < online.length; i++) {
    const t = start + i * step;
    if (t + step > from && t <= to) {
      index.push(i);
    }
  }
  const times = index.map((i) => start + i * step);
  const workersDoc = (doc && typeof doc.workers === 'object' && doc.workers) || {};
  const workers = Object.entries(workersDoc).map(([id, w]) => ({
    id,
    name: typeof w.name === 'string' ? w.name : id,
    states: index.map((i) => (typeof w.states === 'string' && w.states[i]) || '.'),
    restarts: index.map((i) => column(w.restarts, i)),
  })).sort((a, b) => a.name.localeCompare(b.name));
  const restarts = index.map((_, n) => {
    let sum = null;
    for (const w of workers) {
      if (w.restarts[n] !== null) {
        sum = (sum || 0) + w.restarts[n];
      }
    }
    return sum;
  });
  return {
    step, times, workers, restarts,
    online: index.map((i) => column(online, i)),
    temperature: index.map((i) => column(series.cpu_temperature, i)),
    load: index.map((i) => column(series.load, i)),
    memory: index.map((i) => column(series.memory_free_mb, i)),
  };
}

// Periods without data (the device or its agent was silent) and periods whose
// heartbeats did not reach the server: [{from, to, kind, open}], open = until now.
export function silences(cols, to) {
  const out = [];
  let seen = false;
  let run = null;
  cols.times.forEach((t, i) => {
    const v = cols.online[i];
    const kind = v === null ? 'silent' : (v === 0 ? 'offline' : null);
    if (v !== null) {
      seen = true;
    }
    if (run && run.kind === kind) {
      run.to = t + cols.step;
      return;
    }
    if (run) {
      out.push(run);
    }
    run = kind && (seen || kind === 'offline') ? {from: t, to: t + cols.step, kind} : null;
  });
  if (run) {
    out.push({...run, to, open: true});
  }
  return out.filter((r) => r.kind === 'offline' || !r.open || r.to - r.from > cols.step);
}

function Silences({list, long}) {
  if (!list.length) {
    return <p class="muted" id="history-gaps">No silent period in this range.</p>;
  }
  return (
    <ul class="gaps" id="history-gaps">
      {list.map((g, i) => (
        <li key={i} data-gap={g.kind}>
          {g.kind === 'silent' ? 'Silent' : 'Heartbeats did not reach the server'}
          {' '}from {clockText(g.from, long)}{g.open ? ' until now' : ` to ${clockText(g.to, long)}`}
          {' '}({duration(g.to - g.from)})
        </li>
      ))}
    </ul>
  );
}

export function History({couch, device, route, now}) {
  const range = RANGES[route.query && route.query.range] ? route.query.range : '24h';
  const spec = RANGES[range];
  const docId = `${device}_history_${spec.tier}`;
  const [state, setState] = useState({id: null, doc: null, error: null});
  useEffect(() => {
    let alive = true;
    const load = async () => {
      try {
        const doc = await couch.find(docId);
        if (alive) {
          setState({id: docId, doc, error: doc ? null : 'none'});
        }
      } catch (e) {
        if (alive) {
          setState({id: docId, doc: null, error: e});
        }
      }
    };
    load();
    const t = setInterval(load, REFRESH);
    return () => {
      alive = false;
      clearInterval(t);
    };
  }, [docId]);

  // The range ends at the next full minute: the plots are redrawn once a minute, not every second.
  const to = Math.ceil(now / 60000) * 60;
  const from = to - spec.seconds;
  const long = spec.seconds > 86400;
  const doc = state.id === docId ? state.doc : null;
  const cols = useMemo(() => (doc ? historyColumns(doc, from, to) : null), [doc, from, to]);
  return (
    <div class="history" data-range={range}>
      <div class="range" role="group" aria-label="Time range">
        {Object.entries(RANGES).map(([key, r]) => (
          <button type="button" key={key} data-range={key} aria-pressed={key === range}
            class={key === range ? 'primary' : 'quiet'}
            onClick={() => setQuery({...route.query, range: key === '24h' ? '' : key})}>{r.label}</button>
        ))}
      </div>
      {state.id !== docId && <p class="muted" role="status">Loading the history…</p>}
      {state.id === docId && state.error === 'none' && (
        <p class="empty">This device has written no history yet (its agent writes one a minute).</p>
      )}
      {state.id === docId && state.error && state.error !== 'none' && (
        <p class="error-box" role="alert">Could not load the history: {state.error.message}</p>
      )}
      {cols && (
        <>
          <Silences list={silences(cols, to)} long={long} />
          <div class="plots">
            <Plot id="temperature" title="CPU temperature" unit=" °C" times={cols.times}
              values={cols.temperature} from={from} to={to} color="#c0392b" />
            <Plot id="load" title="Load (1 min)" unit="" times={cols.times} values={cols.load}
              from={from} to={to} color="#2c6fbb" />
            <Plot id="memory" title="Free memory" unit=" MB" times={cols.times} values={cols.memory}
              from={from} to={to} color="#27855a" />
            <Plot id="restarts" title="Restarts" unit="" times={cols.times} values={cols.restarts}
              from={from} to={to} color="#b7791f" bars />
          </div>
          <h3>Workers over time</h3>
          {cols.workers.length ? cols.workers.map((w) => (
            <Timeline key={w.id} worker={w} times={cols.times} step={cols.step} from={from} to={to} />
          )) : <p class="muted">No worker in this range.</p>}
          <p class="legend" aria-hidden="true">
            {['running', 'starting', 'stopping', 'stopped', 'exited', 'backoff', 'fatal'].map((s) => (
              <span key={s}><span class={'swatch state-' + s} />{s}</span>
            ))}
            <span><span class="swatch timeline-empty" />no data</span>
          </p>
        </>
      )}
    </div>
  );
}
