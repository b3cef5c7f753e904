#!/bin/sh
# Build the Debian package of CPV from a clean checkout: a virtual environment under /opt/cpv
# holding cpv and its dependencies, the systemd unit, /etc/cpv/cpvd.toml, and maintainer
# scripts that create (postinst) and, on purge, remove (postrm) the cpv user and group.
#
# usage: packaging/build-deb.sh [--out DIR] [--worktree] [--no-deps]
#   --out DIR    where the .deb goes (default: dist/ in the repository)
#   --worktree   package the working tree (tracked + untracked, not ignored files) instead of
#                the committed HEAD: for trying uncommitted changes and for the test suite
#   --no-deps    install only cpv into the venv, not its dependencies (boto3, aiohttp, ...): a
#                package that does not run, built in seconds instead of minutes; the test suite
#                uses it to check the layout. Never ship one.
# environment:
#   TARGET_PYTHON  the interpreter the venv is made from, and which the package depends on
#                  (default /usr/bin/python3: the distribution's, present on every target)
#   BUILD_PYTHON   an interpreter with pip >= 22.3, which builds the wheel and installs into
#                  the venv (default: python3 on PATH)
#   PIP_*          the usual pip settings (index, find-links) for fetching dependencies
#
# The venv is built in a staging directory and relocated: every text file naming the staging
# path (script shebangs, activate, pyvenv.cfg) is rewritten to /opt/cpv, and byte code is
# compiled with /opt/cpv paths. Needs git, dpkg-deb; no root (dpkg-deb --root-owner-group).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/dist"
worktree=0
no_deps=0
while [ $# -gt 0 ]; do
    case "$1" in
    --out) out=$2; shift 2 ;;
    --worktree) worktree=1; shift ;;
    --no-deps) no_deps=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
target_python=${TARGET_PYTHON:-/usr/bin/python3}
build_python=${BUILD_PYTHON:-python3}
for tool in git dpkg-deb "$target_python" "$build_python"; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool not found" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/cpv-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
src="$work/src"
stage="$work/root"
venv="$stage/opt/cpv"
mkdir -p "$src" "$stage" "$out"

echo "== source ($( [ $worktree = 1 ] && echo 'working tree' || echo 'HEAD'))"
if [ $worktree = 1 ]; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --files-from=- --ignore-failed-read -cf -) | tar -xf - -C "$src"
else
    git -C "$repo" archive --format=tar HEAD | tar -xf - -C "$src"
fi

version=$(sed -n 's/^CPV_VERSION *= *"\([^"]*\)".*/\1/p' "$src/cpvctl/protocol.py")
[ -n "$version" ] || { echo "build-deb.sh: no CPV_VERSION in cpvctl/protocol.py" >&2; exit 1; }
arch=$(dpkg-deb --version >/dev/null && dpkg --print-architecture)
pyver=$("$target_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

echo "== wheel"
"$build_python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$src" \
    >"$work/wheel.log" 2>&1 || { cat "$work/wheel.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/cpv-*.whl)

echo "== venv /opt/cpv (python$pyver$( [ $no_deps = 1 ] && echo ', --no-deps'))"
"$target_python" -m venv --without-pip "$venv"
deps_flag=""
[ $no_deps = 1 ] && deps_flag="--no-deps"
# shellcheck disable=SC2086
"$build_python" -m pip --python "$venv/bin/python" install --quiet --no-compile \
    --disable-pip-version-check $deps_flag "$wheel"

echo "== relocate to /opt/cpv"
# pip records where the wheel came from (a file in the staging area): meaningless here
for info in "$venv"/lib/python*/site-packages/cpv-*.dist-info; do
    rm -f "$info/direct_url.json"
    sed -i '/direct_url\.json/d' "$info/RECORD"
done
grep -rlIZ --fixed-strings "$venv" "$venv" | xargs -0 -r sed -i "s#$venv#/opt/cpv#g"
if grep -rqI --fixed-strings "$work" "$venv"; then
    echo "build-deb.sh: the staging path is still named in:" >&2
    grep -rlI --fixed-strings "$work" "$venv" >&2
    exit 1
fi
"$venv/bin/python" -m compileall -q -j 0 -s "$stage" -p / "$venv/lib" >/dev/null

echo "== files"
units="$src/cpvd/service/units"  # the one copy; service/ at the top is a symlink to it
install -D -m 0644 "$units/systemd/system/cpvd.service" \
    "$stage/usr/lib/systemd/system/cpvd.service"
install -D -m 0644 "$units/systemd/system/cpvd.toml" "$stage/etc/cpv/cpvd.toml"
mkdir -p "$stage/usr/bin" "$stage/usr/share/doc/cpv"
ln -s /opt/cpv/bin/cpvd "$stage/usr/bin/cpvd"
ln -s /opt/cpv/bin/cpvctl "$stage/usr/bin/cpvctl"
install -m 0644 "$src/packaging/README.md" "$stage/usr/share/doc/cpv/README.packaging.md"

echo "== DEBIAN"
mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version-1/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@PYTHON@/python$pyver/" "$src/packaging/debian/control.in" >"$stage/DEBIAN/control"
install -m 0644 "$src/packaging/debian/conffiles" "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$src/packaging/debian/$script" "$stage/DEBIAN/$script"
done

deb="$out/cpv_${version}-1_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
echo "built $deb"
