#!/bin/sh
# The lab's HIS stand-in in a container. drills.lab.his listens on 127.0.0.1 only (it is the
# embedded lab's application tier), so it listens on HIS_INTERNAL_PORT and socat makes it
# reachable on HIS_PORT of the container's network, which docker-compose.yml publishes on the
# Docker host's 127.0.0.1.
set -eu

: "${HIS_DSN:?HIS_DSN is required (a libpq DSN that follows the primary)}"
port=${HIS_PORT:-8080}
internal=${HIS_INTERNAL_PORT:-8081}

socat -lp his-relay "TCP4-LISTEN:$port,reuseaddr,fork" "TCP:127.0.0.1:$internal" &
exec python -m drills.lab.his --port "$internal" --dsn "$HIS_DSN"
