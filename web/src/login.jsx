import {useEffect, useRef, useState} from 'preact/hooks';

// The login form: POST /_session (a cookie session, as CouchDB's own).
// onLogin(name, password) resolves to nothing or throws an Error whose message
// the form shows.
export function LoginForm({dbName, onLogin, heading, note, initialName = '', idPrefix = 'login'}) {
  const [name, setName] = useState(initialName);
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const nameRef = useRef(null);
  const passwordRef = useRef(null);

  useEffect(() => {
    (initialName ? passwordRef : nameRef).current.focus();
  }, []);

  const submit = async (e) => {
    e.preventDefault();
    if (busy) {
      return;
    }
    setBusy(true);
    setError('');
    try {
      await onLogin(name.trim(), password);
    } catch (err) {
      setError(err.message || String(err));
      setPassword('');
      passwordRef.current && passwordRef.current.focus();
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="login" onSubmit={submit} aria-labelledby={idPrefix + '-heading'} noValidate>
      <h1 id={idPrefix + '-heading'}>{heading || 'Log in'}</h1>
      <p class="muted">Database <strong>{dbName}</strong>, with your CouchDB account.</p>
      {note && <p class="note">{note}</p>}
      <label for={idPrefix + '-name'}>User name</label>
      <input id={idPrefix + '-name'} name="name" ref={nameRef} autocomplete="username"
        autocapitalize="none" spellcheck={false} required value={name}
        onInput={(e) => setName(e.currentTarget.value)} />
      <label for={idPrefix + '-password'}>Password</label>
      <input id={idPrefix + '-password'} name="password" ref={passwordRef} type="password"
        autocomplete="current-password" required value={password}
        onInput={(e) => setPassword(e.currentTarget.value)} />
      <div class="error" role="alert" id={idPrefix + '-error'}>{error}</div>
      <button type="submit" class="primary" disabled={busy}>{busy ? 'Logging in…' : 'Log in'}</button>
    </form>
  );
}
