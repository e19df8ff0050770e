/* The hand-over between workers: the notice's encoding both ways at its edges, what decode
 * refuses, and the outbox: fill and read back, exhaustion, release, size bounds and
 * returns that are not owed. */
#include "balancer/handoff.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/loop-t.h"

static void round_trip(struct slb_handoff h)
{
    uint64_t a, b;
    slb_handoff_encode(&h, &a, &b);
    cr_assert_leq(a, SLB_MSG_A_MAX, "a fits what io/ carries");
    cr_assert_leq(b, SLB_MSG_B_MAX);
    struct slb_handoff got;
    memset(&got, 0xee, sizeof(got));
    cr_assert_eq(slb_handoff_decode(a, b, &got), 0);
    cr_assert_eq(got.kind, h.kind);
    cr_assert_eq(got.worker, h.worker);
    cr_assert_eq(got.slot, h.slot);
    cr_assert_eq(got.len, h.len);
}

Test(handoff, both_kinds_round_trip_at_their_edges)
{
    round_trip((struct slb_handoff){SLB_HANDOFF_MESSAGE, 0, 0, 0});
    round_trip((struct slb_handoff){SLB_HANDOFF_MESSAGE, 3, 17, 1234});
    round_trip((struct slb_handoff){SLB_HANDOFF_MESSAGE, 255, SLB_OUTBOX_SLOTS - 1, UINT32_MAX});
    round_trip((struct slb_handoff){SLB_HANDOFF_RETURN, 0, 0, 0});
    round_trip((struct slb_handoff){SLB_HANDOFF_RETURN, 255, SLB_OUTBOX_SLOTS - 1, 0});
}

Test(handoff, the_fields_do_not_overlap)
{
    uint64_t a1, b1, a2, b2;
    slb_handoff_encode(&(struct slb_handoff){SLB_HANDOFF_MESSAGE, 255, 0, 0}, &a1, &b1);
    slb_handoff_encode(&(struct slb_handoff){SLB_HANDOFF_MESSAGE, 0, SLB_OUTBOX_SLOTS - 1, 0}, &a2,
                       &b2);
    cr_assert_eq(a1 & a2, (uint64_t)SLB_HANDOFF_MESSAGE << 48, "only the kind is shared");
}

Test(handoff, decode_refuses_what_no_worker_sends)
{
    struct slb_handoff h = {SLB_HANDOFF_RETURN, 9, 9, 0};
    uint64_t a, b;
    slb_handoff_encode(&(struct slb_handoff){SLB_HANDOFF_MESSAGE, 1, 2, 3}, &a, &b);
    const uint64_t slot_mask = 0xffff;
    cr_assert_eq(slb_handoff_decode((a & ~((uint64_t)0xff << 48)), b, &h), -EINVAL, "kind 0");
    cr_assert_eq(slb_handoff_decode((a & ~((uint64_t)0xff << 48)) | (uint64_t)3 << 48, b, &h),
                 -EINVAL, "kind 3");
    cr_assert_eq(slb_handoff_decode((a & ~slot_mask) | SLB_OUTBOX_SLOTS, b, &h), -EINVAL,
                 "slot 64");
    cr_assert_eq(slb_handoff_decode((a & ~slot_mask) | 0xffff, b, &h), -EINVAL, "slot 65535");
    cr_assert_eq(slb_handoff_decode(a | (uint64_t)1 << 30, b, &h), -EINVAL, "a stray bit");
    cr_assert_eq(slb_handoff_decode(a | (uint64_t)1 << 60, b, &h), -EINVAL, "past 56 bits");
    cr_assert_eq(slb_handoff_decode(a, (uint64_t)UINT32_MAX + 1, &h), -EINVAL, "len past 32");
    cr_assert_eq(h.kind, SLB_HANDOFF_RETURN, "h untouched on refusal");
    cr_assert_eq(h.worker, 9);
    cr_assert_eq(slb_handoff_decode(a, 0, &h), 0, "a alone (b unknown) decodes");
    cr_assert_eq(h.slot, 2);
}

static struct slb_outbox ob;

static void setup(void)
{
    cr_assert_eq(slb_outbox_init(&ob, 1000), 0);
}

static void teardown(void)
{
    slb_outbox_deinit(&ob);
}

TestSuite(outbox, .init = setup, .fini = teardown);

Test(outbox, a_slot_holds_header_message_and_edit_room)
{
    cr_assert_geq(ob.slot_bytes, sizeof(struct slb_outbox_hdr) + 1000 + SLB_OUTBOX_EDIT_ROOM_BYTES);
    cr_assert_eq(ob.slot_bytes % 64, 0);
    cr_assert_eq(slb_outbox_free_count(&ob), SLB_OUTBOX_SLOTS);
}

Test(outbox, a_multi_iovec_message_reads_back_whole)
{
    char mid[300];
    memset(mid, 'm', sizeof(mid));
    struct iovec iov[4] = {
        {"INVITE sip:a@b SIP/2.0\r\n", 24},
        {NULL, 0},
        {mid, sizeof(mid)},
        {"\r\n", 2},
    };
    size_t len = 24 + sizeof(mid) + 2;
    int slot = slb_outbox_fill(&ob, 0x0100000500000007ull, iov, 4, len);
    cr_assert_geq(slot, 0);
    cr_assert_lt(slot, (int)SLB_OUTBOX_SLOTS);
    cr_assert_eq(slb_outbox_free_count(&ob), SLB_OUTBOX_SLOTS - 1);
    uint64_t dst = 0;
    const char *msg = slb_outbox_message(&ob, (uint16_t)slot, (uint32_t)len, &dst);
    cr_assert_not_null(msg);
    cr_assert_eq(dst, 0x0100000500000007ull);
    cr_assert_eq(memcmp(msg, "INVITE sip:a@b SIP/2.0\r\n", 24), 0);
    cr_assert_eq(memcmp(msg + 24, mid, sizeof(mid)), 0);
    cr_assert_eq(memcmp(msg + 24 + sizeof(mid), "\r\n", 2), 0);
}

Test(outbox, sixty_four_fills_exhaust_it_and_a_release_makes_room)
{
    struct iovec iov = {"x", 1};
    unsigned char seen[SLB_OUTBOX_SLOTS] = {0};
    for (unsigned i = 0; i < SLB_OUTBOX_SLOTS; i++) {
        int slot = slb_outbox_fill(&ob, i + 1, &iov, 1, 1);
        cr_assert_geq(slot, 0, "fill %u", i);
        cr_assert_not(seen[slot], "slot %d lent twice", slot);
        seen[slot] = 1;
    }
    cr_assert_eq(slb_outbox_fill(&ob, 99, &iov, 1, 1), -ENOBUFS);
    cr_assert_eq(slb_outbox_free_count(&ob), 0);
    /* Every slot kept its own destination. */
    for (uint16_t s = 0; s < SLB_OUTBOX_SLOTS; s++) {
        uint64_t dst;
        cr_assert_not_null(slb_outbox_message(&ob, s, 1, &dst));
        cr_assert_geq(dst, 1);
        cr_assert_leq(dst, SLB_OUTBOX_SLOTS);
    }
    cr_assert_eq(slb_outbox_release(&ob, 17), 0);
    cr_assert_eq(slb_outbox_fill(&ob, 100, &iov, 1, 1), 17, "the slot given back is reused");
    cr_assert_eq(slb_outbox_fill(&ob, 101, &iov, 1, 1), -ENOBUFS);
}

Test(outbox, a_message_larger_than_a_slot_is_refused)
{
    size_t room = ob.slot_bytes - sizeof(struct slb_outbox_hdr);
    char *big = malloc(room + 1);
    cr_assert_not_null(big);
    memset(big, 'b', room + 1);
    struct iovec iov = {big, room + 1};
    cr_assert_eq(slb_outbox_fill(&ob, 1, &iov, 1, room + 1), -ENOBUFS);
    cr_assert_eq(slb_outbox_free_count(&ob), SLB_OUTBOX_SLOTS, "nothing taken");
    iov.iov_len = room;
    int slot = slb_outbox_fill(&ob, 1, &iov, 1, room);
    cr_assert_geq(slot, 0, "exactly a slot's worth fits");
    uint64_t dst;
    const char *msg = slb_outbox_message(&ob, (uint16_t)slot, (uint32_t)room, &dst);
    cr_assert_not_null(msg);
    cr_assert_eq(msg[room - 1], 'b');
    free(big);
}

Test(outbox, iovecs_that_do_not_add_up_to_len_are_refused)
{
    struct iovec iov[2] = {{"abc", 3}, {"de", 2}};
    cr_assert_eq(slb_outbox_fill(&ob, 1, iov, 2, 4), -EINVAL);
    cr_assert_eq(slb_outbox_fill(&ob, 1, iov, 2, 6), -EINVAL);
    cr_assert_eq(slb_outbox_fill(&ob, 1, iov, -1, 0), -EINVAL);
    cr_assert_eq(slb_outbox_free_count(&ob), SLB_OUTBOX_SLOTS, "nothing taken");
    cr_assert_geq(slb_outbox_fill(&ob, 1, iov, 2, 5), 0);
}

Test(outbox, reading_refuses_a_len_or_slot_past_the_outbox)
{
    struct iovec iov = {"abc", 3};
    int slot = slb_outbox_fill(&ob, 5, &iov, 1, 3);
    cr_assert_geq(slot, 0);
    size_t room = ob.slot_bytes - sizeof(struct slb_outbox_hdr);
    uint64_t dst = 0;
    cr_assert_not_null(slb_outbox_message(&ob, (uint16_t)slot, (uint32_t)room, &dst));
    cr_assert_null(slb_outbox_message(&ob, (uint16_t)slot, (uint32_t)room + 1, &dst));
    cr_assert_null(slb_outbox_message(&ob, (uint16_t)slot, UINT32_MAX, &dst));
    cr_assert_null(slb_outbox_message(&ob, SLB_OUTBOX_SLOTS, 3, &dst));
    struct slb_outbox none = {0};
    cr_assert_null(slb_outbox_message(&none, 0, 0, &dst), "an outbox never set up");
}

Test(outbox, a_return_not_owed_is_refused_and_changes_nothing)
{
    struct iovec iov = {"abc", 3};
    int slot = slb_outbox_fill(&ob, 5, &iov, 1, 3);
    cr_assert_geq(slot, 0);
    cr_assert_eq(slb_outbox_release(&ob, (uint16_t)(slot + 1)), -EINVAL, "never lent");
    cr_assert_eq(slb_outbox_release(&ob, SLB_OUTBOX_SLOTS), -EINVAL, "out of range");
    cr_assert_eq(slb_outbox_release(&ob, (uint16_t)slot), 0);
    cr_assert_eq(slb_outbox_release(&ob, (uint16_t)slot), -EINVAL, "returned twice");
    cr_assert_eq(slb_outbox_free_count(&ob), SLB_OUTBOX_SLOTS);
    /* Had the second return counted, two fills would now share one slot. */
    int a = slb_outbox_fill(&ob, 1, &iov, 1, 3), b = slb_outbox_fill(&ob, 2, &iov, 1, 3);
    cr_assert_neq(a, b);
}

Test(outbox, an_outbox_can_be_torn_down_twice_and_refuses_absurd_sizes)
{
    slb_outbox_deinit(&ob);
    slb_outbox_deinit(&ob);
    cr_assert_eq(slb_outbox_init(&ob, SIZE_MAX), -EINVAL);
    cr_assert_null(ob.mem);
    cr_assert_eq(slb_outbox_init(&ob, 0), 0, "a zero-byte limit still leaves the edit room");
    cr_assert_geq(ob.slot_bytes, sizeof(struct slb_outbox_hdr) + SLB_OUTBOX_EDIT_ROOM_BYTES);
}
