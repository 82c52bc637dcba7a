# Usage: python3 disk_commit_probe.py indep|rounds|serial append|falloc|overwrite|zeroahead FILES RATE_PER_FILE SECONDS [WRITE_BYTES]
# indep: one thread per file (write + fdatasync, open loop); rounds: write all files, then fdatasync all;
# serial: one thread doing write + fdatasync for each file in turn (what a single io-wq worker does).
# Writes under /work/bench-runs/disk/ow; reads /proc/diskstats of vda.
# Open-loop write+fdatasync latency over N files.
# mode: indep (each file its own loop), rounds (one loop: write all files, then fdatasync all, together)
# layout: append (fresh files, ext4 allocates on write) | overwrite (pre-zeroed files)
import os, sys, mmap, threading, time
from concurrent.futures import ThreadPoolExecutor
mode, layout = sys.argv[1], sys.argv[2]
nfiles, rate, secs = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
wbytes = int(sys.argv[6]) if len(sys.argv) > 6 else 32768
d = "/work/bench-runs/disk/ow"; os.makedirs(d, exist_ok=True)
size = 512 << 20
fds = []
for i in range(nfiles):
    p = f"{d}/f{i}"
    if os.path.exists(p): os.unlink(p)
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    if layout == "overwrite":
        z = mmap.mmap(-1, 4 << 20)
        for off in range(0, size, 4 << 20): os.pwrite(fd, z, off)
        os.fsync(fd)
    fds.append(fd)
buf = mmap.mmap(-1, wbytes); buf.write(b"x" * wbytes)
offs = [0] * nfiles
import ctypes
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
pre = [0] * nfiles
def op(i, sync=True):
    if layout == "falloc" and offs[i] + wbytes > pre[i]:
        pre[i] = ((offs[i] + wbytes + 4095) // 4096) * 4096 + (1 << 20)
        assert libc.fallocate(fds[i], 1, 0, pre[i]) == 0
    os.pwrite(fds[i], buf, offs[i]); offs[i] += wbytes
    if sync: os.fdatasync(fds[i])
lat = []
def loop(files, rate):
    pool = ThreadPoolExecutor(len(files))
    t0 = time.monotonic(); n = 0; out = []
    while True:
        due = t0 + n / rate; now = time.monotonic()
        if now - t0 > secs: break
        if due > now: time.sleep(due - now)
        if len(files) == 1:
            op(files[0])
        elif mode == "serial":
            for i in files: op(i)
        else:
            list(pool.map(lambda i: op(i, False), files))
            list(pool.map(lambda i: os.fdatasync(fds[i]), files))
        out.append(time.monotonic() - due)   # from intended time: open loop
        n += 1
    lat.extend(out)
    if mode == "serial": lat.extend(out * (len(files) - 1))
stop = [False]
zeroed = [0] * nfiles
def zeroer(i):
    z = mmap.mmap(-1, 1 << 20)
    while not stop[0]:
        if zeroed[i] - offs[i] < (8 << 20):
            os.pwrite(fds[i], z, zeroed[i]); os.fdatasync(fds[i]); zeroed[i] += 1 << 20
        else:
            time.sleep(0.001)
zs = []
if layout == "zeroahead":
    zs = [threading.Thread(target=zeroer, args=(i,)) for i in range(nfiles)]
    for t in zs: t.start()
    time.sleep(0.5)
if mode == "indep":
    ts = [threading.Thread(target=loop, args=([i], rate)) for i in range(nfiles)]
else:
    ts = [threading.Thread(target=loop, args=(list(range(nfiles)), rate))]
with open("/proc/diskstats") as f: d0 = [l.split() for l in f if " vda " in l][0]
for t in ts: t.start()
for t in ts: t.join()
stop[0] = True
for t in zs: t.join()
with open("/proc/diskstats") as f: d1 = [l.split() for l in f if " vda " in l][0]
a = sorted(lat); q = lambda p: a[min(len(a)-1, int(p*len(a)))]*1e6
w = int(d1[7]) - int(d0[7]); fl = int(d1[18]) - int(d0[18]) if len(d1) > 18 else -1
print("ops >5ms:", sum(1 for x in a if x > 0.005), ">15ms:", sum(1 for x in a if x > 0.015), "secs", secs)
print(f"{mode:6} {layout:9} files={nfiles} rate={rate:.0f}/s n={len(a)} p50={q(.5):.0f}us p90={q(.9):.0f} p99={q(.99):.0f} p999={q(.999):.0f} max={a[-1]*1e6:.0f}  writes/s={w/secs:.0f} flushes/s={fl/secs:.0f}")
for i in range(nfiles): os.close(fds[i]); os.unlink(f"{d}/f{i}")
