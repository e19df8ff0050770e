#!/usr/bin/env bash
# test_package.sh BUILD_DIR SOURCE_DIR — the Debian package end to end: deploy/make-deb.sh
# builds it (its own Release build under BUILD_DIR), lintian finds no error in it, apt-get
# installs it, the installed sipslb and sipslb-scan run, their man pages format without
# warnings, the system user, /etc/sipslb and the conffile are in place, the unit is not
# enabled and passes systemd-analyze verify; then it is reinstalled (the upgrade path of
# the maintainer scripts), removed (the conffile stays) and purged (it goes).
#
# Changes the machine (installs a package, creates the system user sipslb), so it needs
# root and apt; exit 77 (skipped) without them, or when a sipslb package is already
# installed (not ours to replace). Whatever it installed is purged on every exit.
set -euo pipefail
build=$(cd "${1:?usage: test_package.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: test_package.sh BUILD_DIR SOURCE_DIR}" && pwd)
export DEBIAN_FRONTEND=noninteractive

say() { printf 'test_package: %s\n' "$*"; }
fail() { say "FAIL: $*"; exit 1; }
skip() { say "SKIP: $*"; exit 77; }
indent() { sed 's/^/    /'; }

[[ $(id -u) -eq 0 ]] || skip "needs root (installs a package)"
for tool in apt-get dpkg dpkg-deb dpkg-query; do
    command -v "$tool" >/dev/null || skip "$tool not found"
done
pkg_state() { dpkg-query -W -f='${db:Status-Status}' sipslb 2>/dev/null || true; }
case $(pkg_state) in
"" | not-installed | config-files) ;;
*) skip "a sipslb package is already installed ($(pkg_state)); not replacing it" ;;
esac

installed=0
cleanup() {
    if ((installed)); then
        apt-get purge -y -q sipslb >/dev/null 2>&1 || dpkg --purge sipslb >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

say "build: deploy/make-deb.sh"
out="$build/deb-out"
pkg=$(SLB_DEB_BUILD_DIR="$build/deb-build" SLB_DEB_OUT="$out" bash "$src/deploy/make-deb.sh" \
      | tail -n 1)
[[ -f "$pkg" ]] || fail "make-deb.sh built no package"
pkg=$(cd "$(dirname "$pkg")" && pwd)/$(basename "$pkg")
version=$(dpkg-deb -f "$pkg" Version)
say "built $(basename "$pkg"): $(dpkg-deb -f "$pkg" Depends)"
contents=$(dpkg-deb -c "$pkg")
for f in ./usr/sbin/sipslb ./usr/bin/sipslb-scan ./usr/share/man/man8/sipslb.8.gz \
         ./usr/share/man/man1/sipslb-scan.1.gz ./usr/share/doc/sipslb/README.md \
         ./usr/share/doc/sipslb/copyright ./usr/share/doc/sipslb/changelog.gz \
         ./etc/default/sipslb ./lib/systemd/system/sipslb.service; do
    grep -q " $f\$" <<<"$contents" || fail "$f missing from the package"
done

if ! command -v lintian >/dev/null; then
    say "installing lintian"
    apt-get install -y -q --no-install-recommends lintian >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends lintian >/dev/null 2>&1; } \
        || say "lintian could not be installed: not checked"
fi
if command -v lintian >/dev/null; then
    say "lintian --pedantic --display-info:"
    set +e
    lint=$(lintian --pedantic --display-info "$pkg" 2>&1 | grep -v 'running with root privileges')
    set -e
    if [[ -n "$lint" ]]; then
        indent <<<"$lint"
    else
        echo "    (nothing)"
    fi
    ! grep -q '^E: ' <<<"$lint" || fail "lintian reports errors"
fi

say "install: apt-get install $pkg"
installed=1
apt-get install -y -q "$pkg" >"$out/apt-install.log" 2>&1 \
    || { cat "$out/apt-install.log"; fail "apt-get install failed"; }
[[ $(dpkg-query -W -f='${Status} ${Version}' sipslb) == "install ok installed $version" ]] \
    || fail "dpkg does not list sipslb $version as installed"

v=$(/usr/sbin/sipslb --version) || fail "sipslb --version failed"
indent <<<"$v"
[[ $(head -n 1 <<<"$v") == "sipslb $version" ]] || fail "sipslb --version: not sipslb $version"
grep -q '^wolfSSL: .*x86-64 assembly' <<<"$v" || fail "the packaged wolfSSL has no assembly"
grep -q '^build: Release,.* LTO on, sanitizers none, jemalloc on$' <<<"$v" \
    || fail "not a Release build with LTO and jemalloc"
set +e
usage=$(/usr/sbin/sipslb 2>&1)
rc=$?
set -e
[[ $rc -eq 2 && $usage == *--cert* ]] || fail "sipslb without flags: exit $rc, '$usage' (want 2 naming --cert)"
/usr/bin/sipslb-scan "$src"/tests/corpus/valid/*.sip >/dev/null || fail "sipslb-scan on the valid corpus"

for page in /usr/share/man/man8/sipslb.8.gz /usr/share/man/man1/sipslb-scan.1.gz; do
    warnings=$(man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page failed"
    [[ -z "$warnings" ]] || fail "man -l $page: $warnings"
done
man -l /usr/share/man/man8/sipslb.8.gz 2>/dev/null | grep -q -- '--tcp-keepalive' \
    || fail "the man page lacks the flags"

getent passwd sipslb >/dev/null || fail "no user sipslb"
uid=$(id -u sipslb)
((uid < 1000)) || fail "sipslb is not a system user (uid $uid)"
[[ $(stat -c '%U:%G %a' /etc/sipslb) == "root:sipslb 750" ]] \
    || fail "/etc/sipslb is $(stat -c '%U:%G %a' /etc/sipslb), want root:sipslb 750"
dpkg-query -W -f='${Conffiles}' sipslb | grep -q '^ /etc/default/sipslb ' \
    || fail "/etc/default/sipslb is not a conffile"
[[ ! -e /etc/systemd/system/multi-user.target.wants/sipslb.service ]] \
    || fail "the unit was enabled on install"
if command -v systemd-analyze >/dev/null; then
    verify=$(systemd-analyze verify /lib/systemd/system/sipslb.service 2>&1) \
        || fail "systemd-analyze verify: $verify"
    say "systemd-analyze verify: ${verify:-clean}"
else
    say "systemd-analyze not found: unit not verified"
fi

say "reinstall (postinst's upgrade path)"
dpkg -i "$pkg" >"$out/dpkg-reinstall.log" 2>&1 || { cat "$out/dpkg-reinstall.log"; fail "reinstall"; }

say "remove: apt-get remove sipslb"
apt-get remove -y -q sipslb >"$out/apt-remove.log" 2>&1 || { cat "$out/apt-remove.log"; fail "remove"; }
[[ ! -e /usr/sbin/sipslb ]] || fail "/usr/sbin/sipslb left after remove"
[[ -f /etc/default/sipslb ]] || fail "remove took the conffile (only purge should)"
apt-get purge -y -q sipslb >"$out/apt-purge.log" 2>&1 || { cat "$out/apt-purge.log"; fail "purge"; }
installed=0
[[ ! -e /etc/default/sipslb ]] || fail "/etc/default/sipslb left after purge"
case $(pkg_state) in
"" | not-installed) ;;
*) fail "sipslb is $(pkg_state) after purge" ;;
esac
say "PASS: $(basename "$pkg") builds, installs, runs, is removed and purged"
