"""The boundary between the supervisor and user code.

modules/importdir: validate module names and write a worker's private import
folder; environment: the minimal environment of a worker; spawn: start a
worker interpreter; proctree: find and kill a worker's whole process tree;
guardian: a tiny process that cleans up if the supervisor dies.
"""
