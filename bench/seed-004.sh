#!/usr/bin/env bash
# Baseline: seed 004's deploy.sh logic (switch nginx right after `up -d`, no health gate,
# `sleep 5`, stop the old color), on the same compose project, demo app and nginx as cutover.
#
#   bench/seed-004.sh IMAGE
#
# Environment (bench/run.sh sets all of it):
#   SEED_COMPOSE        compose command, e.g. "docker compose" or "docker-compose"
#   SEED_PROJECT        compose project name (-p)
#   SEED_COMPOSE_FILE   compose file whose color services use `image: ${BENCH_IMAGE}`
#   SEED_APP            app name: services are $SEED_APP-blue / $SEED_APP-green
#   SEED_BLUE_PORT / SEED_GREEN_PORT   host ports of the colors
#   SEED_INCLUDE        the nginx include holding `set $service_url …;`
#   SEED_NGINX_RELOAD   command that reloads nginx (default: nginx -s reload)
#   SEED_STOP_AFTER     seconds between the reload and stopping the old color (default 5)
#
# Changes from the seed, each only where the seed would break the benchmark:
#   - `docker pull` dropped: there is no registry here; the image is passed in BENCH_IMAGE
#     (the seed pins `latest`; seed 000 puts the tag in .env, which compose interpolates
#     the same way).
#   - active color found by compose labels, not `docker ps | grep backend-1` (which would
#     match another project's containers, e.g. cutover's own e2e tests running in parallel).
#   - `docker-compose down $OLD` replaced by `stop $OLD` + `rm -f $OLD`: `down SERVICE` is a
#     usage error that exits 0 and does nothing in compose v1, and tore down the whole
#     project in early v2.
#   - `sudo service nginx reload` → $SEED_NGINX_RELOAD (the private nginx of the benchmark);
#     `sudo tee` → plain redirection. The first-deploy branch starts no accessories (the
#     demo app has none) and keeps the seed's `sleep 5` out (that deploy is not measured).
set -euo pipefail

IMAGE=${1:?usage: seed-004.sh IMAGE}
read -r -a COMPOSE <<<"${SEED_COMPOSE:-docker compose}"
PROJECT=${SEED_PROJECT:?}
FILE=${SEED_COMPOSE_FILE:?}
APP=${SEED_APP:-web}
BLUE_PORT=${SEED_BLUE_PORT:-8081}
GREEN_PORT=${SEED_GREEN_PORT:-8082}
INCLUDE=${SEED_INCLUDE:-/etc/nginx/conf.d/service-url.inc}
read -r -a RELOAD <<<"${SEED_NGINX_RELOAD:-nginx -s reload}"
STOP_AFTER=${SEED_STOP_AFTER:-5}

dc() { BENCH_IMAGE=$IMAGE "${COMPOSE[@]}" -p "$PROJECT" -f "$FILE" "$@"; }
running() {
    [[ -n $(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1") ]]
}

echo "deploy start"
if running "$APP-blue"; then
    NEW_CONTAINER=$APP-green; OLD_CONTAINER=$APP-blue; NEW_PORT=$GREEN_PORT
elif running "$APP-green"; then
    NEW_CONTAINER=$APP-blue; OLD_CONTAINER=$APP-green; NEW_PORT=$BLUE_PORT
else
    NEW_CONTAINER=$APP-blue; OLD_CONTAINER=""; NEW_PORT=$BLUE_PORT
fi

echo "starting $NEW_CONTAINER on $NEW_PORT"
dc up -d "$NEW_CONTAINER"

echo "switching nginx to $NEW_PORT"
echo "set \$service_url http://127.0.0.1:${NEW_PORT};" >"$INCLUDE"
"${RELOAD[@]}"
sleep "$STOP_AFTER"

if [[ -n "$OLD_CONTAINER" ]]; then
    echo "stopping $OLD_CONTAINER"
    dc stop "$OLD_CONTAINER"
    dc rm -f "$OLD_CONTAINER"
fi
echo "deploy done"
