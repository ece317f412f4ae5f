#!/bin/sh
# Model-sync sidecar: mirror an object-storage model repository (rclone remote
# $LATENTWIRE_MODELS_SOURCE, laid out NAME/VERSION/) into the pod's /models every
# $LATENTWIRE_SYNC_SECONDS (0 = one pass, then exit). rclone syncs into /staging; each version not yet in /models is
# copied beside it under a hidden name and renamed in, so the server (which skips hidden
# directories) never sees a half-copied version. Versions gone from the source are removed
# (the server unloads them). A version is never re-copied: publish a new version number
# instead of changing one. $LATENTWIRE_SYNC_MARKER (/tmp/synced) marks the first complete pass (the startup probe).
set -eu
src="${LATENTWIRE_MODELS_SOURCE:?set LATENTWIRE_MODELS_SOURCE to an rclone remote:path}"
stage="${LATENTWIRE_STAGING:-/staging}"
dst="${LATENTWIRE_MODELS:-/models}"
every="${LATENTWIRE_SYNC_SECONDS:-30}"
marker="${LATENTWIRE_SYNC_MARKER:-/tmp/synced}"
while true; do
  if rclone sync "$src" "$stage"; then
    for v in "$stage"/*/*/; do
      v="${v%/}"
      [ -f "$v/manifest.json" ] || continue
      rel="${v#"$stage"/}"
      name="${rel%%/*}"
      ver="${rel#*/}"
      [ -d "$dst/$rel" ] && continue
      mkdir -p "$dst/$name"
      rm -rf "$dst/$name/.$ver.partial"
      cp -R "$v" "$dst/$name/.$ver.partial"
      mv "$dst/$name/.$ver.partial" "$dst/$rel"
      echo "sync-models: added $rel"
    done
    for d in "$dst"/*/*/; do
      d="${d%/}"
      [ -d "$d" ] || continue
      rel="${d#"$dst"/}"
      [ -d "$stage/$rel" ] && continue
      rm -rf "$d"
      echo "sync-models: removed $rel"
    done
    touch "$marker"
  else
    echo "sync-models: rclone sync $src failed; /models keeps what it has" >&2
  fi
  [ "$every" = 0 ] && exit 0
  sleep "$every"
done
