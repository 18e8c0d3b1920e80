#!/usr/bin/env bash
# Installs the system packages Coffer's tests and demo use on Debian (idempotent).
#   runc        the OCI runtime `coffer run` starts containers with
#   skopeo umoci  independent OCI tools the conversion tests check our images with
#   busybox-static  a real, unmodified static program for demo and test images
set -euo pipefail
packages=(runc skopeo umoci busybox-static)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
