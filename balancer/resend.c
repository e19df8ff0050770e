/* The re-send store (resend.h): entries from a free list, bytes in chained chunks, an
 * open-addressing index by key with backward-shift deletion (no tombstones to sweep). */
#include "balancer/resend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int slb_resend_init(struct slb_resend *r, uint32_t max_entries, size_t max_bytes)
{
    memset(r, 0, sizeof(*r));
    r->oldest = r->newest = r->free_entry = r->free_chunk = SLB_RESEND_NONE;
    if (max_entries == 0 || max_bytes == 0)
        return 0;
    uint64_t chunks = (max_bytes + SLB_RESEND_CHUNK - 1) / SLB_RESEND_CHUNK;
    if (chunks >= SLB_RESEND_NONE || max_entries >= SLB_RESEND_NONE / 4)
        return -ENOMEM;
    uint32_t slots = 2;
    while (slots < 2 * max_entries)
        slots <<= 1;
    r->e = calloc(max_entries, sizeof(*r->e));
    r->chunks = malloc(chunks * SLB_RESEND_CHUNK);
    r->chunk_next = malloc(chunks * sizeof(*r->chunk_next));
    r->index = calloc(slots, sizeof(*r->index));
    if (!r->e || !r->chunks || !r->chunk_next || !r->index) {
        slb_resend_deinit(r);
        return -ENOMEM;
    }
    r->max_entries = max_entries;
    r->n_chunks = r->free_chunks = (uint32_t)chunks;
    r->index_mask = slots - 1;
    for (uint32_t i = 0; i < max_entries; i++)
        r->e[i].next = i + 1 < max_entries ? i + 1 : SLB_RESEND_NONE;
    r->free_entry = 0;
    for (uint32_t i = 0; i < r->n_chunks; i++)
        r->chunk_next[i] = i + 1 < r->n_chunks ? i + 1 : SLB_RESEND_NONE;
    r->free_chunk = 0;
    return 0;
}

void slb_resend_deinit(struct slb_resend *r)
{
    free(r->e);
    free(r->chunks);
    free(r->chunk_next);
    free(r->index);
    memset(r, 0, sizeof(*r));
    r->oldest = r->newest = r->free_entry = r->free_chunk = SLB_RESEND_NONE;
}

static uint32_t home(const struct slb_resend *r, uint64_t key)
{
    return (uint32_t)((key * 0xff51afd7ed558ccdull) >> 32) & r->index_mask;
}

/* The index slot holding key, or SLB_RESEND_NONE. */
static uint32_t find_slot(const struct slb_resend *r, uint64_t key)
{
    if (!r->index)
        return SLB_RESEND_NONE;
    for (uint32_t s = home(r, key);; s = (s + 1) & r->index_mask) {
        uint32_t v = r->index[s];
        if (v == 0)
            return SLB_RESEND_NONE;
        if (r->e[v - 1].key == key)
            return s;
    }
}

static void index_put(struct slb_resend *r, uint64_t key, uint32_t entry)
{
    uint32_t s = home(r, key);
    while (r->index[s])
        s = (s + 1) & r->index_mask;
    r->index[s] = entry + 1;
}

/* Backward-shift deletion: later members of the probe run move up into the hole when
 * their home slot allows it, so lookups never need tombstones. */
static void index_del(struct slb_resend *r, uint32_t s)
{
    uint32_t hole = s;
    for (uint32_t j = (s + 1) & r->index_mask; r->index[j]; j = (j + 1) & r->index_mask) {
        uint32_t h = home(r, r->e[r->index[j] - 1].key);
        /* j's entry may fill the hole when its home is not in (hole, j] cyclically. */
        bool movable = hole <= j ? (h <= hole || h > j) : (h <= hole && h > j);
        if (movable) {
            r->index[hole] = r->index[j];
            hole = j;
        }
    }
    r->index[hole] = 0;
}

static void free_chunks(struct slb_resend *r, struct slb_resend_entry *x)
{
    uint32_t c = x->chunk;
    while (c != SLB_RESEND_NONE) {
        uint32_t next = r->chunk_next[c];
        r->chunk_next[c] = r->free_chunk;
        r->free_chunk = c;
        r->free_chunks++;
        c = next;
    }
    x->chunk = SLB_RESEND_NONE;
    x->len = 0;
}

/* Unlinks entry i from the age order and the index, frees its bytes and the entry. */
static void release(struct slb_resend *r, uint32_t i, uint32_t slot)
{
    struct slb_resend_entry *x = &r->e[i];
    if (slot == SLB_RESEND_NONE)
        slot = find_slot(r, x->key);
    if (slot != SLB_RESEND_NONE)
        index_del(r, slot);
    free_chunks(r, x);
    if (x->state == SLB_RESEND_ORPHAN)
        r->orphans--;
    if (x->prev != SLB_RESEND_NONE)
        r->e[x->prev].next = x->next;
    else
        r->oldest = x->next;
    if (x->next != SLB_RESEND_NONE)
        r->e[x->next].prev = x->prev;
    else
        r->newest = x->prev;
    x->state = SLB_RESEND_FREE;
    x->next = r->free_entry;
    r->free_entry = i;
    r->used--;
}

int slb_resend_keep(struct slb_resend *r, uint64_t key, uint64_t client, const char *msg,
                    uint32_t len, uint64_t now_ms, bool resent)
{
    if (r->free_entry == SLB_RESEND_NONE)
        return -ENOSPC;
    if (find_slot(r, key) != SLB_RESEND_NONE)
        return -EEXIST;
    uint32_t need = (len + SLB_RESEND_CHUNK - 1) / SLB_RESEND_CHUNK;
    if (need > r->free_chunks || len == 0)
        return -ENOBUFS;
    uint32_t i = r->free_entry;
    struct slb_resend_entry *x = &r->e[i];
    r->free_entry = x->next;
    *x = (struct slb_resend_entry){.key = key,
                                   .client = client,
                                   .sent_ms = now_ms,
                                   .len = len,
                                   .chunk = r->free_chunk,
                                   .prev = r->newest,
                                   .next = SLB_RESEND_NONE,
                                   .state = SLB_RESEND_WAITING,
                                   .resent = resent};
    /* Take need chunks off the free list, filling each. */
    uint32_t c = r->free_chunk, last = c;
    for (uint32_t k = 0, off = 0; k < need; k++, off += SLB_RESEND_CHUNK) {
        uint32_t n = len - off < SLB_RESEND_CHUNK ? len - off : SLB_RESEND_CHUNK;
        memcpy(r->chunks + (size_t)c * SLB_RESEND_CHUNK, msg + off, n);
        last = c;
        c = r->chunk_next[c];
    }
    r->free_chunk = c;
    r->chunk_next[last] = SLB_RESEND_NONE;
    r->free_chunks -= need;
    if (r->newest != SLB_RESEND_NONE)
        r->e[r->newest].next = i;
    else
        r->oldest = i;
    r->newest = i;
    r->used++;
    index_put(r, key, i);
    return 0;
}

enum slb_resend_state slb_resend_answered(struct slb_resend *r, uint64_t key)
{
    if (!r->used)
        return SLB_RESEND_FREE;
    uint32_t s = find_slot(r, key);
    if (s == SLB_RESEND_NONE)
        return SLB_RESEND_FREE;
    uint32_t i = r->index[s] - 1;
    enum slb_resend_state st = (enum slb_resend_state)r->e[i].state;
    /* A moved key stays: every late answer of that transaction (100, 180, 200...) must be
     * dropped, not only the first. It goes when it expires. */
    if (st != SLB_RESEND_MOVED)
        release(r, i, s);
    return st;
}

uint32_t slb_resend_orphan_all(struct slb_resend *r)
{
    for (uint32_t i = r->oldest; i != SLB_RESEND_NONE; i = r->e[i].next) {
        if (r->e[i].state == SLB_RESEND_WAITING) {
            r->e[i].state = SLB_RESEND_ORPHAN;
            r->orphans++;
        }
    }
    return r->orphans;
}

uint32_t slb_resend_next_orphan(const struct slb_resend *r, uint32_t after)
{
    if (!r->orphans)
        return SLB_RESEND_NONE;
    uint32_t i = after == SLB_RESEND_NONE ? r->oldest : r->e[after].next;
    for (; i != SLB_RESEND_NONE; i = r->e[i].next)
        if (r->e[i].state == SLB_RESEND_ORPHAN)
            return i;
    return SLB_RESEND_NONE;
}

uint32_t slb_resend_copy_out(const struct slb_resend *r, uint32_t i, char *out)
{
    const struct slb_resend_entry *x = &r->e[i];
    uint32_t off = 0;
    for (uint32_t c = x->chunk; c != SLB_RESEND_NONE && off < x->len; c = r->chunk_next[c]) {
        uint32_t n = x->len - off < SLB_RESEND_CHUNK ? x->len - off : SLB_RESEND_CHUNK;
        memcpy(out + off, r->chunks + (size_t)c * SLB_RESEND_CHUNK, n);
        off += n;
    }
    return off;
}

void slb_resend_unorphan(struct slb_resend *r, uint32_t i)
{
    if (r->e[i].state == SLB_RESEND_ORPHAN) {
        r->e[i].state = SLB_RESEND_WAITING;
        r->orphans--;
    }
}

void slb_resend_settle(struct slb_resend *r, uint32_t i, bool keep_key)
{
    struct slb_resend_entry *x = &r->e[i];
    if (!keep_key) {
        release(r, i, SLB_RESEND_NONE);
        return;
    }
    if (x->state == SLB_RESEND_ORPHAN)
        r->orphans--;
    free_chunks(r, x);
    x->state = SLB_RESEND_MOVED;
}

uint32_t slb_resend_expire(struct slb_resend *r, uint64_t now_ms, uint64_t max_age_ms)
{
    uint32_t n = 0;
    while (r->oldest != SLB_RESEND_NONE && r->e[r->oldest].sent_ms + max_age_ms <= now_ms) {
        release(r, r->oldest, SLB_RESEND_NONE);
        n++;
    }
    return n;
}
