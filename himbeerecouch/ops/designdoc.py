"""The design document ``_design/himbeerecouch`` that provisioning installs.

Its functions are the JavaScript files in ``design/`` (one per function;
``// @include NAME`` lines pull in ``classify.js``, which the page's build
imports too, ``rules.js`` and the roles), stored as source strings:

- ``validate_doc_update``: who may write what (README, "Operators' tools");
- the update handler ``insert_with_timestamp``, with the semantics of the
  lab's ``nedm_default`` handler (NEDM-COMPAT.md), so that heartbeats get the
  server's clock;
- the filters ``device``, ``doc_type`` and ``page`` (all but the devices'
  history and log archives) for ``_changes`` (deletions pass);
- the views ``heartbeats`` and ``by_device``.

The agent itself needs none of it to run.  Design functions must declare
every variable: the test server runs them in strict mode.
"""
import json
import re
from importlib.resources import files

from .. import __version__

DESIGN_NAME = "himbeerecouch"
DESIGN_ID = "_design/" + DESIGN_NAME
DEVICE_ROLE = "raspberry"
OPERATOR_ROLE = "operator"
LIMITED_ROLE = "raspberry_lmtd"   # the lab's users limited to the devices named in their roles

_INCLUDE = re.compile(r"^(?P<indent>[ \t]*)// @include (?P<name>\w+)[ \t]*$", re.M)
_EXPORT = re.compile(r"^export ", re.M)


def _source(name):
    """The text of ``design/<name>.js``, less the comment lines that open it."""
    text = files(__package__).joinpath("design", name + ".js").read_text(encoding="utf-8")
    lines = text.splitlines()
    while lines and lines[0].startswith("//"):
        lines.pop(0)
    return "\n".join(lines).strip()


def _function(name, settings):
    """A design function from ``design/<name>.js``, its ``// @include X`` lines
    replaced by ``design/X.js`` (or by ``settings`` for ``settings``)."""
    def include(match):
        what = match.group("name")
        text = settings if what == "settings" else _EXPORT.sub("", _source(what))
        return "\n".join(match.group("indent") + line if line else line
                         for line in text.splitlines())
    return _INCLUDE.sub(include, _source(name))


def design_document(operator_roles=(OPERATOR_ROLE,)):
    """The design document (without ``_rev``) for these operator roles."""
    roles = sorted(set(operator_roles) | {OPERATOR_ROLE})
    settings = "var OPERATOR_ROLES = %s;\nvar DEVICE_ROLE = %s;\nvar LIMITED_ROLE = %s;" % (
        json.dumps(roles), json.dumps(DEVICE_ROLE), json.dumps(LIMITED_ROLE))
    return {
        "_id": DESIGN_ID,
        "language": "javascript",
        "himbeerecouch": {"version": __version__, "operator_roles": roles},
        "validate_doc_update": _function("validate_doc_update", settings),
        "updates": {"insert_with_timestamp": _function("insert_with_timestamp", settings)},
        "filters": {"device": _function("filter_device", settings),
                    "doc_type": _function("filter_doc_type", settings),
                    "page": _function("filter_page", settings)},
        "views": {"heartbeats": {"map": _function("view_heartbeats", settings)},
                  "by_device": {"map": _function("view_by_device", settings)}},
    }


def managed_keys():
    """The keys of the design document that provisioning owns (others are left alone)."""
    return [k for k in design_document() if k != "_id"]
