"""Tables of tests/bench/boot.sh from bench-boot's raw lines, each prefixed
with its test host's number:
  HOST raw VMM KIND ROUND READY_MS RSS_KIB   (or HOST raw VMM KIND ROUND failed)
  HOST phase VMM KIND ROUND NAME MS
KIND is warmup (a host's first boot of that VMM) or pair. The peer VMM is
qemu, or "variant" (vessel-vmm set up otherwise) in an on/off run; the
variant's timeline is shown beside vessel-vmm's."""

import statistics
import sys
from collections import defaultdict


def cell(xs):
    if not xs:
        return "none"
    return f"{statistics.median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})"


def quartiles(xs):
    if len(xs) < 4:
        return f"{min(xs):.2f}–{max(xs):.2f} (min–max)"
    q = statistics.quantiles(xs, n=4)
    return f"{q[0]:.2f}–{q[2]:.2f} (IQR)"


def main(path):
    ready = {}  # (host, vmm, kind, round) -> (ms, kib) or None
    phases = defaultdict(list)  # (kind, name) -> [ms]
    for line in open(path):
        f = line.split()
        host, what = f[0], f[1]
        if what == "raw":
            key = (host, f[2], f[3], f[4])
            ready[key] = None if f[5] == "failed" else (float(f[5]), float(f[6]))
        elif what == "phase":
            phases[(f[2], f[3], f[5])].append(float(f[6]))

    peer = "variant" if any(k[1] == "variant" for k in ready) else "qemu"
    label = {"qemu": "QEMU microvm", "variant": "variant"}[peer]

    def col(vmm, kind, i):
        return [v[i] for k, v in ready.items() if k[1] == vmm and k[2] == kind and v]

    failed = {v: sum(1 for k, x in ready.items() if k[1] == v and x is None) for v in ("vessel-vmm", peer)}
    ratios = []
    for (host, vmm, kind, rnd), v in ready.items():
        q = ready.get((host, peer, kind, rnd))
        if vmm == "vessel-vmm" and kind == "pair" and v and q:
            ratios.append(v[0] / q[0])
    pairs = sum(1 for k in ready if k[1] == "vessel-vmm" and k[2] == "pair")
    hosts = len({k[0] for k in ready})
    print(f"{pairs} pairs in {hosts} fresh test hosts; failed boots (left out): "
          f"vessel-vmm {failed['vessel-vmm']}, {label} {failed[peer]}")
    print()
    print(f"| metric (1 vCPU, 256 MiB) | vessel-vmm median (min–max) | {label} median (min–max) | vessel-vmm/{label} |")
    print("| --- | --- | --- | --- |")
    if ratios:
        print(f"| boot to agent-ready (ms), {len(ratios)} pairs | {cell(col('vessel-vmm', 'pair', 0))} | "
              f"{cell(col(peer, 'pair', 0))} | median of paired ratios {statistics.median(ratios):.2f}, "
              f"{quartiles(ratios)} |")
    wv, wq = col("vessel-vmm", "warmup", 0), col(peer, "warmup", 0)
    if wv and wq:
        print(f"| first boot of a host (ms), {hosts} hosts | {cell(wv)} | {cell(wq)} | "
              f"ratio of medians {statistics.median(wv) / statistics.median(wq):.2f} |")
    rv, rq = col("vessel-vmm", "pair", 1), col(peer, "pair", 1)
    if rv and rq:
        print(f"| VMM RSS excluding guest RAM (KiB) | {cell(rv)} | {cell(rq)} | "
              f"{statistics.median(rv) / statistics.median(rq):.2f} |")
    print()
    timelines = ["vessel-vmm"] + (["variant"] if peer == "variant" else [])
    print("Boot timeline (paired boots; median (min–max) ms from the VMM's process"
          " start, host_ready from its spawn; step: from the phase before):")
    print()
    print("| phase | " + " | ".join(f"{t} | step" for t in timelines) + " |")
    print("| --- | " + " | ".join("--- | ---" for _ in timelines) + " |")
    names = {n for (v, k, n) in phases if v == "vessel-vmm" and k == "pair"}
    order = sorted(names, key=lambda n: statistics.median(phases[("vessel-vmm", "pair", n)]))
    cells = {t: [] for t in timelines}
    for t in timelines:
        before = None
        for n in order:
            xs = phases.get((t, "pair", n), [])
            if not xs:
                cells[t].append("none | ")
                continue
            m = statistics.median(xs)
            step = "" if before is None else f"{m - before:.1f}"
            cells[t].append(f"{m:.1f} ({min(xs):.1f}–{max(xs):.1f}) | {step}")
            before = m
    for i, n in enumerate(order):
        print(f"| {n} | " + " | ".join(cells[t][i] for t in timelines) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
