/* Slices: a borrowed view of bytes inside a buffer someone else owns. */
#ifndef SLB_CORE_SLICE_T_H
#define SLB_CORE_SLICE_T_H

#include <stddef.h>

/* Borrows from a buffer; never outlives it and never owns it. SIP bytes may hold NUL, so a
 * slice is never treated as a C string. */
struct slb_slice {
    const char *ptr;
    size_t len;
};

#endif
