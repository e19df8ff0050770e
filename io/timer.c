/*
 * Hierarchical hashed timer wheel (Varghese & Lauck), millisecond ticks.
 *
 * Four levels of 256 slots. A timer sits at the lowest level L whose expiry agrees with
 * cur_ms on every bit above L's 8 bits, in the slot named by its own 8 bits at L. When
 * the wheel reaches a multiple of 2^(8L) ms the matching level-L slot moves down a level
 * ("cascade"), so level 0 slots are single milliseconds and timers fire on their own
 * millisecond, earliest first. A bitmap per level lets run and next_ms skip empty slots:
 * an idle wheel costs nothing and a long sleep costs one step per slot that has work.
 *
 * Invariants: every armed timer's expiry (level 0) or cascade tick (levels 1-3) is
 * >= cur_ms; a bitmap bit is set iff its slot list is non-empty; count is the number of
 * armed timers. Timers of the same millisecond fire in no promised order.
 *
 * Thread: the owning loop's thread only; no locks, no allocation.
 */
#include "io/timer.h"

#include <string.h>

#define SLOT_MASK      ((uint64_t)SLB_TIMER_SLOTS - 1)
#define OVERFLOW_LEVEL SLB_TIMER_LEVELS
#define BITMAP_WORDS   (SLB_TIMER_SLOTS / 64)

static void link_init(struct slb_timer_link *head)
{
    head->next = head;
    head->prev = head;
}

static bool list_empty(const struct slb_timer_link *head)
{
    return head->next == head;
}

static void list_append(struct slb_timer_link *head, struct slb_timer_link *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static void list_unlink(struct slb_timer_link *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = NULL;
    node->prev = NULL;
}

/* Moves every node of `from` onto the empty list `to`, keeping their order. */
static void list_move_all(struct slb_timer_link *from, struct slb_timer_link *to)
{
    link_init(to);
    if (list_empty(from))
        return;
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    link_init(from);
}

static struct slb_timer_link *slot_head(struct slb_timer_wheel *w, unsigned level, unsigned slot)
{
    return level == OVERFLOW_LEVEL ? &w->overflow : &w->slots[level][slot];
}

static void bit_set(struct slb_timer_wheel *w, unsigned level, unsigned slot)
{
    w->bitmap[level][slot / 64] |= (uint64_t)1 << (slot % 64);
}

static void bit_clear(struct slb_timer_wheel *w, unsigned level, unsigned slot)
{
    w->bitmap[level][slot / 64] &= ~((uint64_t)1 << (slot % 64));
}

/* First set bit at index >= from, or -1. */
static int find_bit(const uint64_t *bm, unsigned from)
{
    for (unsigned i = from / 64; i < BITMAP_WORDS; i++) {
        uint64_t word = bm[i];
        if (i == from / 64)
            word &= ~(uint64_t)0 << (from % 64);
        if (word)
            return (int)(i * 64 + (unsigned)__builtin_ctzll(word));
    }
    return -1;
}

static void insert(struct slb_timer_wheel *w, struct slb_timer *t)
{
    if (t->expires_ms < w->cur_ms)
        t->expires_ms = w->cur_ms; /* already due: the next run picks it up */
    uint64_t diff = t->expires_ms ^ w->cur_ms;
    unsigned level = 0;
    while (level < SLB_TIMER_LEVELS && (diff >> (SLB_TIMER_SLOT_BITS * (level + 1))) != 0)
        level++;
    t->level = (uint8_t)level;
    if (level == OVERFLOW_LEVEL) {
        t->slot = 0;
        list_append(&w->overflow, &t->link);
        return;
    }
    unsigned slot = (unsigned)((t->expires_ms >> (SLB_TIMER_SLOT_BITS * level)) & SLOT_MASK);
    t->slot = (uint8_t)slot;
    list_append(&w->slots[level][slot], &t->link);
    bit_set(w, level, slot);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Smallest tick >= from that has work: a level-0 expiry or a cascade of a non-empty slot. */
static uint64_t next_tick(const struct slb_timer_wheel *w, uint64_t from)
{
    if (w->count == 0)
        return SLB_TIMER_NEVER;
    uint64_t best = SLB_TIMER_NEVER;
    int bit = find_bit(w->bitmap[0], (unsigned)(from & SLOT_MASK));
    if (bit >= 0)
        best = (from & ~SLOT_MASK) | (uint64_t)bit;
    for (unsigned level = 1; level < SLB_TIMER_LEVELS; level++) {
        unsigned shift = SLB_TIMER_SLOT_BITS * level;
        uint64_t unit = (uint64_t)1 << shift;
        uint64_t start = (from + unit - 1) & ~(unit - 1);
        /* Pending level-L timers cascade inside from's block, at or after `start`. */
        if (start < from || (start >> (shift + 8)) != (from >> (shift + 8)))
            continue;
        bit = find_bit(w->bitmap[level], (unsigned)((start >> shift) & SLOT_MASK));
        if (bit >= 0) {
            uint64_t block = (start >> (shift + 8)) << (shift + 8);
            best = min_u64(best, block | ((uint64_t)bit << shift));
        }
    }
    if (!list_empty(&w->overflow)) {
        uint64_t unit = (uint64_t)1 << 32;
        best = min_u64(best, (from + unit - 1) & ~(unit - 1));
    }
    return best;
}

/* Moves the timers of every level whose boundary is tick t one level down or more. */
static void cascade(struct slb_timer_wheel *w, uint64_t t)
{
    struct slb_timer_link moving;
    if ((t & 0xffffffffu) == 0 && !list_empty(&w->overflow)) {
        list_move_all(&w->overflow, &moving);
        while (!list_empty(&moving)) {
            struct slb_timer_link *node = moving.next;
            list_unlink(node);
            insert(w, slb_timer_entry(node, struct slb_timer, link));
        }
    }
    /* Highest level first: what it drops lands in lower slots processed after it. */
    for (unsigned level = SLB_TIMER_LEVELS - 1; level >= 1; level--) {
        unsigned shift = SLB_TIMER_SLOT_BITS * level;
        if ((t & (((uint64_t)1 << shift) - 1)) != 0)
            continue;
        unsigned slot = (unsigned)((t >> shift) & SLOT_MASK);
        list_move_all(&w->slots[level][slot], &moving);
        bit_clear(w, level, slot);
        while (!list_empty(&moving)) {
            struct slb_timer_link *node = moving.next;
            list_unlink(node);
            insert(w, slb_timer_entry(node, struct slb_timer, link));
        }
    }
}

void slb_timer_wheel_init(struct slb_timer_wheel *wheel, uint64_t now_ms)
{
    memset(wheel, 0, sizeof(*wheel));
    for (unsigned level = 0; level < SLB_TIMER_LEVELS; level++)
        for (unsigned slot = 0; slot < SLB_TIMER_SLOTS; slot++)
            link_init(&wheel->slots[level][slot]);
    link_init(&wheel->overflow);
    wheel->now_ms = now_ms;
    wheel->cur_ms = now_ms;
}

unsigned slb_timer_wheel_run(struct slb_timer_wheel *w, uint64_t now_ms)
{
    if (now_ms > w->now_ms)
        w->now_ms = now_ms;
    uint64_t now = w->now_ms;
    unsigned fired = 0;
    /* Each pass moves cur_ms strictly forward, so this ends within now - cur_ms passes. */
    while (w->cur_ms <= now) {
        uint64_t t = next_tick(w, w->cur_ms);
        if (t > now) {
            w->cur_ms = now + 1;
            break;
        }
        w->cur_ms = t;
        if ((t & SLOT_MASK) == 0)
            cascade(w, t);
        unsigned slot = (unsigned)(t & SLOT_MASK);
        struct slb_timer_link due;
        list_move_all(&w->slots[0][slot], &due);
        bit_clear(w, 0, slot);
        /* Past this tick first, so a callback re-arming with delay 0 lands on the next one
         * instead of the list being drained. */
        w->cur_ms = t + 1;
        while (!list_empty(&due)) {
            struct slb_timer *timer = slb_timer_entry(due.next, struct slb_timer, link);
            list_unlink(&timer->link);
            timer->wheel = NULL;
            w->count--;
            fired++;
            timer->fn(timer);
        }
    }
    return fired;
}

uint64_t slb_timer_wheel_next_ms(const struct slb_timer_wheel *wheel)
{
    return next_tick(wheel, wheel->cur_ms);
}

void slb_timer_init(struct slb_timer *timer, slb_timer_fn fn)
{
    memset(timer, 0, sizeof(*timer));
    timer->fn = fn;
}

void slb_timer_arm_at(struct slb_timer_wheel *wheel, struct slb_timer *timer, uint64_t at_ms)
{
    slb_timer_cancel(timer);
    timer->expires_ms = at_ms;
    timer->wheel = wheel;
    wheel->count++;
    insert(wheel, timer);
}

void slb_timer_arm(struct slb_timer_wheel *wheel, struct slb_timer *timer, uint64_t delay_ms)
{
    uint64_t at = wheel->now_ms + delay_ms;
    if (at < wheel->now_ms)
        at = SLB_TIMER_NEVER - 1; /* saturate rather than wrap into the past */
    slb_timer_arm_at(wheel, timer, at);
}

void slb_timer_cancel(struct slb_timer *timer)
{
    if (!slb_timer_armed(timer))
        return;
    struct slb_timer_wheel *w = timer->wheel;
    list_unlink(&timer->link);
    timer->wheel = NULL;
    w->count--;
    /* A timer being fired sits on a private list; its home slot may already be empty. */
    if (timer->level < SLB_TIMER_LEVELS && list_empty(slot_head(w, timer->level, timer->slot)))
        bit_clear(w, timer->level, timer->slot);
}
