/* sipslb --version and the sipslb(8) manual page (the hidden --help-man, which the Debian
 * package build runs). The version, commit and build options are baked in at build time
 * (balancer/CMakeLists.txt, cmake/git-commit.cmake); the manual's OPTIONS come from the
 * flag table, its prose sections from here. Main thread, before anything starts. */
#include "balancer/about.h"

#include <stdbool.h>
#include <stddef.h>

#include "balancer/config.h"
#include "core/flags.h"
#include "slb_git_commit.h" /* generated: SLB_GIT_COMMIT, SLB_GIT_DATE */
#include "tls/tls.h"

#ifndef SLB_VERSION
#define SLB_VERSION "unknown"
#endif
#ifndef SLB_BUILD_TYPE
#define SLB_BUILD_TYPE "unknown"
#endif
#ifndef SLB_BUILD_SANITIZE
#define SLB_BUILD_SANITIZE ""
#endif
#ifndef SLB_BUILD_LTO
#define SLB_BUILD_LTO 0
#endif
#ifndef SLB_BUILD_JEMALLOC
#define SLB_BUILD_JEMALLOC 0
#endif

#if defined(__clang__)
#define COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define COMPILER "gcc " __VERSION__
#else
#define COMPILER "unknown compiler"
#endif

void slb_about_version(FILE *out)
{
    const char *san = SLB_BUILD_SANITIZE;
    fprintf(out, "sipslb %s\n", SLB_VERSION);
    fprintf(out, "git commit: %s\n", SLB_GIT_COMMIT);
    fprintf(out, "wolfSSL: %s, %s\n", slb_tls_library_version(),
            slb_tls_library_has_asm() ? "x86-64 assembly (AES-NI, SP)"
                                      : "no assembly (slow: Debian's generic build?)");
    fprintf(out, "build: %s, %s, LTO %s, sanitizers %s, jemalloc %s\n", SLB_BUILD_TYPE, COMPILER,
            SLB_BUILD_LTO ? "on" : "off", san[0] ? san : "none", SLB_BUILD_JEMALLOC ? "on" : "off");
}

/* The manual's prose, in roff. Options in running text are written \-\-name. */
static const char man_head[] =
    ".SH NAME\n"
    "sipslb \\- edge load balancer for SIP over TLS\n"
    ".SH SYNOPSIS\n"
    ".SY sipslb\n"
    ".B \\%\\-\\-cert\n"
    ".I FILE\n"
    ".B \\%\\-\\-key\n"
    ".I FILE\n"
    ".RB [ \\%\\-\\-cert\n"
    ".IR FILE\n"
    ".B \\%\\-\\-key\n"
    ".IR FILE \" .\\|.\\|.]\"\n"
    ".B \\%\\-\\-backend\n"
    ".BI sips: HOST : PORT\n"
    ".RB [ \\%\\-\\-backend\n"
    ".IR .\\|.\\|. ]\n"
    ".RI [ flags ]\n"
    ".YS\n"
    ".SY sipslb\n"
    ".B \\%\\-\\-config\n"
    ".I FILE\n"
    ".RI [ flags ]\n"
    ".YS\n"
    ".SY sipslb\n"
    ".B \\%\\-\\-help\n"
    ".YS\n"
    ".SY sipslb\n"
    ".B \\%\\-\\-version\n"
    ".YS\n"
    ".SH DESCRIPTION\n"
    ".B sipslb\n"
    "is an edge load balancer for SIP over TLS (SIPS).\n"
    "It terminates TLS from phones, trunks and SBCs, scans each SIP message in place\n"
    "for its Call\\-ID and routing headers, consistent\\-hashes each dialog (Maglev) to one\n"
    "backend SIPS server, and relays over persistent TLS connections.\n"
    "One worker thread per core, shared\\-nothing: each with its own io_uring, its own\n"
    "wolfSSL sessions and its own backend connections; all read one immutable routing\n"
    "table, replaced whole when backends or their health change.\n"
    ".PP\n"
    "A control thread probes every backend with SIP OPTIONS over TLS and counts the\n"
    "workers' failed connects, handshakes and resets; backends marked down get no new\n"
    "dialogs.\n"
    "Dialogs stay with their backend through a Record\\-Route that names it; REGISTER\n"
    "requests get a Path with a flow token so that backends can reach the phone's\n"
    "connection (RFC 5626, RFC 3327).\n"
    "Every client is bounded in connections, memory and time, and per\\-source limits and\n"
    "bans protect the others from one that is hostile or merely heavy.\n"
    ".PP\n"
    "A flag takes its value as\n"
    ".BI \\-\\- name \" value\"\n"
    "or\n"
    ".BI \\-\\- name = value\\fR;\n"
    "a boolean flag is given alone, and\n"
    ".BI \\-\\-no\\- name\n"
    "turns it off.\n"
    "Durations are a number with a unit: ms, s, m or h (a plain number is seconds).\n"
    "With\n"
    ".BR \\%\\-\\-config ,\n"
    "flags are read from a file first, one\n"
    ".IR flag \" = \" value\n"
    "per line (bools: true or false; # comments); the command line has the last word.\n"
    "Bad flags, unreadable or mismatched certificates and keys, or no backend: one line\n"
    "naming the problem, and sipslb exits with status 2 before it opens any socket.\n"
    ".SH OPTIONS\n";

static const char man_tail[] =
    ".SH SIGNALS\n"
    ".TP\n"
    ".B SIGHUP\n"
    "Reload without dropping anything: the\n"
    ".BR \\%\\-\\-cert ,\n"
    ".BR \\%\\-\\-key ,\n"
    ".B \\%\\-\\-ca\n"
    "and\n"
    ".B \\%\\-\\-crl\n"
    "files are re\\-read when one changed (new clients get the new ones, established\n"
    "sessions keep theirs), and\n"
    ".B \\%\\-\\-backends\\-file\n"
    "is re\\-read: new backends are dialled and probed, removed ones get no new traffic,\n"
    "weights and drain flags change.\n"
    "A file that does not load is rejected whole and the running configuration stays.\n"
    "Under systemd,\n"
    ".B systemctl reload sipslb\n"
    "sends it.\n"
    ".TP\n"
    ".B SIGUSR1\n"
    "Write the counters, and one line per backend with its state, to\n"
    ".BR \\%\\-\\-stats\\-file\n"
    "(also written at exit).\n"
    ".TP\n"
    ".BR SIGTERM \", \" SIGINT\n"
    "Stop accepting, flush what is queued, and exit with status 0.\n"
    ".SH EXIT STATUS\n"
    "0 after a clean stop (and after\n"
    ".BR \\%\\-\\-help ,\n"
    ".BR \\%\\-\\-version ,\n"
    ".BR \\%\\-\\-print\\-config ),\n"
    "1 on a run\\-time failure, 2 on bad usage.\n"
    ".SH FILES\n"
    ".TP\n"
    ".I /etc/default/sipslb\n"
    "The flags the systemd unit starts sipslb with, as\n"
    ".BR SIPSLB_OPTS=\\(dq...\\(dq .\n"
    ".TP\n"
    ".I /etc/sipslb/\n"
    "Certificates, keys, the\n"
    ".B \\%\\-\\-config\n"
    "file, the backends file and the admin token, by convention (the unit reads it only).\n"
    ".TP\n"
    ".I /lib/systemd/system/sipslb.service\n"
    "The systemd unit: Type=notify, a watchdog, user\n"
    ".BR sipslb ,\n"
    "a sandbox.\n"
    ".TP\n"
    ".I /var/lib/sipslb/\n"
    "The unit's state directory, the place for a\n"
    ".BR \\%\\-\\-stats\\-file .\n"
    ".TP\n"
    ".I /usr/share/doc/sipslb/README.md\n"
    "The full guide: limits and protection, TLS policy, routing, health, drain,\n"
    "metrics and the admin API.\n"
    ".SH SEE ALSO\n"
    ".BR sipslb\\-scan (1),\n"
    ".BR systemctl (1),\n"
    ".BR systemd.service (5)\n";

void slb_about_man(FILE *out)
{
    const char *date = SLB_GIT_DATE;
    /* The date is the commit's (or SOURCE_DATE_EPOCH's): the same source gives the same
     * page. */
    fprintf(out, ".\\\" sipslb(8), generated by sipslb --help-man; do not edit.\n");
    fprintf(out, ".TH SIPSLB 8 \"%s\" \"sipslb %s\" \"System Administration\"\n",
            date[0] ? date : "unknown", SLB_VERSION);
    fputs(man_head, out);
    size_t n;
    const struct slb_flag *table = slb_config_flags(&n);
    slb_flags_man(table, n, out);
    fputs(man_tail, out);
}
