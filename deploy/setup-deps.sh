#!/usr/bin/env bash
# setup-deps.sh — install what sipslb needs to build and test on Debian 12 (run as root).
#
# 1. Debian packages for the build and the tests (apt is left alone when all are there).
# 2. wolfSSL built from Debian's own source package (Debian's patches applied) with the
#    x86-64 speed-ups (AES-NI, SP assembly), static, into ${SLB_DEPS_PREFIX}/wolfssl.
#    Debian's binary has no assembly and is ~20x slower on AES-GCM (shared/WOLFSSL.md).
#    A stamp keyed on source version + build flags makes a re-run a no-op.
#
# Idempotent. Environment:
#   SLB_DEPS_PREFIX   install prefix root           (default /opt/sipslb-deps)
#   SLB_DEPS_WORKDIR  where the source is unpacked  (default /var/tmp/sipslb-deps-build)
#   SLB_DEPS_JOBS     make -j                       (default 2)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PREFIX_ROOT=${SLB_DEPS_PREFIX:-/opt/sipslb-deps}
WOLF_PREFIX="$PREFIX_ROOT/wolfssl"
WORKDIR=${SLB_DEPS_WORKDIR:-/var/tmp/sipslb-deps-build}
JOBS=${SLB_DEPS_JOBS:-2}
STAMP="$WOLF_PREFIX/.sipslb-build-stamp"
SRC_LIST=/etc/apt/sources.list.d/sipslb-src.sources

PACKAGES=(
    build-essential cmake pkg-config
    liburing-dev libjemalloc-dev libcriterion-dev
    clang clang-format libclang-rt-14-dev
    dpkg-dev autoconf automake libtool   # apt-get source + ./autogen.sh
    openssl                              # tests generate throwaway certificates
    libwolfssl-dev                       # fallback, and the speed comparison baseline
    kamailio kamailio-tls-modules        # interop: SIPS backends (tests/kamailio)
    haproxy                              # interop: TLS originator for SIPp (tests/haproxy)
    sip-tester                           # interop: SIPp, the SIP load client (tests/sipp)
    gnuplot-nox                          # bench/run: PNG plots of the results
    iproute2 util-linux                  # e2e_hostile: ss (keepalive timers), prlimit
    libmicrohttpd-dev                    # the --admin listener's HTTP server
    libc-ares-dev dnsmasq-base           # backends from DNS SRV; its tests run dnsmasq themselves (-base: no system service)
    prometheus                           # e2e_operations: a real Prometheus (and promtool)
    man-db lintian                       # sipslb_man, e2e_package: groff, man -l, lintian
    chromium libnss3-tools               # e2e_browser: JsSIP in headless Chromium; certutil (its trust store)
)

# The flags of shared/WOLFSSL.md, plus IP SAN checks. Changing them changes the stamp key.
WOLF_CONFIGURE_FLAGS=(
    --enable-static --disable-shared
    --enable-aesni --enable-intelasm --enable-sp=yes --enable-sp-asm --enable-fpecc
    --enable-tls13 --enable-session-ticket --enable-sni --enable-alpn
    --enable-supportedcurves --enable-curve25519 --enable-aesgcm --enable-chacha
    --enable-poly1305 --enable-crl --enable-ocsp --enable-ocspstapling --enable-opensslextra
    --enable-altcertchains --enable-enckeys --disable-examples
    --enable-ip-alt-name  # backends are often named by address: check IP SANs too
)
# WOLFSSL_FPKI: accept URI SANs without "//" such as sip:example.com (RFC 5922 form).
WOLF_EXTRA_CPPFLAGS="-DWOLFSSL_FPKI -DWOLFSSL_GETRANDOM"

log() { printf 'setup-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, $PREFIX_ROOT)"

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

install_packages() {
    local missing=() p
    for p in "$@"; do
        is_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing: ${missing[*]}"
    # Try without refreshing the lists first: re-runs and warm machines stay fast.
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        log "apt-get update (some packages not installable from current lists)"
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# deb-src stanzas mirroring the deb ones of debian.sources (same URIs, suites, keyring),
# in a file of our own so the system file is never edited.
have_wolfssl_source() {
    # Not `| grep -q`: under pipefail its early exit would SIGPIPE apt-cache.
    [[ $(apt-cache showsrc wolfssl 2>/dev/null) == *"Package: wolfssl"* ]]
}

ensure_deb_src() {
    have_wolfssl_source && return 0
    if [[ ! -f $SRC_LIST ]]; then
        log "adding deb-src entries in $SRC_LIST"
        local sys=/etc/apt/sources.list.d/debian.sources
        if [[ -f $sys ]]; then
            awk 'BEGIN { RS = ""; ORS = "\n\n" }
                 /(^|\n)Types:[^\n]*deb/ && /(^|\n)URIs:[^\n]*debian/ {
                     sub(/(^|\n)Types:[^\n]*/, "Types: deb-src"); print }' "$sys" >"$SRC_LIST"
        fi
        if [[ ! -s $SRC_LIST ]]; then
            cat >"$SRC_LIST" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        fi
    fi
    log "apt-get update (source lists)"
    apt-get update -q >/dev/null
    have_wolfssl_source || die "apt-cache showsrc wolfssl finds nothing after adding $SRC_LIST"
}

# Newest source version among all suites (bookworm-security usually wins).
newest_wolfssl_version() {
    local best="" v
    while read -r v; do
        if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
    done < <(apt-cache showsrc wolfssl | awk '/^Package: /{p=$2} p=="wolfssl" && /^Version: /{print $2}')
    [[ -n $best ]] || die "no wolfssl source version found"
    printf '%s\n' "$best"
}

# Debian's hardening flags. -ffile-prefix-map depends on the current directory, so the
# flags are taken inside the source tree and that option is left out of the stamp key.
build_flags() { dpkg-buildflags --get "$1"; }
stamp_key() {
    local ver=$1
    {
        echo "version=$ver"
        echo "configure=${WOLF_CONFIGURE_FLAGS[*]}"
        echo "cppflags=$(build_flags CPPFLAGS) $WOLF_EXTRA_CPPFLAGS"
        echo "cflags=$(build_flags CFLAGS | sed 's/-ffile-prefix-map=[^ ]*//')"
        echo "ldflags=$(build_flags LDFLAGS)"
    } | sha256sum | cut -d' ' -f1
}

has_define() { grep -q "^#define $1\b" "$WOLF_PREFIX/include/wolfssl/options.h" 2>/dev/null; }

summary() {
    local ver=$1 how=$2 aesni=no spasm=no
    has_define WOLFSSL_AESNI && aesni=yes
    has_define WOLFSSL_SP_X86_64_ASM && spasm=yes
    printf 'setup-deps: wolfSSL %s in %s (%s): WOLFSSL_AESNI=%s WOLFSSL_SP_X86_64_ASM=%s\n' \
        "$ver" "$WOLF_PREFIX" "$how" "$aesni" "$spasm"
}

build_wolfssl() {
    local ver=$1 key=$2
    local dir="$WORKDIR/$ver" logf="$WORKDIR/wolfssl-$ver.log"
    rm -rf "$dir"
    mkdir -p "$dir"
    : >"$logf"
    log "building wolfSSL $ver from Debian source (log: $logf)"
    # apt-get source runs dpkg-source -x, which applies debian/patches.
    (cd "$dir" && apt-get source -q "wolfssl=$ver") >>"$logf" 2>&1 ||
        die "apt-get source wolfssl=$ver failed, see $logf"
    local src
    src=$(find "$dir" -mindepth 1 -maxdepth 1 -type d -name 'wolfssl-*' | head -n1)
    [[ -n $src ]] || die "no unpacked source tree in $dir"
    (
        cd "$src"
        CPPFLAGS="$(build_flags CPPFLAGS) $WOLF_EXTRA_CPPFLAGS"
        CFLAGS="$(build_flags CFLAGS)"
        LDFLAGS="$(build_flags LDFLAGS)"
        ./autogen.sh
        ./configure --prefix="$WOLF_PREFIX" "${WOLF_CONFIGURE_FLAGS[@]}" \
            CPPFLAGS="$CPPFLAGS" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS"
        make -j"$JOBS"
    ) >>"$logf" 2>&1 || die "wolfSSL build failed, see $logf"
    # Install into a clean prefix so files of an older build cannot linger.
    rm -rf "$WOLF_PREFIX"
    (cd "$src" && make install) >>"$logf" 2>&1 || die "wolfSSL install failed, see $logf"
    printf '%s\n' "$key" >"$STAMP"
    printf 'version=%s\nconfigure=%s\ncppflags_extra=%s\n' \
        "$ver" "${WOLF_CONFIGURE_FLAGS[*]}" "$WOLF_EXTRA_CPPFLAGS" >"$WOLF_PREFIX/.sipslb-build-info"
    rm -rf "$dir" # the log stays; the tree is 100+ MB
}

# e2e_browser's npm packages (tests/browser/package.json: jssip, puppeteer-core, esbuild) in
# $PREFIX_ROOT/browser, and JsSIP bundled for the page (jssip.min.js). Node from Debian when
# none is installed. Skipped when the installed package.json is the repository's.
ensure_browser_deps() {
    local dir="$PREFIX_ROOT/browser" here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        install_packages nodejs npm
    fi
    if [[ -f $dir/jssip.min.js ]] && cmp -s "$here/tests/browser/package.json" "$dir/package.json"; then
        return 0
    fi
    log "npm: jssip, puppeteer-core, esbuild into $dir"
    mkdir -p "$dir"
    cp "$here/tests/browser/package.json" "$dir/"
    (cd "$dir" && rm -f jssip.min.js && npm install --no-audit --no-fund --loglevel=error &&
        ./node_modules/.bin/esbuild node_modules/jssip/lib-es5/JsSIP.js --bundle --format=iife \
            --global-name=JsSIP --minify --log-level=warning --outfile=jssip.min.js) >&2 ||
        die "npm install or the JsSIP bundle failed in $dir"
}

main() {
    install_packages "${PACKAGES[@]}"
    ensure_browser_deps
    ensure_deb_src
    mkdir -p "$WORKDIR"
    local ver key
    ver=$(newest_wolfssl_version)
    key=$(cd "$WORKDIR" && stamp_key "$ver")
    if [[ -f $STAMP && $(<"$STAMP") == "$key" && -f $WOLF_PREFIX/lib/libwolfssl.a ]]; then
        summary "$ver" "up to date"
        return 0
    fi
    build_wolfssl "$ver" "$key"
    summary "$ver" "built"
}

main "$@"
