#!/usr/bin/env bash
# An emulated 64-bit ARM (aarch64) Debian 12 userland on an x86_64 Linux host, for proving
# that latentwire's edge install (`pip install "latentwire[cpu]"`) resolves real
# manylinux aarch64 wheels from PyPI and runs: qemu-user through binfmt_misc, a bookworm
# arm64 root filesystem made by mmdebstrap, a venv at ROOT/opt/latentwire.
#
#   scripts/arm64_userland.sh build ROOT [MIRROR]   bookworm arm64 with python3 (3.11),
#                                                   python3-venv, python3-pip (~3 min, 230 MB)
#   scripts/arm64_userland.sh wheel OUTDIR          latentwire's wheel from this checkout
#   scripts/arm64_userland.sh install ROOT WHEEL [EXTRAS]
#                                                   a new venv /opt/latentwire in ROOT, then
#                                                   pip install --only-binary=:all: "WHEEL[EXTRAS]"
#                                                   from PyPI inside (EXTRAS default: cpu)
#   scripts/arm64_userland.sh run ROOT [--bind HOST:GUEST]... [--] CMD [ARG]...
#                                                   run CMD inside ROOT (the venv's bin first
#                                                   on PATH); --bind mounts a host folder
#   scripts/arm64_userland.sh size ROOT             bytes of the venv's site-packages, without
#                                                   pip and setuptools (with and without pyc)
#   scripts/arm64_userland.sh setup ROOT [EXTRAS]   build (if ROOT has no python3 yet) + wheel
#                                                   + install
#
# Needs root (chroot, mounts), and on Debian: apt-get install mmdebstrap qemu-user-static
# binfmt-support. binfmt_misc is mounted and qemu-aarch64 enabled when they are not (the
# kernel must have binfmt_misc; qemu-user-static registers with the F flag, so nothing is
# copied into ROOT). Commands run in a private mount namespace (unshare), so the /proc,
# /sys, /dev and /tmp mounts inside ROOT vanish with them; the network is the host's, so
# 127.0.0.1 inside is the host's loopback.
#
# Emulation quirk (not a latentwire or device issue): qemu-user 7.2 shows the HOST's x86
# /proc/cpuinfo to the guest, and onnxruntime's cpuinfo then crashes the import
# (`qemu: uncaught target signal 11 (Segmentation fault)` in onnxruntime_pybind11_state).
# `run` therefore bind-mounts an ARM /proc/cpuinfo matching QEMU_CPU (default cortex-a76,
# the Raspberry Pi 5's core; also cortex-a72 = Pi 4, neoverse-n1 = Graviton2, max).
#
# Environment: QEMU_CPU (see above); PYTHON, the host Python that builds the wheel (needs
# setuptools>=77; default python3); PIP_CERT, PIP_INDEX_URL, PIP_DEFAULT_TIMEOUT and the
# *_proxy variables pass through to pip inside (PIP_CERT's file is copied into ROOT).
set -euo pipefail

me="arm64_userland.sh"
die() { echo "$me: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=/opt/latentwire

need_root() { [ "$(id -u)" = 0 ] || die "needs root (chroot and mounts)"; }

# binfmt_misc mounted and qemu-aarch64 enabled; a clear error when the sandbox forbids it
binfmt() {
    local dir=/proc/sys/fs/binfmt_misc
    [ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir" 2> /dev/null ||
        die "binfmt_misc is not mounted and cannot be (mount -t binfmt_misc binfmt_misc $dir)"
    if [ ! -e "$dir/qemu-aarch64" ]; then
        command -v update-binfmts > /dev/null ||
            die "no qemu-aarch64 handler: apt-get install qemu-user-static binfmt-support"
        update-binfmts --enable qemu-aarch64 > /dev/null 2>&1 || true
    fi
    if ! grep -qsx enabled "$dir/qemu-aarch64"; then
        die "qemu-aarch64 is not registered in $dir (update-binfmts --enable qemu-aarch64)"
    fi
}

# an ARM /proc/cpuinfo for the emulated CPU (see the header)
cpuinfo() {
    local cpu="$1" part features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
    case "$cpu" in
        cortex-a53) part=0xd03 ;;
        cortex-a57) part=0xd07 ;;
        cortex-a72) part=0xd08 ;;
        cortex-a76) part=0xd0b; features+=" atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp" ;;
        neoverse-n1) part=0xd0c; features+=" atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp" ;;
        *) part=0xd0c; features+=" atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp" ;;
    esac
    local n i
    n="$(nproc)"
    for ((i = 0; i < n; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: %s\n' "$i" "$features"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n'
        printf 'CPU part\t: %s\nCPU revision\t: 0\n\n' "$part"
    done
}

check_root_dir() {
    [ -x "$1/usr/bin/python3" ] || die "$1 holds no arm64 userland: run '$me build $1' first"
}

cmd_build() {
    local root="${1:?usage: $me build ROOT [MIRROR]}" mirror="${2:-http://deb.debian.org/debian}"
    need_root
    command -v mmdebstrap > /dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"
    binfmt
    if [ -x "$root/usr/bin/python3" ]; then
        echo "$me: $root already holds a userland (delete it to rebuild)"
        return
    fi
    [ ! -e "$root" ] || [ -z "$(ls -A "$root")" ] || die "$root exists and is not empty"
    local t0
    t0="$(now)"
    # minbase + Python; docs, man pages and locales left out, apt's lists emptied
    # shellcheck disable=SC2016  # the hook's "$1" is mmdebstrap's, not ours
    mmdebstrap --architectures=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$root" "$mirror"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
    echo "$me: built $root in $(took "$t0") s ($(du -sm "$root" | cut -f1) MB)"
}

cmd_wheel() {
    local out="${1:?usage: $me wheel OUTDIR}" py="${PYTHON:-python3}" src t0
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    t0="$(now)"
    # build from a copy of what the wheel is made of (tracked and untracked-but-not-ignored
    # files, as they are now), so that no build/ or egg-info is written into the checkout
    src="$(mktemp -d)"
    (cd "$here" && git ls-files -z --cached --others --exclude-standard -- pyproject.toml \
        README.md 'LICENSE*' runtime training |
        while IFS= read -r -d '' f; do if [ -f "$f" ]; then printf '%s\0' "$f"; fi; done |
        tar --null -T - -cf -) | tar -xf - -C "$src"
    rm -f "$out"/latentwire-*.whl
    "$py" -m pip wheel -q --no-deps --no-build-isolation "$src" -w "$out" > /dev/null
    rm -rf "$src"
    ls "$out"/latentwire-*.whl
    echo "$me: wheel in $(took "$t0") s" >&2
}

# run CMD inside ROOT; first argument ROOT, then [--bind HOST:GUEST]... [--] CMD...
cmd_run() {
    local root="${1:?usage: $me run ROOT [--bind HOST:GUEST]... [--] CMD...}"
    shift
    local binds=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --bind) binds+=("$2"); shift 2 ;;
            --) shift; break ;;
            *) break ;;
        esac
    done
    [ $# -gt 0 ] || die "run: no command"
    need_root
    binfmt
    check_root_dir "$root"
    root="$(cd "$root" && pwd)"
    local cpu="${QEMU_CPU:-cortex-a76}" b guest
    mkdir -p "$root/etc/latentwire-arm64"
    cpuinfo "$cpu" > "$root/etc/latentwire-arm64/cpuinfo"
    [ -e /etc/resolv.conf ] && cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    local mounts="mount -t proc proc '$root/proc'"
    mounts+=" && mount --bind '$root/etc/latentwire-arm64/cpuinfo' '$root/proc/cpuinfo'"
    mounts+=" && mount --rbind /sys '$root/sys' && mount --rbind /dev '$root/dev'"
    mounts+=" && mount -t tmpfs tmpfs '$root/tmp'"
    for b in ${binds[@]+"${binds[@]}"}; do
        guest="${b#*:}"
        mkdir -p "$root/$guest"
        mounts+=" && mount --bind '${b%%:*}' '$root/$guest'"
    done
    # a clean environment inside: the venv first on PATH, pip's settings that make sense
    # there (not find-links / extra indexes of the x86 host)
    local envs=(HOME=/root "PATH=$venv/bin:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8
        "QEMU_CPU=$cpu" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONFIG_FILE=/dev/null
        PYTHONDONTWRITEBYTECODE=1)
    local v
    for v in PIP_INDEX_URL PIP_DEFAULT_TIMEOUT http_proxy https_proxy no_proxy HTTP_PROXY \
        HTTPS_PROXY NO_PROXY LATENTWIRE_TOKEN; do
        [ -n "${!v:-}" ] && envs+=("$v=${!v}")
    done
    if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
        cp "$PIP_CERT" "$root/etc/latentwire-arm64/pip-ca.crt"
        envs+=(PIP_CERT=/etc/latentwire-arm64/pip-ca.crt)
    fi
    # shellcheck disable=SC2016  # "$0" and "$@" belong to the inner bash
    unshare --mount --propagation private -- bash -c "$mounts"' && exec chroot "$0" /usr/bin/env -i "$@"' \
        "$root" "${envs[@]}" "$@"
}

cmd_install() {
    local root="${1:?usage: $me install ROOT WHEEL [EXTRAS]}" wheel="${2:?usage: $me install ROOT WHEEL [EXTRAS]}"
    local extras="${3-cpu}" t0 name spec
    check_root_dir "$root"
    [ -f "$wheel" ] || die "no wheel at $wheel"
    name="$(basename "$wheel")"
    mkdir -p "$root/root/dist"
    rm -f "$root"/root/dist/latentwire-*.whl
    cp "$wheel" "$root/root/dist/$name"
    spec="/root/dist/$name${extras:+[$extras]}"
    # a fresh venv every time: exactly what `pip install "latentwire[EXTRAS]"` brings (pip's
    # download cache in ROOT/root/.cache/pip is kept)
    rm -rf "${root:?}$venv"
    t0="$(now)"
    cmd_run "$root" python3 -m venv "$venv"
    echo "$me: venv in $(took "$t0") s"
    t0="$(now)"
    # wheels only: a source build under emulation would take hours (grpcio) or fail
    cmd_run "$root" "$venv/bin/pip" install --only-binary=:all: "$spec"
    # the checkout's latentwire even when the same version is installed already
    cmd_run "$root" "$venv/bin/pip" install -q --no-deps --force-reinstall "/root/dist/$name"
    echo "$me: pip install in $(took "$t0") s"
    cmd_run "$root" "$venv/bin/pip" list
}

cmd_size() {
    local root="${1:?usage: $me size ROOT}" sp
    sp="$(echo "$root$venv"/lib/python3*/site-packages)"
    [ -d "$sp" ] || die "no venv at $root$venv"
    (
        cd "$sp"
        local keep=() f
        for f in *; do
            case "$f" in
                pip | pip-* | setuptools | setuptools-* | _distutils_hack | pkg_resources | \
                    distutils-precedence.pth) ;;
                *) keep+=("$f") ;;
            esac
        done
        local all pyc
        all="$(du -sbc "${keep[@]}" | tail -1 | cut -f1)"
        pyc="$(find "${keep[@]}" -name '*.pyc' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
        awk -v a="$all" -v p="$pyc" 'BEGIN { printf "site-packages without pip/setuptools: %d B = %.1f MB; without pyc %.1f MB\n", a, a / 1e6, (a - p) / 1e6 }'
        du -sb "${keep[@]}" | sort -rn | head -12 | awk '{ printf "  %8.1f MB  %s\n", $1 / 1e6, $2 }'
    )
}

cmd_setup() {
    local root="${1:?usage: $me setup ROOT [EXTRAS]}" extras="${2-cpu}" dist wheel
    cmd_build "$root"
    dist="$(mktemp -d)"
    wheel="$(cmd_wheel "$dist")"
    cmd_install "$root" "$wheel" "$extras"
    rm -rf "$dist"
}

sub="${1:-}"
[ $# -gt 0 ] && shift
case "$sub" in
    build | wheel | install | run | size | setup) "cmd_$sub" "$@" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
