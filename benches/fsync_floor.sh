#!/usr/bin/env bash
# What one durable write costs this machine's disk, outside distro-db: the
# floor under a durable SET at one client, where nothing batches and each of
# the three replicas syncs every write. A small C program appends 200-byte
# records to a zero-filled 64 MiB file (as the log's segments are) and makes
# each durable in one of four ways; it prints wall time and CPU time (user +
# system, getrusage) per write, medians over interleaved rounds. Not a test.
#
#   benches/fsync_floor.sh [--dir target] [--rounds 3] [--writes 2000]
#
# Modes: pwrite + fdatasync (what the log does); pwritev2 RWF_DSYNC; a file
# opened O_DSYNC; O_DIRECT | O_DSYNC with 4 KiB writes. Needs a C compiler.
set -euo pipefail

dir=target
rounds=3
writes=2000
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --writes) writes=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
command -v cc >/dev/null || { echo "a C compiler (cc) is needed" >&2; exit 2; }
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -f "$dir/fsync_floor.data"' EXIT

cat >"$tmp/f.c" <<'C'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu(void) {
    struct rusage r; getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int mode = atoi(argv[1]), n = atoi(argv[3]);
    const char *path = argv[2];
    size_t size = 64 << 20, chunk = 1 << 20;
    char *zero, *rec;
    if (posix_memalign((void **)&zero, 4096, chunk) || posix_memalign((void **)&rec, 4096, 4096)) return 1;
    memset(zero, 0, chunk);
    memset(rec, 'x', 4096);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    for (size_t off = 0; off < size; off += chunk)
        if (pwrite(fd, zero, chunk, off) != (ssize_t)chunk) { perror("fill"); return 1; }
    if (fsync(fd)) { perror("fsync"); return 1; }
    close(fd);
    int flags = O_RDWR;
    if (mode == 2) flags |= O_DSYNC;
    if (mode == 3) flags |= O_DSYNC | O_DIRECT;
    fd = open(path, flags);
    if (fd < 0) { perror("reopen"); return 1; }
    size_t len = mode == 3 ? 4096 : 200;
    double t0 = now(), c0 = cpu();
    off_t off = 0;
    int done = 0;
    for (; done < n && off + (off_t)len <= (off_t)size; done++, off += len) {
        ssize_t w;
        if (mode == 1) { struct iovec v = {rec, len}; w = pwritev2(fd, &v, 1, off, RWF_DSYNC); }
        else w = pwrite(fd, rec, len, off);
        if (w != (ssize_t)len) { perror("write"); return 1; }
        if (mode == 0 && fdatasync(fd)) { perror("fdatasync"); return 1; }
    }
    if (done == 0) return 1;
    printf("%.1f %.1f\n", (now() - t0) / done * 1e6, (cpu() - c0) / done * 1e6);
    close(fd);
    return 0;
}
C
cc -O2 -o "$tmp/f" "$tmp/f.c"

names=("pwrite + fdatasync" "pwritev2 RWF_DSYNC" "O_DSYNC" "O_DIRECT|O_DSYNC, 4 KiB")
for r in $(seq "$rounds"); do
    for m in 0 1 2 3; do
        echo "$m $("$tmp/f" "$m" "$dir/fsync_floor.data" "$writes")" >>"$tmp/out"
    done
done
echo "durable writes to $(df -T "$dir" | awk 'NR==2 {print $2, "on", $1}'), $writes per run, medians of $rounds rounds:"
for m in 0 1 2 3; do
    wall=$(awk -v m="$m" '$1 == m { print $2 }' "$tmp/out" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    cpu=$(awk -v m="$m" '$1 == m { print $3 }' "$tmp/out" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    printf '  %-26s %7s µs wall, %6s µs CPU per write\n' "${names[$m]}" "$wall" "$cpu"
done
