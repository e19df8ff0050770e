/* Editing a scanned SIP message as slices: the output is an iovec list over the original
 * bytes plus small inserted pieces, with no copy of the rest. Pure: no I/O, no malloc. */
#ifndef SLB_CORE_SIP_EDIT_H
#define SLB_CORE_SIP_EDIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/sip-t.h"
#include "core/sip_edit-t.h"

/* Starts an edit of the message msg[0, len). */
void slb_sip_edit_init(struct slb_sip_edit *e, const char *msg, size_t len);

/* Replaces del bytes at off with a copy of ins[0, ins_len) (either may be 0). Splices may
 * be added in any order but must not overlap another splice's deleted range; inserts at
 * one offset come out in the order they were added. Returns 0, -EINVAL for a bad range or
 * overlap, -ENOSPC when the op table or scratch is full (nothing changed either way). */
int slb_sip_edit_splice(struct slb_sip_edit *e, size_t off, size_t del, const void *ins,
                        size_t ins_len);

/* The edited message as iovecs (at most SLB_SIP_EDIT_MAX_IOV). Returns the count, or
 * -ENOSPC when max is too small. */
int slb_sip_edit_iov(const struct slb_sip_edit *e, struct iovec *iov, int max);

/* Length of the edited message. */
size_t slb_sip_edit_len(const struct slb_sip_edit *e);

/* Copies the edited message into out (for tests and tools). Returns its length, or
 * -ENOSPC when cap is too small. */
int slb_sip_edit_flatten(const struct slb_sip_edit *e, char *out, size_t cap);

/* The proxy's edits, each on a message scanned by slb_sip_scan into msg (whose slices
 * point into e's original). Each returns 0 or a negative errno from slb_sip_edit_splice. */

/* Inserts "Via: <value>\r\n" above every other header (RFC 3261 16.6 step 8). */
int slb_sip_edit_push_via(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                          const char *value, size_t value_len);

/* Removes the top Via value: its whole line when it is alone there, else the value and its
 * comma (RFC 3261 16.7 step 3). -ENOENT when there is no Via. */
int slb_sip_edit_pop_via(struct slb_sip_edit *e, const struct slb_sip_msg *msg);

/* Removes the first element of the list in header line `header` (index into msg's
 * headers): the whole line when it holds one element, else the element and its comma
 * (loose routing, RFC 3261 16.4 and 16.12). */
int slb_sip_edit_pop_list_value(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                                uint32_t header);

/* Removes the first count elements of the lists in the header lines with id (in order,
 * across lines): several values of ours at the top of Route (double Record-Route). On an
 * error part of it may be done: the caller drops the edit. */
int slb_sip_edit_pop_list_values(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                                 enum slb_sip_hdr_id id, unsigned count);

/* Strict routing toward us (RFC 3261 16.4): the Request-URI becomes the URI of the last
 * Route element, which is removed. -ENOENT when there is no Route. */
int slb_sip_edit_strict_route(struct slb_sip_edit *e, const struct slb_sip_msg *msg);

/* Decrements Max-Forwards, or inserts "Max-Forwards: 70" when absent (RFC 3261 16.6
 * step 3). -ELOOP when it is already 0: the caller answers 483 (16.3 step 2). */
int slb_sip_edit_max_forwards(struct slb_sip_edit *e, const struct slb_sip_msg *msg);

/* Records the client's source address in its top Via: received=IP (RFC 3261 18.2.1) and
 * rport=PORT (RFC 3581 4), replacing values already there. rport is added even when the
 * client did not ask, as an edge proxy in front of NATed clients must. */
int slb_sip_edit_via_received(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                              const char *ip, size_t ip_len, uint16_t port);

/* Inserts a header line "<name>: <value>\r\n" above the first header with id before_id
 * (so ours is the topmost Record-Route or Path value, RFC 3261 16.6 step 4, RFC 3327 4.3),
 * or right after our position at the top of the headers when there is none. */
int slb_sip_edit_insert_header(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                               enum slb_sip_hdr_id before_id, const char *name,
                               const char *value, size_t value_len);

#endif
