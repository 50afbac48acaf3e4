// The fleet page: log in with CouchDB's _session, then the fleet and each
// device, kept current by the database's _changes feed.

import {render} from 'preact';
import {useEffect, useRef, useState} from 'preact/hooks';
import {Couch, CouchError, locate} from './couch.js';
import {Store} from './store.js';
import {LoginForm} from './login.jsx';
import {Fleet} from './fleet.jsx';
import {Device} from './device.jsx';
import {Group} from './group.jsx';
import {confirmLeave, unsaved, useNow, useRoute, useStore} from './hooks.js';

function loginError(e) {
  if (e instanceof CouchError) {
    if (e.status === 401) {
      return new Error('Wrong user name or password.');
    }
    if (e.offline) {
      return new Error('The database server cannot be reached. Check the network and try again.');
    }
    return new Error(`The server refused the login (${e.status}: ${e.reason || e.error}).`);
  }
  return e;
}

function accessError(e, name, dbName) {
  if (e instanceof CouchError && (e.status === 401 || e.status === 403)) {
    return new Error(`You are logged in as ${name}, but ${name} may not read the database ${dbName}. ` +
      'An admin can give you the role operator (himbeerecouch provision).');
  }
  if (e instanceof CouchError && e.status === 404) {
    return new Error(`The database ${dbName} does not exist on this server.`);
  }
  return loginError(e);
}

function ConnectionBanner({store}) {
  const c = store.connection;
  const [, tick] = useState(0);
  useEffect(() => {
    if (c.state !== 'lost') {
      return undefined;
    }
    const t = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(t);
  }, [c.state]);
  if (c.state !== 'lost') {
    return null;
  }
  const wait = Math.max(0, Math.ceil((c.retryAt - Date.now()) / 1000));
  return (
    <div class="banner lost" role="alert" id="connection-banner">
      <strong>Connection lost.</strong> {c.message} What is shown may be out of date; nothing you
      typed is lost. {wait > 0 ? `Trying again in ${wait} s.` : 'Trying again…'}
      <button type="button" onClick={() => store.retryNow()}>Retry now</button>
    </div>
  );
}

function App({couch, store}) {
  useStore(store);
  const route = useRoute();
  const now = useNow(couch);
  // checking | login | in ; expired: the session ran out while the page was in use.
  const [auth, setAuth] = useState({phase: 'checking', name: null, roles: [], expired: false, error: null});
  const main = useRef(null);

  const enter = async (ctx) => {
    try {
      await couch.info();
    } catch (e) {
      throw accessError(e, ctx.name, couch.loc.dbName);
    }
    setAuth({phase: 'in', name: ctx.name, roles: ctx.roles || [], expired: false, error: null});
    if (store.running) {
      store.resume();
    } else {
      store.start();
    }
  };

  useEffect(() => {
    couch.onUnauthorized = () => {
      setAuth((a) => (a.phase === 'in' ? {...a, expired: true} : a));
    };
    (async () => {
      try {
        const s = await couch.session();
        const ctx = s.userCtx || {};
        if (ctx.name) {
          try {
            await enter(ctx);
            return;
          } catch (e) {
            setAuth({phase: 'login', name: ctx.name, roles: [], expired: false, error: e.message});
            return;
          }
        }
        setAuth({phase: 'login', name: null, roles: [], expired: false, error: null});
      } catch (e) {
        setAuth({phase: 'login', name: null, roles: [], expired: false,
          error: loginError(e).message});
      }
    })();
    const beforeUnload = (e) => {
      if (unsaved.size) {
        e.preventDefault();
        e.returnValue = '';
      }
    };
    const offline = () => store.offline();
    const online = () => store.retryNow();
    window.addEventListener('beforeunload', beforeUnload);
    window.addEventListener('offline', offline);
    window.addEventListener('online', online);
    return () => {
      window.removeEventListener('beforeunload', beforeUnload);
      window.removeEventListener('offline', offline);
      window.removeEventListener('online', online);
    };
  }, []);

  // A new view: its title gets the focus (screen readers and keyboards start there).
  const routeKey = route.view + ':' + (route.device || '');
  const firstRoute = useRef(true);
  useEffect(() => {
    if (firstRoute.current) {
      firstRoute.current = false;
      return;
    }
    const title = document.getElementById('view-title');
    if (title) {
      title.focus();
    }
  }, [routeKey, auth.phase]);

  const login = async (name, password) => {
    let r;
    try {
      r = await couch.login(name, password);
    } catch (e) {
      throw loginError(e);
    }
    const ctx = {name: r.name || name, roles: r.roles || []};
    if (auth.expired && auth.name && ctx.name !== auth.name) {
      // Another user takes over: nothing of the first one's view stays.
      store.stop();
      store.reset();
    }
    await enter(ctx);
  };

  const logout = async () => {
    if (!confirmLeave()) {
      return;
    }
    unsaved.clear();
    store.stop();
    try {
      await couch.logout();
    } catch (e) {
      // the cookie is dropped by the server or expires by itself
    }
    store.reset();
    setAuth({phase: 'login', name: null, roles: [], expired: false, error: null});
  };

  const dbName = couch.loc.dbName;
  if (auth.phase === 'checking') {
    return <main class="center"><p class="muted" role="status">Loading…</p></main>;
  }
  if (auth.phase === 'login') {
    return (
      <main class="center" id="main">
        <LoginForm dbName={dbName} onLogin={login} heading="himbeerecouch: log in"
          note={auth.error} initialName={auth.name || ''} />
      </main>
    );
  }
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => {
        e.preventDefault();
        main.current.focus();
      }}>Skip to content</a>
      <header class="top" inert={auth.expired}>
        <a class="brand" href="#/">himbeerecouch</a>
        <span class="db" title="database">{dbName}</span>
        <span class="spacer" />
        <span class="who">{auth.name}</span>
        <button type="button" class="quiet" onClick={logout}>Log out</button>
      </header>
      <ConnectionBanner store={store} />
      <main id="main" ref={main} tabindex="-1" inert={auth.expired}>
        {route.view === 'device'
          ? <Device store={store} couch={couch} user={auth.name} route={route} now={now} />
          : (route.view === 'group' ? <Group store={store} route={route} now={now} />
            : <Fleet store={store} now={now} route={route} />)}
      </main>
      {auth.expired && (
        <div class="modal-backdrop">
          <div class="modal" role="dialog" aria-modal="true" aria-labelledby="relogin-heading">
            <LoginForm dbName={dbName} onLogin={login} idPrefix="relogin"
              heading="Your session has ended"
              note="Log in again to go on; the page keeps everything you typed."
              initialName={auth.name || ''} />
          </div>
        </div>
      )}
    </>
  );
}

function boot() {
  const root = document.getElementById('app');
  let loc;
  try {
    loc = locate(location.pathname, location.search);
  } catch (e) {
    root.textContent = e.message;
    return;
  }
  document.title = 'himbeerecouch · ' + loc.dbName;
  const couch = new Couch(loc);
  const store = new Store(couch);
  root.textContent = '';      // the message for when no script runs
  render(<App couch={couch} store={store} />, root);
}

boot();
