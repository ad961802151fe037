# shellcheck shell=bash
# What the benchmarks share, sourced by bench/run.sh, bench/remote.sh and bench/history.sh:
# the repository as the working directory, log lines, the tools a script needs, the release
# build, the demo images, free loopback ports, the demo project's cutover.yml, a private
# nginx in a prefix, and removing a compose project's containers. Functions only set the
# variables their comment names; nothing here starts a process that outlives its caller.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root" || exit 1
# nginx and sshd live in sbin, which a non-login root shell may not have on its PATH.
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '\n=== %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
now() { date +%s.%N; }

# need TOOL...: exits naming the first tool that is missing (and the script that needs it).
need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "${0##*/} needs $tool" >&2; exit 1; }
    done
}

# need_gnu_time: GNU time (`time -v`, for max RSS), not the shell keyword.
need_gnu_time() {
    [[ -x /usr/bin/time ]] || { echo "${0##*/} needs GNU time (apt-get install time)" >&2; exit 1; }
}

# build_release: the release binary the benchmarks measure, in BIN. BENCH_BIN=PATH measures
# that binary instead (an earlier commit's build, for a before/after pair of runs), and
# BENCH_COMMIT names its commit in the results.
build_release() {
    if [[ -n "${BENCH_BIN:-}" ]]; then
        BIN=$BENCH_BIN
        log "binary: $BIN (BENCH_BIN, not built)"
        [[ -x "$BIN" ]] || { echo "no binary at $BIN" >&2; exit 1; }
        return
    fi
    log "build (cargo build --release --locked)"
    cargo build --release --locked --quiet
    BIN=${CARGO_TARGET_DIR:-$repo_root/target}/release/cutover
    [[ -x "$BIN" ]] || { echo "no binary at $BIN" >&2; exit 1; }
}

# demo_images: cutover-demo:v1 and :v2, built when missing.
demo_images() {
    if ! docker image inspect cutover-demo:v1 cutover-demo:v2 >/dev/null 2>&1; then
        log "demo images (scripts/demo-image.sh v1 v2)"
        bash scripts/demo-image.sh v1 v2 >/dev/null
    fi
}

# free_ports N: N distinct loopback ports; the sockets are held open together while they
# are picked, so no two are the same.
free_ports() {
    python3 -c 'import socket,sys; s=[socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1",0)) for x in s]; print(*[x.getsockname()[1] for x in s])' "$1"
}

# nginx_in PREFIX: the private nginx of PREFIX (its config, pid, logs and temp files all
# there) as the array NGINX; add -t, -s reload, … after it.
nginx_in() {
    NGINX=(nginx -p "$1/" -c "$1/nginx.conf" -e "$1/logs/error.log")
}

# write_nginx_conf PREFIX: PREFIX/nginx.conf serving PREFIX/site.conf (cutover's rendered
# site), one worker, no access log.
write_nginx_conf() {
    local prefix=$1
    mkdir -p "$prefix/logs" "$prefix/tmp"
    cat >"$prefix/nginx.conf" <<EOF
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    include $prefix/site.conf;
}
EOF
}

# argv_yaml ARG...: a YAML flow list of quoted strings.
argv_yaml() { local out="" a; for a in "$@"; do out+="\"$a\", "; done; echo "[${out%, }]"; }

# demo_project_yml PROJECT DELAY_MS BLUE GREEN NGINX_PREFIX NGINX_PORT HEALTH_TIMEOUT [APP_KEY...]:
# the demo app's cutover.yml on stdout: colors on the two ports, nginx driven in its prefix
# (nginx_in) and listening on 127.0.0.1:NGINX_PORT; each APP_KEY (`settle: 5s`) is one more
# line under `app:`. Append other sections (`remote:`) after it.
demo_project_yml() {
    local project=$1 delay=$2 blue=$3 green=$4 prefix=$5 port=$6 health_timeout=$7 key
    shift 7
    local NGINX
    nginx_in "$prefix"
    cat <<EOF
project: $project
app:
  name: web
  image: cutover-demo
  port: 8080
  memory: 64M
  environment:
    STARTUP_DELAY_MS: "$delay"
  health: { path: /health, timeout: $health_timeout, interval: 100ms }
EOF
    for key in "$@"; do echo "  $key"; done
    cat <<EOF
  drain: 10s
  stop_grace: 10s
colors: { blue: $blue, green: $green }
nginx:
  include: $prefix/service-url.inc
  listen: "127.0.0.1:$port"
  test: $(argv_yaml "${NGINX[@]}" -t)
  reload: $(argv_yaml "${NGINX[@]}" -s reload)
EOF
}

# remove_compose_project PROJECT: its containers (running or not) and its network, if any.
remove_compose_project() {
    docker ps -aq --filter "label=com.docker.compose.project=$1" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker network rm "${1}_default" >/dev/null 2>&1 || true
}
