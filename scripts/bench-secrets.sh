#!/usr/bin/env bash
# Decrypt + parse of a 1,000-key secrets file: cutover vs `age -d` on the same file.
# Reports the mean wall time over RUNS runs and peak RSS (GNU time). Not a test: numbers
# depend on the machine; this just makes them reproducible.
#
#   scripts/bench-secrets.sh            # KEYS=1000 RUNS=20 by default
#   KEYS=10000 RUNS=5 scripts/bench-secrets.sh
set -euo pipefail

KEYS=${KEYS:-1000}
RUNS=${RUNS:-20}
root=$(cd "$(dirname "$0")/.." && pwd)

command -v age >/dev/null || { echo "needs the age CLI (apt-get install age)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time) for peak memory" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
cutover="$root/target/release/cutover"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/secrets"
cp "$root/secrets/recipients.txt" "$work/secrets/"
install -m 600 "$root/fixtures/secrets/test-identity.txt" "$work/id"

# KEY_n=<48 random alphanumerics>; written to the temp dir only, removed by --rm.
for i in $(seq 1 "$KEYS"); do
  printf 'KEY_%d=%s\n' "$i" "$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 48)"
done > "$work/bench.env"
size=$(wc -c < "$work/bench.env")
"$cutover" -q -C "$work" secrets encrypt "$work/bench.env" --rm
file="$work/secrets/bench.env.age"

# mean_ms CMD...: mean wall-clock milliseconds over $RUNS runs, output discarded.
mean_ms() {
  local start end
  start=$(date +%s%N)
  for _ in $(seq 1 "$RUNS"); do "$@" >/dev/null; done
  end=$(date +%s%N)
  echo $(( (end - start) / RUNS / 1000000 ))
}

# peak_kib CMD...: maximum resident set size of one run, in KiB.
peak_kib() {
  /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1
}

cut=(env CUTOVER_IDENTITY="$work/id" "$cutover" -C "$work" secrets show bench --json)
agecmd=(age -d -i "$work/id" "$file")

printf 'file: %d keys, %d bytes plaintext, %d bytes armored; %d runs each\n' \
  "$KEYS" "$size" "$(wc -c < "$file")" "$RUNS"
printf '%-42s %8s %12s\n' "command" "mean ms" "peak RSS KiB"
printf '%-42s %8s %12s\n' "cutover secrets show --json (decrypt+parse)" \
  "$(mean_ms "${cut[@]}")" "$(peak_kib "${cut[@]}")"
printf '%-42s %8s %12s\n' "age -d (decrypt only)" \
  "$(mean_ms "${agecmd[@]}")" "$(peak_kib "${agecmd[@]}")"
