#!/usr/bin/env bash
# Build the latentwire container images from this checkout.
#
#   deploy/docker/build.sh [options] [server|gpu|edge|all ...] [-- extra build options]
#
# Images (tag = the version in pyproject.toml):
#   server  deploy/docker/Dockerfile       localhost/latentwire:VERSION        extras cpu,server
#   gpu     deploy/docker/Dockerfile.gpu   localhost/latentwire:VERSION-gpu    extras gpu,server
#   edge    deploy/docker/Dockerfile.edge  localhost/latentwire-edge:VERSION   extras cpu
#
# Options:
#   --tool podman|docker   builder (default: podman if installed, else docker)
#   --base IMAGE           base image of every stage (default: each Dockerfile's own:
#                          python:3.11-slim-bookworm; nvidia/cuda:...-ubuntu24.04 for gpu)
#   --offline              build with no network: pip downloads the dependency wheels here
#                          first (into deploy/docker/wheels/, for --python/--glibc/uname -m),
#                          the image installs them with --no-index, and the build runs with
#                          --network=none (podman: also --pull=never, so --base must be local,
#                          e.g. from deploy/docker/bootstrap-base.sh)
#   --python X.Y           Python of the base image, for --offline (default: 3.11)
#   --glibc 2.N            glibc of the base image, for --offline (default: 2.36, bookworm)
#   --numpy-without-blas   edge image, with --offline: build numpy from PyPI's sdist here
#                          without BLAS/LAPACK (the edge never multiplies matrices in numpy)
#                          and install that instead of the wheel with OpenBLAS (28.5 MB);
#                          needs gcc/g++ and the headers of this host's Python, which must be
#                          the base image's X.Y, on a glibc no newer than its own; ~3.5 min
#                          once, then cached in deploy/docker/wheels/numpy-without-blas/
#
# Without --offline the build stage installs the dependencies from PyPI itself.
# Everything after `--` goes to `podman/docker build` as is (e.g. on a VM without
# CAP_SYS_RESOURCE: -- --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
die() { echo "build.sh: error: $*" >&2; exit 2; }

tool=""
base=""
offline=0
numpy_without_blas=0
python_version=3.11
glibc=2.36
images=()
extra=()
while (($#)); do
    case "$1" in
        --tool) tool="${2:?--tool needs podman or docker}"; shift 2 ;;
        --base) base="${2:?--base needs an image}"; shift 2 ;;
        --offline) offline=1; shift ;;
        --numpy-without-blas) numpy_without_blas=1; shift ;;
        --python) python_version="${2:?--python needs X.Y}"; shift 2 ;;
        --glibc) glibc="${2:?--glibc needs 2.N}"; shift 2 ;;
        server|gpu|edge) images+=("$1"); shift ;;
        all) images+=(server gpu edge); shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
((${#images[@]})) || images=(server)
if [[ -z "$tool" ]]; then
    if command -v podman > /dev/null; then tool=podman
    elif command -v docker > /dev/null; then tool=docker
    else die "neither podman nor docker found"; fi
fi
[[ "$tool" == podman || "$tool" == docker ]] || die "--tool must be podman or docker, not $tool"
[[ "$python_version" =~ ^3\.[0-9]+$ ]] || die "--python must look like 3.11, not $python_version"
[[ "$glibc" =~ ^2\.[0-9]+$ ]] || die "--glibc must look like 2.36, not $glibc"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)"
[[ -n "$version" ]] || die "no version in $repo/pyproject.toml"

dockerfile() { case "$1" in server) echo Dockerfile ;; gpu) echo Dockerfile.gpu ;; edge) echo Dockerfile.edge ;; esac; }
tag() { case "$1" in server) echo "localhost/latentwire:$version" ;; gpu) echo "localhost/latentwire:$version-gpu" ;; edge) echo "localhost/latentwire-edge:$version" ;; esac; }
extras() { case "$1" in server) echo cpu,server ;; gpu) echo gpu,server ;; edge) echo cpu ;; esac; }

download_wheels() {
    # The dependency wheels of every image asked for, for the base image's platform, plus
    # setuptools for the image's PEP 517 build of latentwire itself.
    local wheels="$here/wheels" arch tmp reqs=() platforms=()
    arch="$(uname -m)"
    for ((minor = ${glibc#2.}; minor >= 17; minor--)); do platforms+=(--platform "manylinux_2_${minor}_${arch}"); done
    platforms+=(--platform "manylinux2014_${arch}")
    tmp="$(mktemp -d)"
    mkdir -p "$tmp/src"
    cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/runtime" "$repo/training" "$tmp/src/"
    python3 -m pip wheel -q --no-deps -w "$tmp/dist" "$tmp/src"
    for image in "${images[@]}"; do reqs+=("latentwire[$(extras "$image")]==$version"); done
    rm -f "$wheels"/*.whl
    mkdir -p "$wheels"
    python3 -m pip download -q --dest "$wheels" --find-links "$tmp/dist" --only-binary=:all: \
        --implementation cp --python-version "$python_version" "${platforms[@]}" \
        "${reqs[@]}" "setuptools>=77"
    rm -f "$wheels"/latentwire-*.whl  # the image builds latentwire from the source itself
    rm -rf "$tmp"
    echo "build.sh: $(find "$wheels" -name '*.whl' | wc -l) wheels in $wheels"
}

numpy_without_blas_wheel() {
    # numpy from its sdist with -Dblas=none -Dlapack=none, the version download_wheels
    # fetched; kept across builds (download_wheels only clears the folder's top level)
    local dest="$here/wheels/numpy-without-blas" wheel version host_py host_glibc
    wheel="$(find "$here/wheels" -maxdepth 1 -name 'numpy-*.whl' | head -n 1)"
    [[ -n "$wheel" ]] || die "no numpy wheel in $here/wheels to match"
    version="$(basename "$wheel" | cut -d- -f2)"
    host_py="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [[ "$host_py" == "$python_version" ]] ||
        die "--numpy-without-blas builds with this host's Python $host_py; the image has $python_version"
    host_glibc="$(getconf GNU_LIBC_VERSION | cut -d' ' -f2)"
    ((${host_glibc#2.} <= ${glibc#2.})) ||
        die "--numpy-without-blas: this host's glibc $host_glibc is newer than the image's $glibc"
    if ! find "$dest" -name "numpy-$version-*.whl" 2> /dev/null | grep -q .; then
        echo "build.sh: building numpy $version without BLAS (a few minutes, once)"
        rm -rf "$dest"
        python3 -m pip wheel -q --no-deps --no-binary numpy -w "$dest" "numpy==$version" \
            -Csetup-args=-Dblas=none -Csetup-args=-Dlapack=none
    fi
    echo "build.sh: the edge image takes $(basename "$(find "$dest" -name '*.whl' | head -n 1)")"
}

build_args=()
[[ -n "$base" ]] && build_args+=(--build-arg "BASE_IMAGE=$base")
if ((offline)); then
    download_wheels
    build_args+=(--build-arg "PIP_ARGS=--no-index --find-links /wheels" --network=none)
    [[ "$tool" == podman ]] && build_args+=(--pull=never)
fi
if ((numpy_without_blas)); then
    ((offline)) || die "--numpy-without-blas needs --offline (the wheel is built here, then copied in)"
    numpy_without_blas_wheel
fi

for image in "${images[@]}"; do
    start=$SECONDS
    image_args=()
    if [[ "$image" == edge ]] && ((numpy_without_blas)); then
        image_args+=(--build-arg "NUMPY_FROM=/wheels/numpy-without-blas")
    fi
    "$tool" build -f "$here/$(dockerfile "$image")" -t "$(tag "$image")" \
        "${build_args[@]}" "${image_args[@]}" "${extra[@]}" "$repo"
    echo "build.sh: built $(tag "$image") in $((SECONDS - start)) s"
done
