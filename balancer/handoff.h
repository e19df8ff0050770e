/* The hand-over of finished SIP messages between workers. A message for a connection that
 * another worker owns is copied into a slot of the sender's outbox; the receiver is told
 * (kind MESSAGE) which worker's slot and how many bytes, sends them, and gives the slot
 * back (kind RETURN) to its owner. The two 64-bit words of that notice are what io/ posts
 * between loops (slb_loop_post's a and b); slb_handoff_encode and slb_handoff_decode are
 * the only code that knows their layout.
 *
 * An outbox belongs to one worker: only its thread fills and releases slots. Another
 * worker reads a slot it was told about (slb_outbox_message) until it posts the slot back;
 * the post is what orders the owner's writes before those reads. mem and slot_bytes never
 * change after init, so reading them from another thread is safe. */
#ifndef SLB_BALANCER_HANDOFF_H
#define SLB_BALANCER_HANDOFF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/pool-t.h"

#define SLB_OUTBOX_SLOTS 64u /* hand-over slots per worker (messages in flight to others) */
/* What our edits may add to a message of max_message_bytes before it is handed over (Via,
 * Record-Route, Path): the same margin as the buffer of our own replies. */
#define SLB_OUTBOX_EDIT_ROOM_BYTES 4096u

enum slb_handoff_kind {
    SLB_HANDOFF_MESSAGE = 1, /* a message waits in the sender's slot */
    SLB_HANDOFF_RETURN = 2,  /* the slot is its owner's again */
};

/* One notice between workers, decoded. */
struct slb_handoff {
    uint8_t kind;   /* enum slb_handoff_kind */
    uint8_t worker; /* MESSAGE: the sender, which owns the slot; RETURN: the slot's owner */
    uint16_t slot;  /* < SLB_OUTBOX_SLOTS */
    uint32_t len;   /* MESSAGE: the message's bytes; RETURN: 0 */
};

/* The words to post for h: *a (at most 56 bits, as io/ requires) and *b (32 bits). */
void slb_handoff_encode(const struct slb_handoff *h, uint64_t *a, uint64_t *b);

/* Fills h from posted words (b may be 0 when only a is known, as in on_msg_failed).
 * Returns 0, or -EINVAL for an unknown kind, a slot >= SLB_OUTBOX_SLOTS, bits set outside
 * the fields, or b past 32 bits (then h is untouched). */
int slb_handoff_decode(uint64_t a, uint64_t b, struct slb_handoff *h);

/* What opens every outbox slot; the message follows it. */
struct slb_outbox_hdr {
    uint64_t dst_conn; /* the connection it goes to (an io/ slb_conn_id's v) */
};

/* One worker's outbox: SLB_OUTBOX_SLOTS slots of slot_bytes, each free, or lent to the
 * worker it was handed to until that worker returns it. Owned by its worker. */
struct slb_outbox {
    char *mem;         /* SLB_OUTBOX_SLOTS * slot_bytes, reserved (touched only when used) */
    size_t slot_bytes; /* header + max message + SLB_OUTBOX_EDIT_ROOM_BYTES, to 64 bytes */
    struct slb_pool free;
    uint64_t lent; /* bit i: slot i is out (so a slot returned twice is seen) */
};

/* Reserves an outbox whose slots each hold a message of max_message_bytes plus
 * SLB_OUTBOX_EDIT_ROOM_BYTES. Returns 0, -EINVAL (a size that overflows) or -ENOMEM; on
 * failure o is as after slb_outbox_deinit. */
int slb_outbox_init(struct slb_outbox *o, size_t max_message_bytes);

/* Unmaps the slots. Safe on a zeroed outbox and after a failed init. Every worker that
 * could still read a slot must be done with it. */
void slb_outbox_deinit(struct slb_outbox *o);

/* Copies dst_conn and the message (n iovecs, len bytes in all) into a free slot, which is
 * lent from here on. Returns the slot, or -ENOBUFS (no slot free, or len larger than a slot
 * holds), or -EINVAL (n < 0, or the iovecs do not add up to len); nothing is taken then. */
int slb_outbox_fill(struct slb_outbox *o, uint64_t dst_conn, const struct iovec *iov, int n,
                    size_t len);

/* Gives a lent slot back to the free ones (the receiver returned it, or the notice never
 * went out). Returns 0, or -EINVAL when slot is out of range or not lent (a return seen
 * twice): nothing changes then, so two messages can never share a slot. */
int slb_outbox_release(struct slb_outbox *o, uint16_t slot);

/* On the receiving worker: the len message bytes in slot of another worker's outbox o
 * (valid until the slot is returned), with its destination in *dst_conn. NULL when slot
 * or len do not fit the outbox (a notice not from us). */
const char *slb_outbox_message(const struct slb_outbox *o, uint16_t slot, uint32_t len,
                               uint64_t *dst_conn);

/* Slots free now. */
unsigned slb_outbox_free_count(const struct slb_outbox *o);

#endif
