#!/bin/sh
# The real peers the integration tests start (Debian packages): SIPp, two softphones, the
# rtpengine media engine, Redis and Kamailio. Installs only what is missing (as root), so a
# second run costs a few dpkg look-ups.
set -e
packages="sip-tester baresip linphone-cli rtpengine-daemon redis-server kamailio"
missing=""
for package in $packages; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
