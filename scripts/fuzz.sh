#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a while each, with
# libFuzzer and the address sanitizer, on the nightly toolchain. A crash
# stops the run and leaves its input in fuzz/artifacts/TARGET/; replay it
# with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 300)] [TARGET ...]
#
# Not part of the test suite (tests/decoders.rs is the bounded property
# test of the same decoders that CI runs); see docs/security.md, "Fuzzing".
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "== $t: ${secs}s"
    # -rss_limit_mb: a decoder must never need much memory for small input.
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1 2>&1 |
        grep -E "^(#|==|stat::number_of_executed_units|stat::peak_rss_mb|Done|INFO: -max_total_time)|ERROR|panicked|SUMMARY" |
        tail -n 8
done
