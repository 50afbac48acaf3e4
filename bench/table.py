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
            "soak_start": "soak", "soak_left_processes": "soak",
            "spare_rss": "device", "reload_cold": "device", "scale_start_cold": "scale",
            "pi_bare_start": "pi", "pi_reload": "pi", "pi_reload_cold": "pi",
            "pi_command": "pi", "pi_cpu_pct": "pi", "pi_start50": "pi",
            "f1k_steps": "fleet1000", "f1k_limit": "fleet1000", "f1k_feeds": "fleet1000", "f1k_idle": "fleet1000",
            "collateral_cold": "device", "scale_stop_cold": "scale", "pi_collateral": "pi"}


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
        """``peer``: text, or a function of figures that exist only when ``keys`` do."""
        keys = key_or_keys if isinstance(key_or_keys, tuple) else (key_or_keys,)
        if not has(*keys):
            missing = next(k for k in keys if k not in r)
            out.append(Row(num, measure, failed(missing), target,
                           "-" if callable(peer) else peer, "-"))
            return
        verdict, miss = check() if check else ("-", "")
        out.append(Row(num, measure, value(), target, peer() if callable(peer) else peer,
                       verdict, miss))

    bare = "bare `python -I -c pass` start %s ms (p50, n=%d)" % (
        _num(p50("bare_start")), cfg.bare_runs) if has("bare_start") else "bare start: not measured"
    peer = ("supervisord, 50 programs: `supervisorctl restart` %s; its XML-RPC calls alone %s"
            % (pair("peer_cli"), pair("peer_rpc"))) if has("peer_cli", "peer_rpc") \
        else "supervisord: not measured"
    def ratio(key, q=50, base="bare_start"):
        return percentile(r[key], q) / p50(base)

    def cold():
        return ("without the spare (`--no-spare`, the previous design) %s, p50 %.1fx the bare "
                "start" % (pair("reload_cold"), ratio("reload_cold"))
                if has("reload_cold", "bare_start") else "without the spare: not measured")

    add("S", "The server every phase used (its CPU and memory: this process and its "
        "children)", "server", lambda: r["server"], "-", "-")
    add("1", "Reload latency p50 / p95, PUT of a new revision -> new main() running, "
        "1 doc among 50 workers, warm spare (n=%d)" % cfg.reload_runs, "reload",
        lambda: pair("reload"), "p50 <= 150 ms", lambda: peer + "; " + cold(),
        lambda: _verdict(p50("reload"), 150, " ms"))
    add("1", "Reload p50 / bare interpreter start p50 (same run)", ("reload", "bare_start"),
        lambda: "%.2fx" % ratio("reload"), "<= 1.0x",
        bare + ("; supervisord XML-RPC %.1fx, supervisorctl %.1fx" % (
            p50("peer_rpc") / p50("bare_start"), p50("peer_cli") / p50("bare_start"))
            if has("peer_rpc", "bare_start") else ""),
        lambda: _verdict(ratio("reload"), 1.0, "x"))
    add("1", "Reload p95 / bare interpreter start p50 (same run)", ("reload", "bare_start"),
        lambda: "%.2fx" % ratio("reload", 95), "<= 1.5x",
        lambda: "without the spare: %.2fx" % ratio("reload_cold", 95) if has("reload_cold")
        else "-",
        lambda: _verdict(ratio("reload", 95), 1.5, "x"))
    add("1", "Collateral restarts of the other 49 workers (pids checked, all reloads; "
        "spare / no spare)", ("collateral", "collateral_cold"),
        lambda: "%d / %d" % (r["collateral"], r["collateral_cold"]), "0", "-",
        lambda: _verdict(r["collateral"] + r["collateral_cold"], 0, ""))
    add("1", "The warm spare's RSS, idle, waiting for a document", ("spare_rss", "bare_rss"),
        lambda: "%.1f MB" % r["spare_rss"],
        "<= bare + 2 MB = %.1f MB" % (r["bare_rss"] + 2) if has("bare_rss") else "<= bare + 2 MB",
        "bare idle `python -I`: %.1f MB" % r["bare_rss"] if has("bare_rss") else "-",
        lambda: _verdict(r["spare_rss"], r["bare_rss"] + 2, " MB"))
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
    def no_slower(key):
        """Within 10 % of the same figure without the spare (run-to-run noise here)."""
        return _verdict(p50(key), 1.1 * p50(key + "_cold"), " s")

    add("4", "Cold start -> 100 workers running (median of %d)" % cfg.scale_runs,
        ("scale_start", "scale_start_cold"), lambda: "%.2f s" % p50("scale_start"),
        "<= 5 s; <= no spare + 10 %",
        lambda: "without the spare: %.2f s" % p50("scale_start_cold"),
        lambda: _verdict(p50("scale_start"), 5, " s") if p50("scale_start") > 5
        else no_slower("scale_start"))
    add("4", "SIGINT -> 100 cooperative workers stopped (median of %d)" % cfg.scale_runs,
        ("scale_stop", "scale_stop_cold"), lambda: "%.2f s" % p50("scale_stop"),
        "<= 2 s; <= no spare + 10 %",
        lambda: "agent process exited after %.2f s; without the spare: stopped %.2f s, "
        "exited %.2f s" % (p50("scale_exit"), p50("scale_stop_cold"), p50("scale_exit_cold")),
        lambda: _verdict(p50("scale_stop"), 2, " s") if p50("scale_stop") > 2
        else no_slower("scale_stop"))
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
    pi_rows(r, cfg, add, has, p50, pair, percentile)
    fleet1000_rows(r, add, has, pair)
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


def pi_rows(r, cfg, add, has, p50, pair, percentile):
    """Point 2 of issue 16: the same figures under a Pi-3-class CPU quota."""
    factor = r.get("pi_factor", 0)
    add("P", "Pi-class quota (%s of a core): bare interpreter start p50 inside it"
        % ("1/%d" % factor if factor else "?"), "pi_bare_start",
        lambda: "%s ms" % _num(p50("pi_bare_start")), "slowdown ~%dx" % factor,
        lambda: "%.1fx the bare start outside (%s ms); %s" % (
            p50("pi_bare_start") / p50("bare_start"), _num(p50("bare_start")), r["pi_quota"])
        if has("bare_start") else r["pi_quota"])

    def bare_ratio(key, q):
        return percentile(r[key], q) / p50("pi_bare_start")

    add("P", "Pi-class: reload p50 / p95, warm spare (n=%d); ratio to the bare start in the "
        "quota" % len(r.get("pi_reload", ())), ("pi_reload", "pi_bare_start"),
        lambda: "%s (%.2fx / %.2fx)" % (pair("pi_reload"), bare_ratio("pi_reload", 50),
                                        bare_ratio("pi_reload", 95)),
        "p50 <= 1.0x, p95 <= 1.5x",
        lambda: "without the spare: %s (%.2fx / %.2fx)" % (
            pair("pi_reload_cold"), bare_ratio("pi_reload_cold", 50),
            bare_ratio("pi_reload_cold", 95)) if has("pi_reload_cold") else "-",
        lambda: _verdict(max(bare_ratio("pi_reload", 50), bare_ratio("pi_reload", 95) / 1.5),
                         1.0, "x"))
    add("P", "Pi-class: command round trip p50 / p95 (n=%d)" % len(r.get("pi_command", ())),
        "pi_command", lambda: pair("pi_command"), "report",
        lambda: "outside the quota: %s" % pair("command") if has("command") else "-")
    add("P", "Pi-class: supervisor CPU over 20 s, 50 idle workers, as a share of the quota "
        "(one Pi-class core)", "pi_cpu_pct",
        lambda: "%.1f %%" % (r["pi_cpu_pct"] * factor), "report",
        lambda: "%.2f %% of this machine's core" % r["pi_cpu_pct"])
    add("P", "Pi-class: 50 workers from their PUT to all running", "pi_start50",
        lambda: "%.1f s" % r["pi_start50"], "report",
        lambda: "collateral restarts in all Pi-class reloads: %d" % r["pi_collateral"])


def fleet1000_rows(r, add, has, pair):
    """Point 3 of issue 16: a growing fleet of simulated devices and one agent."""
    def usage(u):
        return "CPU %.0f %% of a core, RSS %.0f MB" % (u["cpu"], u["rss"])

    def per_device(u):
        idle = r["f1k_idle"]
        return "%.3f %% of a core and %.2f MB per device" % (
            (u["cpu"] - idle["cpu"]) / u["devices"], (u["rss"] - idle["rss"]) / u["devices"])

    def p50_95(values, lost):
        text = ("%s / %s ms" % (_num(statistics.median(values)), _num(max(values)))
                if values else "none arrived")
        return text + (", %d lost" % lost if lost else "")

    add("F", "Fleet: %d idle feeds (filtered, continuous), nothing written: server"
        % r.get("f1k_feeds", {}).get("devices", 0), ("f1k_feeds", "f1k_idle"),
        lambda: usage(r["f1k_feeds"]), "report",
        lambda: per_device(r["f1k_feeds"]) + "; server idle: " + usage(r["f1k_idle"]))
    for step in r.get("f1k_steps", []):
        n = step["devices"]
        add("F", "Fleet of %d (%d simulated + 1 agent), heartbeats every 10 s, logs every "
            "30 s: server" % (n, n - 1), "f1k_steps",
            lambda s=step: "%s; %s" % (usage(s), per_device(s)), "report",
            lambda s=step: "feeds of the new devices open after %.1f s" % s["connect_s"])
        add("F", "Fleet of %d: writes/s that succeeded / meant; requests/s; failed "
            "requests in %.0f s" % (n, 10), "f1k_steps",
            lambda s=step: "%.1f / %.1f; %.1f req/s; %d failed" % (
                s["writes"], s["ideal"], s["rps"], s["failed"]),
            "all writes succeed",
            lambda s=step: "change to one device -> its feed (p50 / max): %s; command "
            "round trip to the agent: %s" % (p50_95(s["change"], s["change_lost"]),
                                             p50_95(s["command"], s["command_lost"])),
            lambda s=step: ("limit", "") if (r["f1k_limit"] or {}).get("devices") == s["devices"]
            else ("met", ""))
    limit = r.get("f1k_limit")
    served = max([s["devices"] for s in r.get("f1k_steps", [])
                  if not limit or s["devices"] < limit["devices"]], default=0)
    add("F", "Devices one server serves: the largest fleet with no failed request, every "
        "write taken, a change at its device within 1 s (p50)", "f1k_steps",
        lambda: "%d" % served, "1,000",
        lambda: "limit at %d devices: %s" % (limit["devices"], limit["why"]) if limit
        else "no limit up to %d" % served,
        lambda: ("met", "") if served >= 1000 else
        ("missed by %d devices" % (1000 - served),) * 2)


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
