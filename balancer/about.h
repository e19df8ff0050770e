/* What this sipslb binary is (--version) and its manual page (--help-man), both built
 * from what the binary itself holds: the version and build options baked in by CMake, the
 * linked wolfSSL, and the flag table that --help prints. Main thread, before anything
 * starts. */
#ifndef SLB_BALANCER_ABOUT_H
#define SLB_BALANCER_ABOUT_H

#include <stdio.h>

/* Prints the version, the git commit it was built from ("unknown" outside a checkout,
 * "-dirty" when tracked files differed), the wolfSSL version and whether it has the x86-64
 * assembly, and the build options (build type, compiler, LTO, sanitizers, jemalloc). */
void slb_about_version(FILE *out);

/* Prints the sipslb(8) manual page in roff (man macros). Its OPTIONS section comes from
 * the flag table (slb_flags_man), so it cannot drift from --help. */
void slb_about_man(FILE *out);

#endif
