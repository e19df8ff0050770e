#!/usr/bin/env bash
# Zero-downtime upgrade of sipslb under systemd, with the two alternating instances of
# deploy/systemd/sipslb@.service (sipslb@a, sipslb@b). Install the new /usr/sbin/sipslb
# first (apt-get install ./sipslb_*.deb), then run this. It starts the idle instance, which
# takes the running one's listening sockets over /run/sipslb/handover.sock and reports
# READY=1 once its workers run and its first probe round is done; the old instance then
# stops accepting, closes its client connections as they go idle (--drain-timeout) and
# exits by itself. Clients closed while idle reconnect to the new one; nothing queued in
# the kernel is lost (the sockets pass with their accept queues).
#
# usage: deploy/upgrade.sh [--wait SECONDS]   (how long to wait for the drain; default 60)
set -euo pipefail
wait_s=60
[ "${1:-}" = "--wait" ] && wait_s=$2
if systemctl is-active --quiet sipslb@a; then
    old=a new=b
elif systemctl is-active --quiet sipslb@b; then
    old=b new=a
else
    echo "upgrade: neither sipslb@a nor sipslb@b runs (first time: systemctl enable --now sipslb@a)" >&2
    exit 1
fi
echo "upgrade: starting sipslb@$new beside sipslb@$old"
systemctl start "sipslb@$new" # returns once the new one sent READY=1
systemctl enable --quiet "sipslb@$new"
systemctl disable --quiet "sipslb@$old"
for ((i = 0; i < wait_s; i++)); do
    if ! systemctl is-active --quiet "sipslb@$old"; then
        echo "upgrade: sipslb@$new runs; sipslb@$old drained and exited after ${i} s"
        exit 0
    fi
    sleep 1
done
echo "upgrade: sipslb@$old still draining after ${wait_s} s (it exits at its --drain-timeout)" >&2
exit 1
