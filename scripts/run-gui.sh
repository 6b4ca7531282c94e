#!/usr/bin/env bash
# Run a GUI command with a throwaway napari settings file; under Xvfb when there is no display
# (or when HEADLESS=1). Pure `offscreen` Qt has no OpenGL and crashes vispy, so we use xcb on Xvfb.
set -euo pipefail
cfg_dir=$(mktemp -d)
trap 'rm -rf "$cfg_dir"' EXIT
export NAPARI_CONFIG="$cfg_dir/settings.yaml"
if [ -z "${DISPLAY:-}" ] || [ "${HEADLESS:-0}" = "1" ]; then
  exec xvfb-run -a -s "-screen 0 1280x1024x24" env QT_QPA_PLATFORM=xcb NAPARI_CONFIG="$NAPARI_CONFIG" \
    NAPARI_ASYNC_SLICING_HEADLESS=1 "$@"
fi
exec "$@"
