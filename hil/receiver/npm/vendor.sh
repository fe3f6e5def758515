#!/bin/sh
# Refresh the vendored Leaflet (hil/receiver/static/leaflet/) from the npm registry: `npm run
# vendor` here, then commit the result. Dev time only: the receiver serves the committed copy
# (no CDN, works offline) and CI never runs npm (docs/decisions.md D55). The tarball must have
# the integrity pinned in package.json: a re-published or tampered version stops here.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../static/leaflet"
version=$(node -p 'require(process.argv[1]).dependencies.leaflet' "$here/package.json")
want=$(node -p 'require(process.argv[1]).vendor.leaflet.integrity' "$here/package.json")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent --json "leaflet@$version" >pack.json)
got=$(node -p 'require(process.argv[1])[0].integrity' "$tmp/pack.json")
if [ "$got" != "$want" ]; then
  echo "leaflet@$version: integrity $got, package.json pins $want" >&2
  exit 1
fi
tar -xzf "$tmp/leaflet-$version.tgz" -C "$tmp"
mkdir -p "$out/images"
node -p 'require(process.argv[1]).vendor.leaflet.files.join("\n")' "$here/package.json" |
while read -r file; do
  case "$file" in
    dist/images/*) cp "$tmp/package/$file" "$out/images/" ;;
    dist/*) cp "$tmp/package/$file" "$out/" ;;
    *) cp "$tmp/package/$file" "$out/" ;;
  esac
done
echo "leaflet@$version ($got) -> $out"
