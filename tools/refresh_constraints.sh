#!/usr/bin/env bash
# Refresh constraints.txt on purpose: resolve the project and its test extras afresh in a new venv
# and pin every package it installs. Run it, run the test suite in that venv, then commit the file.
#     bash tools/refresh_constraints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q -e ".[test]"
"$venv/bin/pip" install -q --no-deps torchvision==0.28.0 timm==1.0.31
{
  echo "# Every package the README's two commands install, pinned, so that a fresh machine resolves"
  echo "# what the suite was last run with. Refreshed on purpose by tools/refresh_constraints.sh,"
  echo "# never by accident: a new release cannot change what CI installs until this file changes."
  "$venv/bin/pip" freeze --all --exclude-editable | grep -v "^pip==" | sed 's/+cpu$//' | sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins) from $venv"
