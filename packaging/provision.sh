#!/usr/bin/env bash
# Provisions one Paddock box: installs redis-server and the paddockd package,
# writes the agent's config and certificates, and starts the agent (enabled
# under systemd; started directly where systemd is not PID 1, such as a
# network namespace on a CI machine).
#
#   provision.sh --deb paddockd_0.1.0_amd64.deb --listen 192.168.56.11:7443 \
#                --certs /vagrant/certs/clusternodeA
#
# --certs DIR holds ca.pem, agent.pem and agent.key, as written by
# `paddock certs issue -i INVENTORY HOST --out DIR` on the workstation.
# Options for several boxes on one machine (the CI's namespaces):
#   --config FILE     agent config to write (default /etc/paddock/agent.toml)
#   --data-dir DIR    the agent's data_dir (default /var/lib/paddock)
#   --pidfile FILE    without systemd: where the agent's pid is written
# Running it again changes nothing that is already right.
set -euo pipefail

deb="" listen="" certs="" config=/etc/paddock/agent.toml data_dir=/var/lib/paddock pidfile=""
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) deb=$2; shift 2 ;;
        --listen) listen=$2; shift 2 ;;
        --certs) certs=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --data-dir) data_dir=$2; shift 2 ;;
        --pidfile) pidfile=$2; shift 2 ;;
        *) echo "provision.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
for v in deb listen certs; do
    if [ -z "${!v}" ]; then
        echo "provision.sh: --$v is required (see the header of $0)" >&2
        exit 2
    fi
done
for f in ca.pem agent.pem agent.key; do
    if [ ! -f "$certs/$f" ]; then
        echo "provision.sh: $certs/$f is missing; run \`paddock certs issue -i INVENTORY HOST --out $certs\` on the workstation" >&2
        exit 2
    fi
done

# redis-server from the distribution; its own service is not used (paddockd
# runs every instance).
if ! command -v redis-server >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
fi
if [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

# The package, unless this very version is installed already.
want=$(dpkg-deb -f "$deb" Version)
have=$(dpkg-query -W -f '${Version}' paddockd 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    dpkg -i "$deb"
fi

# Config and certificates: private to root.
confdir=$(dirname "$config")
install -d -m 0755 "$confdir"
install -m 0644 "$certs/ca.pem" "$confdir/ca.pem"
install -m 0644 "$certs/agent.pem" "$confdir/agent.pem"
install -m 0600 "$certs/agent.key" "$confdir/agent.key"
install -d -m 0755 "$data_dir"
tmp=$(mktemp "$confdir/.agent.toml.XXXXXX")
cat > "$tmp" <<CONFIG
# Written by packaging/provision.sh; see /usr/share/doc/paddockd/README.md.
listen = "$listen"
data_dir = "$data_dir"

[tls]
ca = "$confdir/ca.pem"
cert = "$confdir/agent.pem"
key = "$confdir/agent.key"
CONFIG
chmod 0640 "$tmp"
mv "$tmp" "$config"
paddockd --config "$config" check-config

if [ -d /run/systemd/system ] && [ "$config" = /etc/paddock/agent.toml ]; then
    systemctl enable paddockd
    systemctl restart paddockd
    echo "provision.sh: paddockd enabled and running under systemd"
else
    pidfile=${pidfile:-$data_dir/paddockd.pid}
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")"
        while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.05; done
    fi
    # No systemd: run the agent directly, detached, logging next to its data.
    setsid paddockd --config "$config" >>"$data_dir/paddockd.log" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    echo "provision.sh: paddockd started without systemd (pid $(cat "$pidfile"), log $data_dir/paddockd.log)"
fi
