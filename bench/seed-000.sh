#!/usr/bin/env bash
# Baseline: seed 000's deploy.sh logic (`up -d` the idle color, fixed `sleep`, switch nginx
# if the container is running, stop the old color), on the same compose project, demo app
# and nginx as cutover.
#
#   bench/seed-000.sh IMAGE [SLEEP_SECONDS]     (SLEEP_SECONDS default 45, as in the seed)
#
# Environment: as bench/seed-004.sh (SEED_COMPOSE, SEED_PROJECT, SEED_COMPOSE_FILE, SEED_APP,
# SEED_BLUE_PORT, SEED_GREEN_PORT, SEED_INCLUDE, SEED_NGINX_RELOAD).
#
# Changes from the seed, each only where the seed would break the benchmark:
#   - `sed -i` of DAILRY_IMAGE into /home/ubuntu/.env → BENCH_IMAGE in compose's process
#     environment (same interpolation, no shared file to race on; no secrets file here).
#   - `docker pull` dropped (no registry here).
#   - `docker ps | grep $SERVICE` → the same question asked with compose labels (a name grep
#     matches other projects' containers).
#   - `docker-compose down $CURRENT` → `stop` + `rm -f` (see seed-004.sh).
#   - `docker rmi $OLD_IMAGE` dropped: the benchmark deploys the old image again in the next
#     step of the blue → green → blue cycle, and there is no registry to pull it back from.
#   - `sudo service nginx reload` → $SEED_NGINX_RELOAD; `sudo tee` → plain redirection.
set -euo pipefail

IMAGE=${1:?usage: seed-000.sh IMAGE [SLEEP_SECONDS]}
SLEEP=${2:-45}
read -r -a COMPOSE <<<"${SEED_COMPOSE:-docker compose}"
PROJECT=${SEED_PROJECT:?}
FILE=${SEED_COMPOSE_FILE:?}
APP=${SEED_APP:-web}
BLUE_PORT=${SEED_BLUE_PORT:-8081}
GREEN_PORT=${SEED_GREEN_PORT:-8082}
INCLUDE=${SEED_INCLUDE:-/etc/nginx/conf.d/service-url.inc}
read -r -a RELOAD <<<"${SEED_NGINX_RELOAD:-nginx -s reload}"

dc() { BENCH_IMAGE=$IMAGE "${COMPOSE[@]}" -p "$PROJECT" -f "$FILE" "$@"; }
running() {
    [[ -n $(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1") ]]
}

if running "$APP-blue"; then
    CURRENT_SERVICE=$APP-blue; NEW_SERVICE=$APP-green; DEPLOY_PORT=$GREEN_PORT
elif running "$APP-green"; then
    CURRENT_SERVICE=$APP-green; NEW_SERVICE=$APP-blue; DEPLOY_PORT=$BLUE_PORT
else
    CURRENT_SERVICE=""; NEW_SERVICE=$APP-blue; DEPLOY_PORT=$BLUE_PORT
fi

echo "starting $NEW_SERVICE ($IMAGE)"
dc up -d "$NEW_SERVICE"
sleep "$SLEEP"

if running "$NEW_SERVICE"; then
    echo "new version is running: switching nginx to $DEPLOY_PORT"
    echo "set \$service_url http://127.0.0.1:${DEPLOY_PORT};" >"$INCLUDE"
    "${RELOAD[@]}"
    echo "deploy complete"
    if [[ -n "$CURRENT_SERVICE" ]]; then
        echo "stopping the previous version"
        dc stop "$CURRENT_SERVICE"
        dc rm -f "$CURRENT_SERVICE"
    else
        exit 0
    fi
else
    echo "$NEW_SERVICE is not running" >&2
    exit 1
fi
