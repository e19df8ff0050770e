/* The re-send store of one backend link: a copy of every request forwarded on it until the
 * first response of its transaction comes back, so that when the link fails (reset, close,
 * TLS error) or its backend is marked down the requests the backend never answered can go
 * to the next backend instead of being lost. A request that had any response is never
 * re-sent: the backend may have acted on it.
 *
 * Bounded by entries and bytes, both fixed at init: the bytes live in fixed-size chunks
 * chained per copy, so a copy that is never answered holds only its own chunks (no ring
 * blocked behind it). Entries are found by key (open addressing) and kept in age order
 * (oldest first) for re-sending in order and for expiry.
 *
 * An entry is WAITING (forwarded, no response yet), ORPHAN (its link failed or its backend
 * went down: to be re-sent) or MOVED (re-sent elsewhere: only its key is kept, so that
 * late responses from the first backend are dropped rather than reaching the client next
 * to the second backend's).
 *
 * Pure: no I/O, no clock (now_ms is passed in); allocates only in slb_resend_init. Owned by
 * one worker, used on its thread. */
#ifndef SLB_BALANCER_RESEND_H
#define SLB_BALANCER_RESEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLB_RESEND_CHUNK 512u        /* bytes per chunk */
#define SLB_RESEND_NONE  0xffffffffu /* no entry / no chunk */

enum slb_resend_state {
    SLB_RESEND_FREE = 0,
    SLB_RESEND_WAITING,
    SLB_RESEND_ORPHAN,
    SLB_RESEND_MOVED,
};

struct slb_resend_entry {
    uint64_t key;
    uint64_t client;     /* the connection id of the client that sent it */
    uint64_t sent_ms;    /* when it was kept */
    uint32_t len;        /* its bytes (0 once moved) */
    uint32_t chunk;      /* its first chunk */
    uint32_t prev, next; /* age order; next also links the free entries */
    uint8_t state;       /* enum slb_resend_state */
    bool resent;         /* already a re-send: a second failure is answered, not re-sent */
};

struct slb_resend {
    struct slb_resend_entry *e;
    uint32_t max_entries, used, free_entry;
    uint32_t oldest, newest; /* age order of the entries in use */
    uint32_t orphans;        /* entries ORPHAN */
    char *chunks;
    uint32_t *chunk_next;
    uint32_t n_chunks, free_chunk, free_chunks;
    uint32_t *index; /* entry + 1 per slot, 0 empty; linear probing */
    uint32_t index_mask;
};

/* The key of a forwarded request's transaction: the client connection and the transaction
 * hash our branch carries (token.h), with CANCEL apart (it shares its INVITE's branch). */
static inline uint64_t slb_resend_key(uint64_t client, uint32_t tx, bool cancel)
{
    return (client * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)tx << 1) ^ (cancel ? 1u : 0u);
}

/* An empty store for up to max_entries copies and max_bytes of them (rounded up to whole
 * chunks). max_entries 0: a store that keeps nothing. Returns 0 or -ENOMEM. */
int slb_resend_init(struct slb_resend *r, uint32_t max_entries, size_t max_bytes);
void slb_resend_deinit(struct slb_resend *r);

/* Keeps a copy of msg[0, len) under key. Returns 0; -EEXIST when key is kept already (a
 * retransmission: the first copy stands); -ENOSPC when every entry is in use; -ENOBUFS
 * when its bytes do not fit. Nothing is kept on an error. */
int slb_resend_keep(struct slb_resend *r, uint64_t key, uint64_t client, const char *msg,
                    uint32_t len, uint64_t now_ms, bool resent);

/* A response for key came: its copy is freed. Returns the state it was in: FREE (nothing
 * kept), WAITING or ORPHAN (relay the response), MOVED (already re-sent: drop it; the key
 * stays for the transaction's later answers until it expires). */
enum slb_resend_state slb_resend_answered(struct slb_resend *r, uint64_t key);

/* Every WAITING copy becomes an ORPHAN (the link failed or its backend went down). MOVED
 * keys stay even when the link is gone: a backend may answer over a new connection (RFC
 * 3261 18.2.2). Returns the number of orphans. */
uint32_t slb_resend_orphan_all(struct slb_resend *r);

/* The oldest ORPHAN after entry `after` in age order (SLB_RESEND_NONE: from the oldest):
 * its index, or SLB_RESEND_NONE. */
uint32_t slb_resend_next_orphan(const struct slb_resend *r, uint32_t after);

/* Copies entry i's bytes into out (at least its len). Returns the length. */
uint32_t slb_resend_copy_out(const struct slb_resend *r, uint32_t i, char *out);

/* Orphan i waits again (its backend came back up before it was re-sent). */
void slb_resend_unorphan(struct slb_resend *r, uint32_t i);

/* Done with orphan i: MOVED (its bytes freed, its key kept to drop late answers) when it
 * was re-sent elsewhere (keep_key), else freed. */
void slb_resend_settle(struct slb_resend *r, uint32_t i, bool keep_key);

/* Forgets entries kept max_age_ms ago or earlier, oldest first (a client's transaction is
 * over by then, and late answers of a moved one no longer matter). Returns how many. */
uint32_t slb_resend_expire(struct slb_resend *r, uint64_t now_ms, uint64_t max_age_ms);

/* Entries in use, and chunks in use (for tests and gauges). */
static inline uint32_t slb_resend_count(const struct slb_resend *r)
{
    return r->used;
}
static inline uint32_t slb_resend_chunks_used(const struct slb_resend *r)
{
    return r->n_chunks - r->free_chunks;
}

#endif
