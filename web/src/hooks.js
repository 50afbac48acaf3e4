import {useEffect, useState} from 'preact/hooks';

// Re-render whenever the store changes.
export function useStore(store) {
  const [, setVersion] = useState(0);
  useEffect(() => store.subscribe((v) => setVersion(v)), [store]);
  return store;
}

// The server's clock, ticking every second (ages of heartbeats grow).
export function useNow(couch, period = 1000) {
  const [now, setNow] = useState(couch.now());
  useEffect(() => {
    const t = setInterval(() => setNow(couch.now()), period);
    return () => clearInterval(t);
  }, [couch, period]);
  return now;
}

// The hash route: "#/", "#/device/<MacID>", "#/device/<MacID>/code/<id>",
// "#/device/<MacID>/new", "#/group/<doc id>"; each may end in "?key=value&..." (route.query: the
// view's choices, such as the fleet list's search, so that a link shows them).
export function parseRoute(hash) {
  const text = String(hash || '');
  const mark = text.indexOf('?');
  const query = Object.fromEntries(new URLSearchParams(mark === -1 ? '' : text.slice(mark + 1)));
  const path = mark === -1 ? text : text.slice(0, mark);
  const parts = path.replace(/^#\/?/, '').split('/').filter((p) => p !== '');
  if (parts[0] === 'device' && parts[1]) {
    const route = {view: 'device', device: decodeURIComponent(parts[1]), query};
    if (parts[2] === 'code' && parts[3]) {
      route.edit = decodeURIComponent(parts.slice(3).join('/'));
    } else if (parts[2] === 'new') {
      route.edit = null;
      route.creating = true;
    }
    return route;
  }
  if (parts[0] === 'group' && parts[1]) {
    return {view: 'group', group: decodeURIComponent(parts.slice(1).join('/')), query};
  }
  return {view: 'fleet', query};
}

// "#/path?k=v": the choices that differ from their defaults (empty ones left out).
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') {
      params.set(k, v);
    }
  }
  const text = params.toString();
  return text ? path + '?' + text : path;
}

// Change the current view's choices in the URL (its path stays), without a
// new history entry per keystroke.
export function setQuery(query) {
  const hash = location.hash || '#/';
  const mark = hash.indexOf('?');
  navigate(withQuery(mark === -1 ? hash : hash.slice(0, mark), query), true);
}

export function deviceHref(device) {
  return '#/device/' + encodeURIComponent(device);
}

export function groupHref(id) {
  return '#/group/' + encodeURIComponent(id);
}

export function codeHref(device, id) {
  return deviceHref(device) + '/code/' + encodeURIComponent(id);
}

// Unsaved work: editors register here; leaving the page or the editor asks first.
export const unsaved = new Set();

export function confirmLeave() {
  if (!unsaved.size) {
    return true;
  }
  // eslint-disable-next-line no-alert
  return window.confirm('You have unsaved changes in the code editor. Leave them?');
}

export function useRoute() {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    let current = location.hash;
    const onChange = () => {
      if (location.hash === current) {
        return;
      }
      const next = parseRoute(location.hash);
      const leaving = parseRoute(current);
      const leavesEditor = (leaving.edit !== undefined || leaving.creating) &&
        (next.edit !== leaving.edit || next.device !== leaving.device || next.creating !== leaving.creating);
      if (leavesEditor && !confirmLeave()) {
        history.replaceState(null, '', current || '#/');
        return;
      }
      if (leavesEditor) {
        unsaved.clear();
      }
      current = location.hash;
      setRoute(next);
    };
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

export function navigate(hash, replace = false) {
  if (replace) {
    history.replaceState(null, '', hash);
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  } else {
    location.hash = hash;
  }
}
