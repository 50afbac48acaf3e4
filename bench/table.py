"""The bench's one table: figures, targets, the peer baseline, and a verdict.

:func:`rows` turns the phases' raw results into rows (a missing result says
which phase failed); :func:`render` makes the Markdown table that is printed
and written; :func:`write_results` puts it into bench/RESULTS.md between the
``bench:`` markers and keeps whatever else the file says (the notes).
"""
import os
import statistics
from dataclasses import dataclass

BEGIN = "<!-- bench:begin (written by make bench; edit only outside these markers) -->"
END = "<!-- bench:end -->"

PHASE_OF = {"reload": "device", "command": "device", "rss0": "device", "rss50": "device",
            "worker_rss": "device", "cpu_pct": "device", "collateral": "device",
            "bare_start": "baseline", "bare_rss": "baseline", "peer_cli": "peer",
            "peer_rpc": "peer", "peer_rss": "peer", "scale_start": "scale",
            "scale_stop": "scale", "fleet_command": "fleet", "fleet_hb_rps": "fleet",
            "soak_start": "soak", "soak_left_processes": "soak"}


@dataclass
class Row:
    num: str
    measure: str
    value: str
    target: str
    peer: str
    verdict: str = ""
    miss: str = ""          # "by how much", for the notes


def _verdict(value, limit, unit, strict=False):
    """``met`` or ``missed by ...`` for a figure that must stay at most ``limit``."""
    ok = value < limit if strict else value <= limit
    if ok:
        return "met", ""
    over = value - limit
    pct = 100.0 * over / limit if limit else float("inf")
    text = "missed by %s%s (%+.0f%%)" % (_num(over), unit, pct)
    return text, text


def _num(x):
    return "%.0f" % x if abs(x) >= 100 else "%.1f" % x if abs(x) >= 1 else "%.2f" % x


def rows(r, failures, cfg, percentile):
    def has(*keys):
        return all(k in r for k in keys)

    def failed(key):
        phase = PHASE_OF.get(key, "?")
        return "not measured (%s: %s)" % (phase, failures.get(phase, "skipped"))

    def p50(key):
        return statistics.median(r[key])

    def pair(key):
        return "%s / %s ms" % (_num(p50(key)), _num(percentile(r[key], 95)))

    out = []

    def add(num, measure, key_or_keys, value, target, peer, check=None):
        keys = key_or_keys if isinstance(key_or_keys, tuple) else (key_or_keys,)
        if not has(*keys):
            out.append(Row(num, measure, failed(keys[0]), target, peer, "-"))
            return
        verdict, miss = check() if check else ("-", "")
        out.append(Row(num, measure, value(), target, peer, verdict, miss))

    bare = "bare `python -I -c pass` start %s ms (p50, n=%d)" % (
        _num(p50("bare_start")), cfg.bare_runs) if has("bare_start") else "bare start: not measured"
    peer = ("supervisord, 50 programs: `supervisorctl restart` %s; its XML-RPC calls alone %s"
            % (pair("peer_cli"), pair("peer_rpc"))) if has("peer_cli", "peer_rpc") \
        else "supervisord: not measured"
    add("1", "Reload latency p50 / p95, PUT of a new revision -> new main() running, "
        "1 doc among 50 workers (n=%d)" % cfg.reload_runs, "reload",
        lambda: pair("reload"), "p50 <= 150 ms", peer,
        lambda: _verdict(p50("reload"), 150, " ms"))
    add("1", "Reload p50 / bare interpreter start p50 (same run)", ("reload", "bare_start"),
        lambda: "%.1fx" % (p50("reload") / p50("bare_start")), "<= 4x",
        bare + ("; supervisord XML-RPC %.1fx, supervisorctl %.1fx" % (
            p50("peer_rpc") / p50("bare_start"), p50("peer_cli") / p50("bare_start"))
            if has("peer_rpc", "bare_start") else ""),
        lambda: _verdict(p50("reload") / p50("bare_start"), 4, "x"))
    add("1", "Collateral restarts of the other 49 workers (pids checked, all reloads)",
        "collateral", lambda: "%d" % r["collateral"], "0", "-",
        lambda: _verdict(r["collateral"], 0, ""))
    def claimed(key):
        return "; claim visible at p50 %s ms" % _num(statistics.median(r[key])) if r.get(key) else ""

    add("2", "Command round trip p50 / p95, PUT of `true` -> result in the database "
        "(n=%d)" % cfg.command_runs, "command", lambda: pair("command") + claimed("command_claim"),
        "p50 <= 60 ms", "-",
        lambda: _verdict(p50("command"), 60, " ms"))
    peer_rss = ("supervisord with 50 programs: %.1f MB" % r["peer_rss"]) if has("peer_rss") else "-"
    add("3", "Supervisor RSS, idle, 0 workers", "rss0", lambda: "%.1f MB" % r["rss0"],
        "<= 30 MB", "-", lambda: _verdict(r["rss0"], 30, " MB"))
    add("3", "Supervisor RSS, idle, 50 workers", "rss50", lambda: "%.1f MB" % r["rss50"],
        "<= 30 MB", peer_rss, lambda: _verdict(r["rss50"], 30, " MB"))
    add("3", "One idle worker's RSS, trivial main() waiting (median of 50)",
        ("worker_rss", "bare_rss"), lambda: "%.1f MB" % r["worker_rss"],
        "<= bare + 4 MB = %.1f MB" % (r["bare_rss"] + 4) if has("bare_rss") else "<= bare + 4 MB",
        "bare idle `python -I`: %.1f MB" % r["bare_rss"] if has("bare_rss") else "-",
        lambda: _verdict(r["worker_rss"], r["bare_rss"] + 4, " MB"))
    add("3", "Supervisor CPU over %.0f s, 50 idle workers (user+system)" % cfg.cpu_window,
        "cpu_pct", lambda: "%.2f %% of a core" % r["cpu_pct"], "<= 1 %", "-",
        lambda: _verdict(r["cpu_pct"], 1, " %-points"))
    add("4", "Cold start -> 100 workers running (median of %d)" % cfg.scale_runs,
        "scale_start", lambda: "%.2f s" % p50("scale_start"), "<= 5 s", "-",
        lambda: _verdict(p50("scale_start"), 5, " s"))
    add("4", "SIGINT -> 100 cooperative workers stopped (median of %d)" % cfg.scale_runs,
        "scale_stop", lambda: "%.2f s" % p50("scale_stop"), "<= 2 s",
        "agent process exited after %.2f s" % p50("scale_exit") if has("scale_exit") else "-",
        lambda: _verdict(p50("scale_stop"), 2, " s"))
    add("5", "Fleet of 50 agents: command round trip p50 / p95 (n=%d, agents in turn)"
        % cfg.fleet_command_runs, "fleet_command",
        lambda: pair("fleet_command") + claimed("fleet_claim"),
        "p95 < 500 ms", "-",
        lambda: _verdict(percentile(r["fleet_command"], 95), 500, " ms", strict=True))
    add("5", "Fleet of 50 agents: requests/s their heartbeats cause at the server "
        "(--heartbeat-interval 10; median of %d windows of %.0f s)"
        % (cfg.fleet_windows, cfg.fleet_window), "fleet_hb_rps",
        lambda: "%.2f req/s" % r["fleet_hb_rps"], "none set (ideal: 50/10 = 5.0)",
        "all requests: %.2f req/s; server CPU %.1f %%" % (
            r["fleet_total_rps"], r["fleet_server_cpu"]) if has("fleet_total_rps") else "-",
        lambda: ("-", ""))
    soak_what = "%.0f s" % cfg.soak + (" (the issue's 10 min: `make bench SOAK=600`)"
                                      if cfg.soak < 600 else "")
    add("6", "Soak %s: supervisor RSS end - start" % soak_what, "soak_start",
        lambda: "%+.1f MB (%.1f -> %.1f)" % (r["soak_end"]["rss"] - r["soak_start"]["rss"],
                                             r["soak_start"]["rss"], r["soak_end"]["rss"]),
        "< 5 MB", "%d edits/commands/crash steps, %d commands" % (
            r["soak_steps"], r["soak_commands"]) if has("soak_steps") else "-",
        lambda: _verdict(r["soak_end"]["rss"] - r["soak_start"]["rss"], 5, " MB", strict=True))
    add("6", "Soak: left behind (fds end - start / extra child processes / tagged "
        "processes after exit / import folders after exit)", "soak_left_processes",
        lambda: "%+d / %d / %d / %d" % (r["soak_end"]["fds"] - r["soak_start"]["fds"],
                                        r["soak_extra_children"], r["soak_left_processes"],
                                        r["soak_left_folders"]),
        "none", "-",
        lambda: ("met", "") if (r["soak_end"]["fds"] <= r["soak_start"]["fds"]
                                and r["soak_extra_children"] <= 0
                                and not r["soak_left_processes"]
                                and not r["soak_left_folders"]) else ("missed", "missed"))
    return out


def render(rows):
    head = "| # | Measure | himbeerecouch | Target | Peer / baseline (same run) | Verdict |"
    lines = [head, "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            row.num, row.measure, row.value, row.target, row.peer, row.verdict))
    return "\n".join(lines)


def write_results(path, info, text, rows, cfg):
    block = [BEGIN, "",
             "Date: %s  " % info["date"],
             "Machine: `nproc` = %s, %s, Python %s, Linux %s  " % (
                 info["nproc"], info["cpu"], info["python"], info["kernel"]),
             "Command: `%s` (whole run %.0f s; load average %s at the start, %s at the end)"
             % (info["command"], info["duration"], info["load"], info["load_end"]),
             "", text, ""]
    missed = [r for r in rows if r.miss]
    if missed:
        block.append("Missed in this run:")
        block.append("")
        for r in missed:
            block.append("- %s %s: %s, target %s." % (r.num, r.measure, r.miss, r.target))
        block.append("")
    block.append(END)
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if BEGIN in old and END in old:
        before, rest = old.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
    else:
        before, after = "# Benchmark results (issue 5)\n\n", "\n\n## Notes\n"
    with open(path, "w") as f:
        f.write(before + "\n".join(block) + after)
