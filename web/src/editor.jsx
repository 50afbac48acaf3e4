// A CodeMirror 6 editor for Python source: highlighting, line numbers, undo,
// search, bracket matching.  Tab is left to the browser (focus moves on), so
// the editor never traps keyboard users; indent with Ctrl-] / Ctrl-[ instead.

import {useEffect, useRef} from 'preact/hooks';
import {EditorView, basicSetup} from 'codemirror';
import {Decoration} from '@codemirror/view';
import {EditorState, Compartment} from '@codemirror/state';
import {python} from '@codemirror/lang-python';

const theme = EditorView.theme({
  '&': {fontSize: '0.9rem', border: '1px solid var(--line)', borderRadius: '4px'},
  '&.cm-focused': {outline: '3px solid var(--focus)', outlineOffset: '1px'},
  '.cm-scroller': {fontFamily: 'var(--mono)', minHeight: '14rem', maxHeight: '60vh'},
  '.cm-gutters': {background: 'var(--panel)', color: 'var(--muted)'},
});

// The line a worker reported (a syntax error): marked, with the message as its
// title; nothing when the text has fewer lines now.
function markedLine(mark) {
  if (!mark) {
    return [];
  }
  const decoration = Decoration.line({class: 'cm-reported', attributes: {title: mark.message}});
  return EditorView.decorations.of((view) => (mark.line >= 1 && mark.line <= view.state.doc.lines
    ? Decoration.set([decoration.range(view.state.doc.line(mark.line).from)])
    : Decoration.none));
}

// value/onChange: the text; fileKey: which file is shown (each keeps its own
// undo history); label: the accessible name; readOnly; mark: {line, message}
// of a line to mark, or null.
export function CodeEditor({value, onChange, fileKey, label, readOnly = false, id, mark = null}) {
  const host = useRef(null);
  const view = useRef(null);
  const states = useRef(new Map());
  const current = useRef(null);
  const changed = useRef(onChange);
  const editable = useRef(new Compartment());
  const labels = useRef(new Compartment());
  const marks = useRef(new Compartment());
  changed.current = onChange;

  const makeState = (text) => EditorState.create({
    doc: text,
    extensions: [
      basicSetup,
      python(),
      theme,
      editable.current.of([EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]),
      labels.current.of(EditorView.contentAttributes.of(id ? {'aria-label': label, id} : {'aria-label': label})),
      marks.current.of(markedLine(mark)),
      EditorView.updateListener.of((u) => {
        if (u.docChanged && changed.current) {
          changed.current(u.state.doc.toString());
        }
      }),
    ],
  });

  useEffect(() => {
    view.current = new EditorView({parent: host.current, state: makeState(value || '')});
    current.current = fileKey;
    return () => {
      view.current.destroy();
      view.current = null;
    };
  }, []);

  // Another file: keep the state (and undo history) of the one we leave.
  useEffect(() => {
    const v = view.current;
    if (!v || current.current === fileKey) {
      return;
    }
    states.current.set(current.current, v.state);
    const kept = states.current.get(fileKey);
    const state = kept && kept.doc.toString() === (value || '') ? kept : makeState(value || '');
    v.setState(state);
    current.current = fileKey;
  }, [fileKey]);

  // The text changed from outside (a newer revision loaded): replace it.
  useEffect(() => {
    const v = view.current;
    if (v && v.state.doc.toString() !== (value || '')) {
      v.dispatch({changes: {from: 0, to: v.state.doc.length, insert: value || ''}});
    }
  }, [value]);

  useEffect(() => {
    const v = view.current;
    if (v) {
      v.dispatch({effects: [
        editable.current.reconfigure([EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]),
        labels.current.reconfigure(EditorView.contentAttributes.of(id ? {'aria-label': label, id} : {'aria-label': label})),
      ]});
    }
  }, [readOnly, label]);

  const markKey = mark ? `${mark.line}:${mark.message}` : '';
  useEffect(() => {
    const v = view.current;
    if (v) {
      v.dispatch({effects: marks.current.reconfigure(markedLine(mark))});
    }
  }, [markKey, fileKey]);

  return <div class="code-editor" ref={host} data-file={fileKey} />;
}
