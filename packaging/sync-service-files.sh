#!/bin/sh
# Copy the canonical service files (service/) into the Python package (cpvd/service_files/),
# which the wheel ships and `cpvd service install` renders. Run after editing service/;
# tests/unit/test_service.py fails while the two differ. Names are flat because the package
# data glob (cpvd/service_files/*) takes no subdirectories.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
dst="$repo/cpvd/service_files"
mkdir -p "$dst"
cp "$repo/service/systemd/system/cpvd.service" "$dst/cpvd-system.service"
cp "$repo/service/systemd/system/cpvd.toml" "$dst/cpvd-system.toml"
cp "$repo/service/systemd/user/cpvd.service" "$dst/cpvd-user.service"
cp "$repo/service/launchd/io.cpv.cpvd.plist" "$dst/io.cpv.cpvd.plist"
echo "synced service/ -> cpvd/service_files/"
