import {useState} from 'preact/hooks';
import {
  duration, heartbeatProblem, liveness, loadText, macAddress, number, parseMacId, stateTone,
  workerCounts,
} from './model.js';
import {deviceHref, groupHref, navigate, setQuery} from './hooks.js';
import {SHOW, SORT, allTags, applyChoices, choices, isFailing, toQuery} from './fleetlist.js';

const ALIVE_TEXT = {fresh: 'fresh', late: 'late', silent: 'silent', none: 'no heartbeat yet'};

export function AliveBadge({live}) {
  let detail = '';
  if (live.state === 'none') {
    detail = '';
  } else if (live.age === null) {
    detail = 'time unreadable';
  } else {
    detail = duration(live.age) + ' ago';
  }
  return (
    <span class={'badge alive-' + live.state} data-alive={live.state}
      title={`heartbeat every ${live.interval} s`}>
      <span class="dot" aria-hidden="true" />
      {ALIVE_TEXT[live.state]}
      {detail && <span class="age"> · {detail}</span>}
      {live.stopped && <span class="age"> · agent stopped</span>}
    </span>
  );
}

export function WorkerCounts({list}) {
  const counts = workerCounts(list);
  if (!counts.length) {
    return <span class="muted">none</span>;
  }
  return (
    <span class="counts">
      {counts.map(([state, n]) => (
        <span class={'count state-' + state} key={state}>{n} {state}</span>
      ))}
    </span>
  );
}

// The name of its device document, else its host name, else the MacID.
export function deviceName(device, hb, label) {
  return label || (hb && typeof hb.hostname === 'string' && hb.hostname) || device;
}

// `fleet`: the devices, whose names (from their device documents) open them too.
function OpenDevice({fleet}) {
  const [text, setText] = useState('');
  const [error, setError] = useState('');
  const submit = (e) => {
    e.preventDefault();
    const named = fleet.filter((d) => d.label && d.label === text.trim());
    const macid = parseMacId(text) ?? (named.length === 1 ? named[0].device : null);
    if (macid === null) {
      setError(named.length > 1 ? `${named.length} devices are named ${text.trim()}: give its MacID.`
        : 'Give a device name, a MacID (decimal digits) or a MAC address such as b8:27:eb:12:34:56.');
      return;
    }
    setError('');
    navigate(deviceHref(macid));
  };
  return (
    <form class="open-device" onSubmit={submit}>
      <label for="open-device">Open a device by name, MacID or MAC address</label>
      <div class="row">
        <input id="open-device" value={text} onInput={(e) => setText(e.currentTarget.value)}
          placeholder="b8:27:eb:12:34:56" autocapitalize="none" spellcheck={false}
          aria-describedby="open-device-error" />
        <button type="submit">Open</button>
      </div>
      <div class="error" id="open-device-error" role="alert">{error}</div>
    </form>
  );
}

function FleetControls({c, tags}) {
  const change = (key) => (e) => setQuery(toQuery({...c, [key]: e.currentTarget.value}));
  return (
    <form class="fleet-controls" role="search" onSubmit={(e) => e.preventDefault()}>
      <div class="control grow">
        <label for="fleet-search">Search devices, scripts, tags</label>
        <input id="fleet-search" type="search" value={c.q} onInput={change('q')}
          placeholder="hall B, logger, 1.2.3.4" autocapitalize="none" spellcheck={false} />
      </div>
      <div class="control">
        <label for="fleet-show">Show</label>
        <select id="fleet-show" value={c.show} onChange={change('show')}>
          {Object.entries(SHOW).map(([k, text]) => <option value={k} key={k}>{text}</option>)}
        </select>
      </div>
      <div class="control">
        <label for="fleet-tag">Tag</label>
        <select id="fleet-tag" value={c.tag} onChange={change('tag')}>
          <option value="">any tag</option>
          {[...new Set([...tags, ...(c.tag ? [c.tag] : [])])].map((t) => <option value={t} key={t}>{t}</option>)}
        </select>
      </div>
      <div class="control">
        <label for="fleet-sort">Sort by</label>
        <select id="fleet-sort" value={c.sort} onChange={change('sort')}>
          {Object.entries(SORT).map(([k, text]) => <option value={k} key={k}>{text}</option>)}
        </select>
      </div>
    </form>
  );
}

function Scripts({list}) {
  if (!list.length) {
    return <span class="muted">none</span>;
  }
  return (
    <ul class="scripts">
      {list.map((w, i) => (
        <li key={String(w.doc_id || i)} data-script={String(w.doc_id || '')}>
          <span class={'badge tone-' + (isFailing(w) ? 'bad' : stateTone(w.state))}>{String(w.state || '?')}</span>
          {' '}{String(w.name || w.doc_id || '?')}
        </li>
      ))}
    </ul>
  );
}

export function Fleet({store, now, route}) {
  const c = choices(route && route.query);
  const fleet = [...store.fleet().values()].map((e) => ({...e, name: deviceName(e.device, e.heartbeat, e.label)}));
  const groups = store.groups();
  const counts = {fresh: 0, late: 0, silent: 0, none: 0};
  for (const e of fleet) {
    counts[liveness(e.heartbeat, now).state] += 1;
  }
  const rows = applyChoices(fleet, c, now);
  const narrowed = c.q || c.show !== 'all' || c.tag;

  return (
    <div class="fleet-view">
      <div class="view-head">
        <h1 id="view-title" tabindex="-1">Fleet</h1>
        <p class="summary" aria-live="polite">
          {store.loaded
            ? `${fleet.length} device${fleet.length === 1 ? '' : 's'}: ${counts.fresh} fresh, ${counts.late} late, ` +
              `${counts.silent} silent, ${counts.none} without heartbeat`
            : 'Loading…'}
        </p>
      </div>
      <OpenDevice fleet={fleet} />
      {store.loadError && !store.loaded && (
        <p class="error-box" role="alert">Could not load the fleet: {store.loadError.message}</p>
      )}
      {store.loaded && !fleet.length && (
        <p class="empty">No device has sent a heartbeat or has code in this database yet. Once an
          agent runs (<code>himbeerecouch run</code>) its device appears here by itself.</p>
      )}
      {fleet.length > 0 && <FleetControls c={c} tags={allTags(fleet)} />}
      {fleet.length > 0 && (
        <p class="shown" role="status" id="fleet-shown">
          {narrowed ? `${rows.length} of ${fleet.length} devices shown` : `${rows.length} devices`}
          {narrowed && <> · <a href="#/">show all</a></>}
        </p>
      )}
      {groups.length > 0 && (
        <nav class="groups" aria-label="Group code documents">
          Groups: {groups.map((g) => (
            <a key={g._id} href={groupHref(g._id)} class="group-link">{String(g.name || g._id)} <span class="tag">{String(g.type).slice(4)}</span></a>
          ))}
        </nav>
      )}
      {rows.length > 0 && (
        <table class="fleet cards">
          <caption class="sr-only">Devices, their last heartbeat and their workers</caption>
          <thead>
            <tr>
              <th scope="col">Device</th>
              <th scope="col">Alive</th>
              <th scope="col">IP</th>
              <th scope="col">Uptime</th>
              <th scope="col">Temperature</th>
              <th scope="col">Load</th>
              <th scope="col">Scripts</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(({device, heartbeat: hb, live, code, name, tags, workers: list}) => {
              const problem = hb ? heartbeatProblem(hb) : null;
              const uptime = hb ? (hb.system_uptime ?? hb.uptime) : undefined;
              return (
                <tr key={device} data-device={device} class={'alive-' + live.state}>
                  <th scope="row" data-label="Device">
                    <a href={deviceHref(device)} class="device-link">{name}</a>
                    <span class="sub">{device}{macAddress(device) ? ' · ' + macAddress(device) : ''}</span>
                    {tags.length > 0 && (
                      <span class="tags">{tags.map((t) => <span class="tag" key={t}>{t}</span>)}</span>
                    )}
                  </th>
                  <td data-label="Alive">
                    <AliveBadge live={live} />
                    {problem && <span class="problem" role="note">unreadable heartbeat: {problem}</span>}
                  </td>
                  <td data-label="IP">{hb && typeof hb.ip === 'string' ? hb.ip : '–'}</td>
                  <td data-label="Uptime">{duration(uptime)}</td>
                  <td data-label="Temperature">{number(hb && hb.cpu_temperature, 1, ' °C')}</td>
                  <td data-label="Load">{loadText(hb && hb.load)}</td>
                  <td data-label="Scripts">
                    {hb ? <><WorkerCounts list={list} /><Scripts list={list} /></>
                      : <span class="muted">{code} code document{code === 1 ? '' : 's'} waiting</span>}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </div>
  );
}
