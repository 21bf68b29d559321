#!/usr/bin/env bash
# Builds the agent's Debian package, target/debian/paddockd_VERSION_ARCH.deb,
# with dpkg-deb alone (no cargo-deb): the binary, the systemd unit, the
# commented /etc/paddock/agent.toml, and maintainer scripts that create the
# Redis system user when missing and start nothing.
#
#   packaging/deb/build.sh            # builds paddockd in release mode first
#   PADDOCKD=path/to/paddockd packaging/deb/build.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/packaging/deb"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
bin=${PADDOCKD:-}
if [ -z "$bin" ]; then
    cargo build --release --manifest-path "$root/Cargo.toml" -p paddock-agent --bin paddockd
    bin="$root/target/release/paddockd"
fi
out="$root/target/debian"
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/paddockd"
strip --strip-debug "$stage/usr/bin/paddockd" 2>/dev/null || true
install -D -m 0644 "$root/packaging/systemd/paddockd.service" "$stage/lib/systemd/system/paddockd.service"
install -D -m 0640 "$here/agent.toml" "$stage/etc/paddock/agent.toml"
install -D -m 0644 "$root/packaging/README.md" "$stage/usr/share/doc/paddockd/README.md"
install -d -m 0755 "$stage/var/lib/paddock"
install -d -m 0755 "$stage/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$here/$script" "$stage/DEBIAN/$script"
done
echo /etc/paddock/agent.toml > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: paddockd
Version: $version
Architecture: $arch
Maintainer: Paddock developers <paddock@localhost>
Installed-Size: $size
Depends: redis-server (>= 5:7.0), adduser
Section: database
Priority: optional
Description: Paddock agent: supervises Redis and Redis Sentinel on this machine
 paddockd runs redis-server and redis-sentinel processes as the paddock
 controller asks, restarts them within milliseconds when they die, hands a
 crashed master's role to a replica first, and serves the controller's gRPC
 API over mutual TLS. Nothing starts until /etc/paddock/agent.toml is
 filled in and the paddockd service is enabled.
CONTROL
mkdir -p "$out"
deb="$out/paddockd_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
