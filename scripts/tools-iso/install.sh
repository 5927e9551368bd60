#!/bin/sh
# The vireo-tools installer on the tools ISO (scripts/build-tools-iso.sh puts it there).
#   sh install.sh [FOLDER [TARGET]]
# Installs FOLDER/vireo-tools (default: this script's folder, e.g. the mounted CD) as TARGET
# (default /usr/local/bin/vireo-tools). The new binary is written beside TARGET and renamed
# over it, so a running daemon keeps its old image until it restarts; vireo-tools runs this
# for UpgradeTools_Task and then re-executes itself as the new version.
set -eu
folder=${1:-$(dirname "$0")}
target=${2:-/usr/local/bin/vireo-tools}
mkdir -p "$(dirname "$target")"
cp "$folder/vireo-tools" "$target.new"
chmod 0755 "$target.new"
mv -f "$target.new" "$target"
echo "installed $target"
