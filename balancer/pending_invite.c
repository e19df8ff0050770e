/* The pending-INVITE map (see balancer/pending_invite.h).
 *
 * Invariants: a key's entry, if any, sits in one of the SLB_PENDING_INVITE_PROBES slots
 * from (key & mask) on; an entry is live while now_ms < expires_ms, and a stale one is
 * free to overwrite. Keys are never 0, so a zeroed slot matches nothing.
 * The owning worker's thread only. */
#include "balancer/pending_invite.h"

#include <errno.h>
#include <string.h>

#define MASK (SLB_PENDING_INVITE_SLOTS - 1u)

_Static_assert((SLB_PENDING_INVITE_SLOTS & MASK) == 0, "slots must be a power of two");
_Static_assert(SLB_PENDING_INVITE_PROBES >= 1 &&
                   SLB_PENDING_INVITE_PROBES <= SLB_PENDING_INVITE_SLOTS,
               "a probe window within the table");

void slb_pending_invites_init(struct slb_pending_invites *m, const struct slb_siphash_key *key)
{
    memset(m->e, 0, sizeof(m->e));
    m->key = *key;
}

uint64_t slb_pending_invite_key(const struct slb_pending_invites *m, struct slb_slice branch,
                                struct slb_slice call_id)
{
    /* The multiplier keeps the two fields apart: swapping them gives another key. */
    uint64_t k = slb_siphash(&m->key, branch.ptr, branch.len) ^
                 slb_siphash(&m->key, call_id.ptr, call_id.len) * 31;
    return k ? k : 1;
}

/* The slot of key's live entry, or -1. */
static int live_slot(const struct slb_pending_invites *m, uint64_t key, uint64_t now_ms)
{
    for (unsigned i = 0; i < SLB_PENDING_INVITE_PROBES; i++) {
        unsigned at = (unsigned)((key + i) & MASK);
        if (m->e[at].key == key && m->e[at].expires_ms > now_ms)
            return (int)at;
    }
    return -1;
}

int slb_pending_invite_find(const struct slb_pending_invites *m, uint64_t key, uint64_t now_ms)
{
    int at = live_slot(m, key, now_ms);
    return at < 0 ? -ENOENT : (int)m->e[at].backend;
}

void slb_pending_invite_put(struct slb_pending_invites *m, uint64_t key, uint16_t backend,
                            uint64_t now_ms)
{
    struct slb_pending_invite *victim = NULL;
    for (unsigned i = 0; i < SLB_PENDING_INVITE_PROBES; i++) {
        struct slb_pending_invite *e = &m->e[(key + i) & MASK];
        if (e->key == key || e->expires_ms <= now_ms) {
            victim = e;
            break;
        }
        if (!victim || e->expires_ms < victim->expires_ms)
            victim = e; /* full: the one that would expire first makes room */
    }
    *victim = (struct slb_pending_invite){key, now_ms + SLB_PENDING_INVITE_RING_MS, backend};
}

void slb_pending_invite_answered(struct slb_pending_invites *m, uint64_t key, uint64_t now_ms)
{
    /* Only the ACK for a non-2xx and retransmissions still need it. */
    int at = live_slot(m, key, now_ms);
    if (at >= 0)
        m->e[at].expires_ms = now_ms + SLB_PENDING_INVITE_AFTER_MS;
}
