#!/usr/bin/env bash
# `make image`: the OCI image the Helm chart runs, built on this machine with no container registry
# and no Docker engine, into build/calico-lens-<version>.oci.tar:
#   1. wheels built here with Python 3.11, the image's Python (the C parts are compiled once,
#      here; the image has no compiler),
#   2. a minimal Debian root filesystem (python3-minimal and its libraries only: no shell, no package
#      manager) made by mmdebstrap from this machine's own apt sources,
#   3. the packages installed into /opt/calico-lens and byte-compiled,
#   4. assembled from scratch with buildah: non-root user, OCI labels, saved as an OCI archive.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=ghcr.io/calico-lens/calico-lens:$VERSION
OUT=build/calico-lens-$VERSION.oci.tar
SUITE=${IMAGE_SUITE:-bookworm}  # Debian 12: python3 is 3.11, as the wheels
SOURCES=${IMAGE_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
step() { echo "image: $*"; }

for tool in mmdebstrap buildah; do
  command -v "$tool" >/dev/null || { echo "image: $tool is missing: run \`make setup\` (Debian package $tool)" >&2; exit 1; }
done
[ -f "$SOURCES" ] || { echo "image: no apt sources at $SOURCES (set IMAGE_APT_SOURCES to a .sources or .list file)" >&2; exit 1; }
py=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$py" = 3.11 ] || { echo "image: the wheels must be built with Python 3.11 (the image's), not $py" >&2; exit 1; }

work=$(mktemp -d /tmp/calico-lens-image.XXXXXX)
ctr=""
cleanup() { [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT

step "1/4 wheels for Python 3.11 (calico-lens with its C line scanner and snapshot YAML reader, and its dependencies)"
.venv/bin/pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" . 2>&1 | grep -v "is ignored" || true
.venv/bin/python - "$work/wheels" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("calico_lens-*.whl"))
names = zipfile.ZipFile(wheel).namelist()
for part, what in (("/parse/_scan", "C scanner (is a C compiler installed?)"),
                   ("/kube/_snapyaml", "C snapshot YAML reader (is libyaml-dev installed?)")):
    if not any(part in n and n.endswith(".so") for n in names):
        sys.exit(f"image: {wheel.name} has no compiled {what}")
PY

step "2/4 Debian $SUITE root filesystem (python3-minimal, libstdc++6 for grpcio) from $SOURCES with mmdebstrap"
mmdebstrap --quiet --variant=extract --include=python3-minimal,libpython3.11-stdlib,libstdc++6,netbase \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  "$SUITE" "$work/rootfs.tar" "$SOURCES"

step "3/4 Python packages into /opt/calico-lens"
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps --no-compile \
  --target "$work/app/opt/calico-lens" "$work"/wheels/*.whl 2>&1 | grep -v "is ignored" || true
rm -rf "$work/app/opt/calico-lens/bin"  # console scripts point at this machine's Python
.venv/bin/python -m compileall -q -j 0 "$work/app/opt/calico-lens" >/dev/null  # the image's root is read-only

step "4/4 assembling $IMAGE with buildah"
ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
buildah add --quiet "$ctr" "$work/app/opt" /opt >/dev/null
buildah config --entrypoint '["/usr/bin/python3", "-m", "calico_lens"]' --cmd '[]' \
  --env PYTHONPATH=/opt/calico-lens --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
  --user 65534:65534 --workingdir / \
  --label org.opencontainers.image.title=calico-lens \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.source=https://github.com/calico-lens/calico-lens \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.description="Network observability for Kubernetes clusters running Calico Open Source" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$IMAGE" >/dev/null
ctr=""
mkdir -p build
rm -f "$OUT"
buildah push --quiet "$IMAGE" "oci-archive:$OUT:$IMAGE"
buildah rmi "$IMAGE" >/dev/null
step "wrote $OUT ($(du -h "$OUT" | cut -f1); load it with: podman load -i $OUT)"
