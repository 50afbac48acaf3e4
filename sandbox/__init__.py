"""The boundary between the supervisor and user code.

modules/importdir: validate module names and write a worker's private import
folder; environment: the minimal environment of a worker; spawn: start a
worker interpreter; proctree: find and kill a worker's whole process tree;
guardian: a tiny process that cleans up if the supervisor dies.

It is installed as ``himbeerecouch.sandbox``.  It may import the standard
library and psutil (proctree), and nothing of the agent (``himbeerecouch.agent``)
or of the operator's tools; the agent imports it, and ``ops`` only its
``modules`` (to check module names as the agent will).  ``guardian`` runs in
a process of its own: standard library only.
"""
