/* Test support: place input right before a PROT_NONE page so any over-read crashes
 * (picohttpparser's trick), and read corpus files. */
#ifndef SLB_TESTS_GUARD_H
#define SLB_TESTS_GUARD_H

#include <stddef.h>

/* Copies data so that its last byte is the last byte before an inaccessible page. The
 * copy stays valid until the next guard_place or guard_release call. */
const char *guard_place(const void *data, size_t len);
void guard_release(void);

/* Reads a whole file (tests/corpus relative paths are resolved against SLB_CORPUS_DIR).
 * Returns a malloc'd buffer the caller frees, and its length in *len. Aborts on error. */
char *corpus_read(const char *rel_path, size_t *len);

#endif
