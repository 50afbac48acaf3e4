"""The house rules of the source tree, read from the import statements.

The agent (``himbeerecouch/agent``) and the operator's tools
(``himbeerecouch/ops``) never import each other; the shared modules at the
bottom import neither side; nothing imports ``cli``; the runner imports
nothing of the supervisor, the sandbox nothing of the agent; and no module
imports itself back through a circle.
"""
import ast
import os
import subprocess
import sys

from cli_helpers import ROOT

PACKAGE = os.path.join(ROOT, "himbeerecouch")


def module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    for top in ("runner", "sandbox"):
        if rel == top or rel.startswith(top + "."):
            rel = "himbeerecouch." + rel
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def sources():
    """{module name: path} of every product module (runner/ and sandbox/ under
    their installed names; the links in himbeerecouch/ are not walked twice)."""
    found = {}
    for top in ("himbeerecouch", "runner", "sandbox"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))
                       and d not in ("__pycache__", "web", "design")]
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(folder, f)
                    found[module_name(path)] = path
    return found


def imports(name, path):
    """The himbeerecouch modules that module ``name`` imports (anywhere in it)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(base + "." + a.name for a in node.names)
    return {m for m in found if m == "himbeerecouch" or m.startswith("himbeerecouch.")}


def graph():
    mods = sources()
    return {name: {m for m in imports(name, path) if m in mods and m != name}
            for name, path in mods.items()}


def side(name):
    """agent, ops, runner, sandbox, or bottom (the shared modules, cli, prog)."""
    parts = name.split(".")
    return parts[1] if parts[1:2] and parts[1] in ("agent", "ops", "runner", "sandbox") \
        else "bottom"


def test_the_sides_do_not_import_each_other():
    edges = graph()
    wrong = []
    for name, targets in edges.items():
        for target in targets:
            a, b = side(name), side(target) if target != "himbeerecouch" else "bottom"
            if target == "himbeerecouch.cli" and name != "himbeerecouch.__main__":
                wrong.append("%s imports the command line" % name)
            elif a == "agent" and b == "ops" or a == "ops" and b == "agent":
                wrong.append("%s (%s) imports %s (%s)" % (name, a, target, b))
            elif a == "bottom" and b in ("agent", "ops") and name not in (
                    "himbeerecouch", "himbeerecouch.cli", "himbeerecouch.prog"):
                wrong.append("shared module %s imports %s" % (name, target))
            elif a == "runner" and b != "runner" and target != "himbeerecouch":
                wrong.append("the runner's %s imports %s" % (name, target))
            elif a == "sandbox" and b not in ("sandbox",) and target != "himbeerecouch":
                wrong.append("the sandbox's %s imports %s" % (name, target))
    assert not wrong, "\n".join(sorted(wrong))
    assert side("himbeerecouch.agent.supervisor") == "agent"
    assert "himbeerecouch.agent.supervisor" in edges and "himbeerecouch.ops.provision" in edges


def test_no_import_circle():
    edges = graph()
    state, circles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # The package itself is imported first by every submodule: not a circle.
    circles = [c for c in circles if not c.startswith("himbeerecouch ->")]
    assert not circles, "\n".join(circles)


def test_the_checkout_imports_from_its_root():
    for code in ("import himbeerecouch.prog, himbeerecouch.runner.api, "
                 "himbeerecouch.sandbox.spawn; print(himbeerecouch.runner.api.__file__)",):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert os.path.realpath(out.stdout.strip()) == os.path.join(ROOT, "runner", "api.py")
    out = subprocess.run([sys.executable, "-m", "himbeerecouch", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "provision" in out.stdout, out.stderr
