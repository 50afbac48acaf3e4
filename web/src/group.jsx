// A group code document's page: its tag, the devices that carry it, which
// revision each runs, and how its staged rollout stands (as the devices'
// heartbeats report it; the devices decide, the page only shows).
import {AliveBadge, deviceName} from './fleet.jsx';
import {deviceHref} from './hooks.js';
import {liveness, rolloutProgress, stateTone} from './model.js';

const TONE = {complete: 'ok', halted: 'bad', paused: 'warn'};

export function Group({store, route, now}) {
  const doc = store.docs.get(route.group);
  if (!doc) {
    return (
      <div class="group-view">
        <nav class="crumbs" aria-label="Breadcrumb"><a href="#/">Fleet</a></nav>
        <p class="empty">{store.loaded ? `There is no group code document ${route.group}.` : 'Loading…'}</p>
      </div>
    );
  }
  const tag = String(doc.type).slice(4);
  const fleet = [...store.fleet().values()].filter((e) => e.tags.includes(tag));
  const progress = rolloutProgress(doc, fleet);
  const byDevice = new Map(fleet.map((e) => [e.device, e]));
  return (
    <div class="group-view" data-group={doc._id}>
      <nav class="crumbs" aria-label="Breadcrumb"><a href="#/">Fleet</a> <span aria-hidden="true">›</span> {String(doc.name || doc._id)}</nav>
      <div class="view-head">
        <h1 id="view-title" tabindex="-1">{String(doc.name || doc._id)}</h1>
        <span class="tags"><a class="tag" href={'#/?tag=' + encodeURIComponent(tag)}>{tag}</a></span>
      </div>
      <p>Runs on every device tagged <b>{tag}</b>: {fleet.length} device{fleet.length === 1 ? '' : 's'}.
        Revision {String(doc._rev)}.</p>
      <p class="rollout-state" data-state={progress.state}>
        Rollout: <span class={'badge tone-' + (TONE[progress.state] || 'warn')}>{progress.state}</span>
        {progress.canaries.length > 0 && ` · canaries ${progress.canaries.map((m) => {
          const e = store.fleet().get(m);
          return e ? deviceName(m, e.heartbeat, e.label) : m;
        }).join(', ')}, healthy after ${progress.healthyFor ?? 60} s`}
        {progress.paused && ' · paused: new revisions stay on the canaries'}
      </p>
      {fleet.length > 0 && (
        <table class="group-devices cards">
          <caption class="sr-only">Devices of the group and the revision each runs</caption>
          <thead>
            <tr><th scope="col">Device</th><th scope="col">Alive</th><th scope="col">Revision</th><th scope="col">State</th></tr>
          </thead>
          <tbody>
            {progress.devices.map((d) => {
              const e = byDevice.get(d.device);
              const w = d.entry;
              return (
                <tr key={d.device} data-device={d.device}>
                  <th scope="row" data-label="Device">
                    <a href={deviceHref(d.device)}>{deviceName(d.device, e.heartbeat, e.label)}</a>
                    {d.canary && <span class="tag">canary</span>}
                  </th>
                  <td data-label="Alive"><AliveBadge live={liveness(e.heartbeat, now)} /></td>
                  <td data-label="Revision">
                    {w ? String(w.rev) : '–'} {w && (d.current ? '(this revision)' : '(an older one)')}
                    {d.held && <span class="sub">holding the new revision back: {d.held}</span>}
                  </td>
                  <td data-label="State">
                    {w ? <span class={'badge tone-' + stateTone(w.state)}>{String(w.state)}</span> : <span class="muted">not running</span>}
                    {w && w.rolled_back_from && (
                      <p class="problem rolled-back">rolled back from {String(w.rolled_back_from)}: {String(w.rolled_back_error || w.error || '')}</p>
                    )}
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
