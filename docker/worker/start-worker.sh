#!/bin/sh
# The drctl worker of the Docker lab: a Prefect process worker with drctl installed, on the
# compose network next to the sites.
#
# Before it starts: known_hosts from the host keys the sites published into the shared volume
# (never from a scan of the network), and the environments shipped in the image linked into
# $DRCTL_HOME/environments, so a deployment's `environment: docker-two-site` finds the sites
# by their service names.
set -eu

home=${DRCTL_HOME:-/var/lib/drctl}
keys=${DRCTL_HOST_KEYS:-/etc/drctl/host-keys}
mkdir -p "$home/environments" "$home/ssh"

tmp="$home/ssh/known_hosts.tmp"
: >"$tmp"
for site in site-a site-b; do
    if [ ! -s "$keys/$site.pub" ]; then
        echo "start-worker: $site published no host key in $keys/$site.pub" >&2
        exit 1
    fi
    printf '%s %s\n' "$site" "$(cut -d' ' -f1,2 "$keys/$site.pub")" >>"$tmp"
done
mv -f "$tmp" "$home/ssh/known_hosts"

for file in /etc/drctl/environments/*.yaml; do
    ln -sf "$file" "$home/environments/$(basename "$file")"
done

exec prefect worker start --pool "${DRCTL_WORK_POOL:-drctl}" --type process "$@"
