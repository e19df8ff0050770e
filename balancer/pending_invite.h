/* The pending-INVITE map: which backend each INVITE still in progress went to, so that
 * its CANCEL and the ACK for its non-2xx response follow it even after the routing table
 * changed (RFC 3261 16.11 and 9.1: a CANCEL goes where its INVITE went; RFC 3263 4.4).
 *
 * Keyed by the client transaction (top Via branch + Call-ID) under a secret per-process
 * key. A fixed open-addressing table with bounded probes: no allocation, every call
 * O(SLB_PENDING_INVITE_PROBES). An entry lives SLB_PENDING_INVITE_RING_MS after its INVITE
 * (Timer C), then only SLB_PENDING_INVITE_AFTER_MS once a final response is seen. When a
 * probe window is full of live entries, the one that would expire first makes room: the
 * map forgets, it never refuses.
 *
 * Pure: no I/O, no clock (now_ms is passed in). Owned by one worker, used on its thread. */
#ifndef SLB_BALANCER_PENDING_INVITE_H
#define SLB_BALANCER_PENDING_INVITE_H

#include <stdint.h>

#include "core/siphash.h"
#include "core/slice-t.h"

#define SLB_PENDING_INVITE_SLOTS    8192u   /* entries, a power of two */
#define SLB_PENDING_INVITE_PROBES   8u      /* entries looked at per key */
#define SLB_PENDING_INVITE_RING_MS  180000u /* RFC 3261 Timer C: an INVITE may ring this long */
#define SLB_PENDING_INVITE_AFTER_MS 32000u  /* after its final response: Timer B/H */

/* One INVITE transaction. key 0 (a zeroed entry) is empty. */
struct slb_pending_invite {
    uint64_t key;
    uint64_t expires_ms; /* live while now_ms < expires_ms */
    uint16_t backend;
};

/* Owned by one worker (embedded in it, ~200 KB). */
struct slb_pending_invites {
    struct slb_siphash_key key; /* secret: clients choose branch and Call-ID */
    struct slb_pending_invite e[SLB_PENDING_INVITE_SLOTS];
};

/* Empties m and sets its hashing key (copied). The key should be random per process: a
 * known one would let a client aim its transactions at one probe window and evict
 * others' entries. */
void slb_pending_invites_init(struct slb_pending_invites *m, const struct slb_siphash_key *key);

/* The map key of the client transaction with top Via branch `branch` and Call-ID `call_id`
 * (borrowed for the call). Never 0. */
uint64_t slb_pending_invite_key(const struct slb_pending_invites *m, struct slb_slice branch,
                                struct slb_slice call_id);

/* The backend the INVITE with this key went to, or -ENOENT when it is unknown or expired at
 * now_ms. */
int slb_pending_invite_find(const struct slb_pending_invites *m, uint64_t key, uint64_t now_ms);

/* Remembers that the INVITE with this key (from slb_pending_invite_key) went to backend,
 * for SLB_PENDING_INVITE_RING_MS from now_ms. Replaces an entry of the same key (a
 * retransmission re-routed) or a stale one; in a window full of live entries, evicts the
 * one expiring first. Always succeeds. */
void slb_pending_invite_put(struct slb_pending_invites *m, uint64_t key, uint16_t backend,
                            uint64_t now_ms);

/* A final response to the INVITE with this key was seen: its entry, if live, is kept only
 * SLB_PENDING_INVITE_AFTER_MS from now_ms (for the ACK of a non-2xx and retransmissions).
 * Does nothing for an unknown key. */
void slb_pending_invite_answered(struct slb_pending_invites *m, uint64_t key, uint64_t now_ms);

#endif
