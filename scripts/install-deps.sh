#!/usr/bin/env bash
# Installs the system packages Coffer's tests and demo use on Debian (idempotent).
#   runc        the OCI runtime `coffer run` starts containers with
#   skopeo umoci  independent OCI tools the conversion tests check our images with
#   busybox-static  a real, unmodified static program for demo and test images
#   protobuf-compiler  `protoc`, for the kubelet device plugin and etcd gRPC protocols
#   libprotobuf-dev  google/protobuf/*.proto that etcd-client's protos import (not pulled in
#                    by protoc with --no-install-recommends)
#   libssl-dev pkg-config  to build sgxs-tools (below; test-only)
#   etcd-server  a real etcd the HA Coordinator tests start as a 3-member cluster on 127.0.0.1
#   mmdebstrap  builds the Debian-package images the real-image tests run
#               (scripts/build-debian-images.sh)
#   docker-registry apache2-utils  a real registry (CNCF distribution) and `htpasswd` for its
#               users, which the docker:// tests start on 127.0.0.1
#   ovmf        Debian's OVMF firmware builds, which `coffer measure snp` and `measure tdx` are
#               checked on
#   python3-venv  for sev-snp-measure (below; test-only)
set -euo pipefail
packages=(runc skopeo umoci busybox-static protobuf-compiler libprotobuf-dev libssl-dev pkg-config etcd-server mmdebstrap docker-registry apache2-utils ovmf python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# sgxs-tools: Fortanix's independent SGXS/SIGSTRUCT implementation (`sgxs-sign`), which the
# cross-check test crates/sgx/tests/sgxs_tools.rs runs. Test-only: it links OpenSSL, Coffer's
# crates do not. A debug build is enough (the test feeds it small files): about 2 minutes on 2 cores.
if ! command -v sgxs-sign >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/sgxs-sign" ]; then
    cargo install sgxs-tools --version 0.10.0 --locked --debug
fi

# sev-snp-measure: virtee's SEV-SNP launch digest tool (PyPI), an independent implementation
# that crates/cli/tests/measure_cli.rs checks `coffer measure snp` against. Test-only, in its
# own virtual environment.
if [ ! -x /opt/sev-snp-measure/bin/sev-snp-measure ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO python3 -m venv /opt/sev-snp-measure
    $SUDO /opt/sev-snp-measure/bin/pip install --quiet --disable-pip-version-check sev-snp-measure==0.0.13
fi

# Debian's signed kernel, unpacked (not installed) to /opt/coffer-test/vmlinuz: the test that
# checks `coffer measure tdx`'s Authenticode digest against the one Debian signed reads it.
if [ ! -s /opt/coffer-test/vmlinuz ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    work=$(mktemp -d) && chmod 0755 "$work"
    latest_kernel() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ && !found {print $2; found = 1}'; }
    kernel_pkg=$(latest_kernel)
    [ -n "$kernel_pkg" ] || { $SUDO apt-get update -qq; kernel_pkg=$(latest_kernel); }
    (cd "$work" && apt-get download -qq "$kernel_pkg")
    dpkg-deb --fsys-tarfile "$work"/linux-image-*.deb | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
    $SUDO install -D -m 0644 "$work"/boot/vmlinuz-* /opt/coffer-test/vmlinuz
    rm -rf "$work"
fi
