/* Hand-over between workers (see balancer/handoff.h).
 *
 * The notice's words: a = kind << 48 | worker << 16 | slot, b = len. Bits 24-47 of a are
 * zero; a fits io/'s 56 bits and b its 48.
 *
 * Outbox invariants: a slot is either in `free` or has its bit set in `lent`, never both;
 * only the owner's thread changes either. A slot is slot_bytes long: an slb_outbox_hdr,
 * then the message (at most slot_bytes - sizeof(hdr) bytes). */
#include "balancer/handoff.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "core/pool.h"
#include "io/loop-t.h"

#define KIND_SHIFT   48
#define WORKER_SHIFT 16
#define FIELDS_MASK  (((uint64_t)0xff << KIND_SHIFT) | ((uint64_t)0xff << WORKER_SHIFT) | 0xffffu)

_Static_assert(((uint64_t)0xff << KIND_SHIFT | (uint64_t)0xffffff) <= SLB_MSG_A_MAX,
               "a hand-over notice's a fits what io/ carries");
_Static_assert(UINT32_MAX <= SLB_MSG_B_MAX, "a hand-over notice's b fits what io/ carries");
_Static_assert(SLB_OUTBOX_SLOTS <= 64, "lent is one 64-bit mask");

void slb_handoff_encode(const struct slb_handoff *h, uint64_t *a, uint64_t *b)
{
    *a = (uint64_t)h->kind << KIND_SHIFT | (uint64_t)h->worker << WORKER_SHIFT | h->slot;
    *b = h->len;
}

int slb_handoff_decode(uint64_t a, uint64_t b, struct slb_handoff *h)
{
    unsigned kind = (unsigned)(a >> KIND_SHIFT);
    unsigned slot = (unsigned)(a & 0xffffu);
    if ((a & ~FIELDS_MASK) || b > UINT32_MAX || slot >= SLB_OUTBOX_SLOTS ||
        (kind != SLB_HANDOFF_MESSAGE && kind != SLB_HANDOFF_RETURN))
        return -EINVAL;
    h->kind = (uint8_t)kind;
    h->worker = (uint8_t)(a >> WORKER_SHIFT);
    h->slot = (uint16_t)slot;
    h->len = (uint32_t)b;
    return 0;
}

int slb_outbox_init(struct slb_outbox *o, size_t max_message_bytes)
{
    memset(o, 0, sizeof(*o));
    size_t fixed = sizeof(struct slb_outbox_hdr) + SLB_OUTBOX_EDIT_ROOM_BYTES + 63;
    if (max_message_bytes > SIZE_MAX / SLB_OUTBOX_SLOTS - fixed)
        return -EINVAL;
    /* Whole cache lines: a slot the owner fills never shares a line with one another
     * worker is reading, and every header is aligned. */
    size_t slot_bytes =
        (sizeof(struct slb_outbox_hdr) + max_message_bytes + SLB_OUTBOX_EDIT_ROOM_BYTES + 63) &
        ~(size_t)63;
    /* Reserved, not committed: only slots ever used cost memory. */
    void *mem = mmap(NULL, SLB_OUTBOX_SLOTS * slot_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED)
        return -ENOMEM;
    if (slb_pool_init(&o->free, SLB_OUTBOX_SLOTS) < 0) {
        munmap(mem, SLB_OUTBOX_SLOTS * slot_bytes);
        return -ENOMEM;
    }
    o->mem = mem;
    o->slot_bytes = slot_bytes;
    return 0;
}

void slb_outbox_deinit(struct slb_outbox *o)
{
    if (o->mem)
        munmap(o->mem, SLB_OUTBOX_SLOTS * o->slot_bytes);
    slb_pool_deinit(&o->free);
    memset(o, 0, sizeof(*o));
}

static char *slot_at(const struct slb_outbox *o, unsigned slot)
{
    return o->mem + (size_t)slot * o->slot_bytes;
}

int slb_outbox_fill(struct slb_outbox *o, uint64_t dst_conn, const struct iovec *iov, int n,
                    size_t len)
{
    if (n < 0)
        return -EINVAL;
    /* Counted from the iovecs themselves: a wrong len must not overrun the slot. */
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (total != len)
        return -EINVAL;
    if (len > o->slot_bytes - sizeof(struct slb_outbox_hdr))
        return -ENOBUFS;
    int64_t slot = slb_pool_get(&o->free);
    if (slot < 0)
        return -ENOBUFS;
    char *buf = slot_at(o, (unsigned)slot);
    struct slb_outbox_hdr hdr = {.dst_conn = dst_conn};
    memcpy(buf, &hdr, sizeof(hdr));
    size_t at = sizeof(hdr);
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len == 0)
            continue; /* its base may be NULL, which memcpy must never see */
        memcpy(buf + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    o->lent |= (uint64_t)1 << slot;
    return (int)slot;
}

int slb_outbox_release(struct slb_outbox *o, uint16_t slot)
{
    if (slot >= SLB_OUTBOX_SLOTS || !(o->lent & ((uint64_t)1 << slot)))
        return -EINVAL;
    o->lent &= ~((uint64_t)1 << slot);
    slb_pool_put(&o->free, slot);
    return 0;
}

const char *slb_outbox_message(const struct slb_outbox *o, uint16_t slot, uint32_t len,
                               uint64_t *dst_conn)
{
    if (slot >= SLB_OUTBOX_SLOTS || !o->mem ||
        (size_t)len > o->slot_bytes - sizeof(struct slb_outbox_hdr))
        return NULL;
    const char *buf = slot_at(o, slot);
    struct slb_outbox_hdr hdr;
    memcpy(&hdr, buf, sizeof(hdr));
    *dst_conn = hdr.dst_conn;
    return buf + sizeof(hdr);
}

unsigned slb_outbox_free_count(const struct slb_outbox *o)
{
    return slb_pool_free_count(&o->free);
}
