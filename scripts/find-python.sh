#!/usr/bin/env bash
# Print the path of the first Python found for the given versions (e.g. `find-python.sh 3.12 3.13`),
# or nothing (exit 1). Looks on PATH (python3.12), then in pyenv's versions ($(pyenv root), else
# $PYENV_ROOT, else ~/.pyenv: 3.12.*/bin/python3, newest patch release first). This project's
# machines have pyenv with 3.12 and 3.13 (Debian 12's own python3 is 3.11).
set -uo pipefail
roots=()
command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root)")
roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv")
for version in "$@"; do
  candidates=("$(command -v "python$version" 2>/dev/null)")
  for root in "${roots[@]}"; do
    [ -n "$root" ] && candidates+=($(ls -d "$root"/versions/"$version".*/bin/python3 2>/dev/null | sort -rV))
  done
  for py in "${candidates[@]}"; do
    # a pyenv shim answers for versions it cannot run: ask the interpreter itself
    if [ -n "$py" ] && [ -x "$py" ] && "$py" -c "import sys, venv; assert sys.version.startswith('$version.')" 2>/dev/null; then
      echo "$py"
      exit 0
    fi
  done
done
exit 1
