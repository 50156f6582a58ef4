#!/usr/bin/env bash
# Checks that vendor/tokio-websockets is the crates.io release plus
# tokio-websockets.patch and nothing else (vendor/README.md). Needs network.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name=tokio-websockets version=0.13.3
sha=d52efb639344a7c6adb8e62c6f3d2c19c001ff1b79a5041ba1c6ed42e19c6aa5
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
curl -sSfL -o "$tmp/c.crate" "https://static.crates.io/crates/$name/$name-$version.crate"
echo "$sha  $tmp/c.crate" | sha256sum -c --quiet
tar xzf "$tmp/c.crate" -C "$tmp"
release="$tmp/$name-$version"
patch -s -p1 -d "$release" < "$here/$name.patch"
# Left out on purpose when vendoring (README.md).
for d in .cargo .github autobahn benches scripts Cargo.lock .cargo-ok .cargo_vcs_info.json \
    .codespellrc .dockerignore .gitignore; do
    rm -rf "${release:?}/$d"
done
diff -r -x .cargo_vcs_info.json "$release" "$here/$name"
echo "vendor/$name: the $version release plus $name.patch, nothing else"
