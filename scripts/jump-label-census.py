#!/usr/bin/env python3
# Used by scripts/jump-label-census.sh (in the guest): turns the fl_jl kprobe
# histogram (jump entry address, its relative code and key offsets) into static key
# symbols and the functions whose text was patched, named from /proc/kallsyms.
import bisect, re, sys, collections
syms = []
for line in open('/proc/kallsyms'):
    a, t, n = line.split()[:3]
    syms.append((int(a, 16), n))
syms.sort()
addrs = [s[0] for s in syms]
def name(a, off=True):
    i = bisect.bisect_right(addrs, a) - 1
    if i < 0: return hex(a)
    return '%s+0x%x' % (syms[i][1], a - syms[i][0]) if off else syms[i][1]
M = 2**64 - 1
keys = collections.Counter(); sites = collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    m = re.search(r'entry:\s+(?:0x)?([0-9a-f]+).*code:\s+(-?\d+).*keyoff:\s+(-?\d+).*hitcount:\s+(\d+)', line)
    if not m: continue
    e = int(m.group(1), 16); code = int(m.group(2)); off = int(m.group(3)); n = int(m.group(4))
    key = (e + 8 + off) & ~3 & M
    keys[key] += n
    sites[key][name((e + code) & M, False)] += n
print('patches key (top patched functions)')
for k, n in keys.most_common(30):
    top = ', '.join('%s %d' % (f, c) for f, c in sites[k].most_common(3))
    print('%6d %s (%s)' % (n, name(k), top))
