#!/usr/bin/env bash
# Install the Debian packages a Qt + OpenGL napari window needs (Xvfb, Mesa, xcb).
# Idempotent: installs only what is missing. Works as root without prompts; uses sudo otherwise.
set -euo pipefail
PKGS=(xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libegl-mesa0 libdbus-1-3 libfontconfig1
  libglib2.0-0 libx11-xcb1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1 libxcb-sync1 libxcb-glx0
  libxcb-shm0 libxcb-render0 libxcb-util1 libxcb-cursor0)
command -v dpkg-query >/dev/null || { echo "not a Debian-like system: install the GL/xcb/Xvfb libraries yourself" >&2; exit 0; }
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "system packages: all present"; exit 0; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
