"""Summary of a boot loop run (tests/e2e/bootloop.sh): boots and failures by
VMM and class, the vessel-vmm variants that failed, how each test host
ended, and how many guests a host booted before it failed. Markdown, for
docs/operations.md."""

import collections
import re
import shlex
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])


def fields(line):
    """key=value pairs of one line (values may be quoted)."""
    kv = {}
    for word in shlex.split(line, posix=True):
        if "=" in word:
            k, v = word.split("=", 1)
            kv[k] = v
    return kv


boots_txt = out / "boots.txt"
lines = boots_txt.read_text().splitlines() if boots_txt.exists() else []
results = [fields(l) for l in lines if " result=" in l]
started = [fields(l) for l in lines if l.endswith(" start")]
hosts = [fields(l) for l in (out / "hosts.txt").read_text().splitlines()] if (out / "hosts.txt").exists() else []

# Failed boots the test host's L1 fault explains (bootloop.sh's l1.txt,
# from the L1 shutdown probe or a post-mortem's live-lock): its class.
l1_txt = out / "l1.txt"
l1 = {f["boot"]: f["evidence"] for f in map(fields, l1_txt.read_text().splitlines())} if l1_txt.exists() else {}
for r in results:
    if r["result"] != "ok" and r["boot"] in l1:
        r["detail"] = f"{r['class']}: {r.get('detail', '')}; {l1[r['boot']]}"
        r["class"] = "host-l1-fault"

# The last phase each boot reached ("bootloop-phase boot N: what").
last_phase = {}
for l in lines:
    if l.startswith("bootloop-phase boot "):
        boot, _, what = l[len("bootloop-phase boot "):].partition(": ")
        last_phase[boot] = what

# A boot that started and has no result: the one its test host failed in.
done = {(r["host"], r["boot"]) for r in results}
died_in = {s["host"]: s for s in started if (s["host"], s["boot"]) not in done}

print(f"## Boot loop: {len(hosts)} test hosts, {len(results)} boots with a result\n")
print("| VMM | boots | passed | failed | failure classes |")
print("| --- | --- | --- | --- | --- |")
for vmm in ("vessel", "qemu"):
    rs = [r for r in results if r["vmm"] == vmm]
    if not rs:
        continue
    failed = [r for r in rs if r["result"] != "ok"]
    classes = collections.Counter(r["class"] for r in failed)
    text = ", ".join(f"{c} {n}" for c, n in classes.most_common()) or "none"
    print(f"| {vmm} | {len(rs)} | {len(rs) - len(failed)} | {len(failed)} | {text} |")

print("\n| test host ended with | hosts | boots it was in (VMM, boot in host) |")
print("| --- | --- | --- |")
ends = collections.defaultdict(list)
for h in hosts:
    end = "all boots done" if h.get("status") == "0" else h.get("class", "?")
    where = died_in.get(h["host"])
    ends[end].append(
        f"{where['vmm']} #{where['in_host']} ({where['cpus']} vCPU, fs={where['fs']}, net={where['net']}; in: {last_phase.get(where['boot'], '?')})"
        if where else "-")
for end, where in sorted(ends.items()):
    print(f"| {end} | {len(where)} | {', '.join(where)} |")

print("\n| vessel-vmm variant | boots | failed |")
print("| --- | --- | --- |")
variants = collections.defaultdict(lambda: [0, 0])
for r in results:
    if r["vmm"] != "vessel":
        continue
    key = f"{r['cpus']} vCPU" + (", virtio-fs" if r["fs"] == "1" else "") + (", net" if r["net"] == "1" else "")
    variants[key][0] += 1
    variants[key][1] += r["result"] != "ok"
for key, (n, f) in sorted(variants.items()):
    print(f"| {key} | {n} | {f} |")

print("\n| VMM | agent-ready ms, first boot of a host: median (n) | later boots: median (n) |")
print("| --- | --- | --- |")
for vmm in ("vessel", "qemu"):
    ok = [r for r in results if r["vmm"] == vmm and r["result"] == "ok"]
    first = [int(r["ready_ms"]) for r in ok if int(r["in_host"]) <= 1]
    later = [int(r["ready_ms"]) for r in ok if int(r["in_host"]) > 1]
    cell = lambda xs: f"{statistics.median(xs):.0f} ({len(xs)})" if xs else "-"
    if ok:
        print(f"| {vmm} | {cell(first)} | {cell(later)} |")

per_host = [int(h.get("boots", 0)) for h in hosts]
failed_hosts = [int(h.get("boots", 0)) for h in hosts if h.get("status") != "0"]
print(f"\nGuests per test host: {sum(per_host)} boots in {len(hosts)} hosts; "
      f"{len(failed_hosts)} hosts failed, after {sorted(failed_hosts)} completed boots.")

print("\nFailed boots:\n")
for r in results:
    if r["result"] != "ok":
        detail = re.sub(r"\s+", " ", r.get("detail", ""))[:200]
        print(f"- host {r['host']} boot {r['boot']} ({r['vmm']}, {r['cpus']} vCPU, fs={r['fs']}, net={r['net']}): "
              f"{r['class']}: {detail}")
