/* Per-source limits: GCRA buckets, connection counts, bans, source keys, the per-worker
 * request-rate table. */
#include "core/limit.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

static const struct slb_siphash_key key = {1, 2};

static struct sockaddr_storage v4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &a->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &a->sin6_addr);
    return ss;
}

Test(limit, gcra_allows_a_burst_then_the_rate)
{
    uint64_t tat = 0, now = 1000000;
    int ok = 0;
    for (int i = 0; i < 100; i++)
        ok += slb_gcra(&tat, now, 10, 10);
    cr_assert_eq(ok, 10, "a burst of 10 at once, got %d", ok);
    /* 100 ms later: exactly one more (10 per second). */
    cr_assert(slb_gcra(&tat, now + 100000, 10, 10));
    cr_assert_not(slb_gcra(&tat, now + 100000, 10, 10));
    /* Idle for a long while: the whole burst again, not more. */
    ok = 0;
    for (int i = 0; i < 100; i++)
        ok += slb_gcra(&tat, now + 60000000, 10, 10);
    cr_assert_eq(ok, 10);
    cr_assert(slb_gcra(&tat, 0, 0, 0), "rate 0 is no limit");
}

Test(limit, keys_group_ipv6_by_slash_64_and_map_v4_mapped_to_v4)
{
    struct sockaddr_storage a = v6("2001:db8:1:2::1"), b = v6("2001:db8:1:2:ffff::9"),
                            c = v6("2001:db8:1:3::1"), m = v6("::ffff:192.0.2.7"),
                            d = v4("192.0.2.7"), e = v4("192.0.2.8");
    cr_assert_eq(slb_limit_key(&key, &a), slb_limit_key(&key, &b));
    cr_assert_neq(slb_limit_key(&key, &a), slb_limit_key(&key, &c));
    cr_assert_eq(slb_limit_key(&key, &m), slb_limit_key(&key, &d));
    cr_assert_neq(slb_limit_key(&key, &d), slb_limit_key(&key, &e));
    cr_assert_neq(slb_limit_key(&key, &d), 0);
}

Test(limit, concurrent_connections_are_counted_and_released)
{
    struct slb_limit_table t;
    struct slb_limit_conf conf = {.conns = 3, .conn_rate = 0, .ban_after = 100, .ban_ms = 0};
    cr_assert_eq(slb_limit_table_init(&t, &conf, &key, 1024), 0);
    struct sockaddr_storage a = v4("127.0.0.2"), b = v4("127.0.0.3");
    uint64_t ka = slb_limit_key(&key, &a), kb = slb_limit_key(&key, &b);
    bool banned;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(slb_limit_admit(&t, ka, 1000, &banned), SLB_LIMIT_OK);
    cr_assert_eq(slb_limit_admit(&t, ka, 1000, &banned), SLB_LIMIT_CONNS);
    cr_assert_eq(slb_limit_admit(&t, kb, 1000, &banned), SLB_LIMIT_OK, "another source");
    slb_limit_release(&t, ka);
    cr_assert_eq(slb_limit_admit(&t, ka, 1000, &banned), SLB_LIMIT_OK);
    cr_assert_eq(slb_limit_admit(&t, ka, 1000, &banned), SLB_LIMIT_CONNS);
    slb_limit_table_deinit(&t);
}

Test(limit, connection_and_handshake_rates)
{
    struct slb_limit_table t;
    struct slb_limit_conf conf = {.conns = 0, .conn_rate = 5, .handshake_rate = 2};
    cr_assert_eq(slb_limit_table_init(&t, &conf, &key, 64), 0);
    struct sockaddr_storage a = v4("127.0.0.2");
    uint64_t k = slb_limit_key(&key, &a);
    bool banned;
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += slb_limit_admit(&t, k, 5000, &banned) == SLB_LIMIT_OK;
    cr_assert_eq(ok, 5);
    cr_assert_eq(slb_limit_admit(&t, k, 5000, &banned), SLB_LIMIT_CONN_RATE);
    cr_assert_eq(slb_limit_admit(&t, k, 5200, &banned), SLB_LIMIT_OK, "one per 200 ms");
    cr_assert_eq(slb_limit_handshake(&t, k, 5000, &banned), SLB_LIMIT_OK);
    cr_assert_eq(slb_limit_handshake(&t, k, 5000, &banned), SLB_LIMIT_OK);
    cr_assert_eq(slb_limit_handshake(&t, k, 5000, &banned), SLB_LIMIT_HANDSHAKE_RATE);
    slb_limit_table_deinit(&t);
}

Test(limit, repeat_offenders_are_banned_until_the_ban_expires)
{
    struct slb_limit_table t;
    struct slb_limit_conf conf = {.conns = 1, .ban_after = 5, .ban_ms = 60000};
    cr_assert_eq(slb_limit_table_init(&t, &conf, &key, 64), 0);
    struct sockaddr_storage a = v4("127.0.0.2");
    uint64_t k = slb_limit_key(&key, &a);
    bool banned, started = false;
    int bans = 0;
    cr_assert_eq(slb_limit_admit(&t, k, 1000, &banned), SLB_LIMIT_OK);
    for (int i = 0; i < 5; i++) {
        enum slb_limit_verdict v = slb_limit_admit(&t, k, 1000, &banned);
        cr_assert_eq(v, SLB_LIMIT_CONNS);
        bans += banned;
        started |= banned;
    }
    cr_assert(started);
    cr_assert_eq(bans, 1, "the ban is reported once");
    /* Banned: even after its connection closed. */
    slb_limit_release(&t, k);
    cr_assert_eq(slb_limit_admit(&t, k, 2000, &banned), SLB_LIMIT_BANNED);
    cr_assert_eq(slb_limit_handshake(&t, k, 2000, &banned), SLB_LIMIT_BANNED);
    cr_assert_eq(slb_limit_admit(&t, k, 61001, &banned), SLB_LIMIT_OK, "the ban expired");
    slb_limit_table_deinit(&t);
}

Test(limit, logging_is_once_per_interval_per_source)
{
    struct slb_limit_table t;
    struct slb_limit_conf conf = {.conns = 1};
    cr_assert_eq(slb_limit_table_init(&t, &conf, &key, 64), 0);
    struct sockaddr_storage a = v4("127.0.0.2");
    uint64_t k = slb_limit_key(&key, &a);
    bool banned;
    slb_limit_admit(&t, k, 1000, &banned);
    cr_assert(slb_limit_should_log(&t, k, 1000, 10000));
    cr_assert_not(slb_limit_should_log(&t, k, 5000, 10000));
    cr_assert(slb_limit_should_log(&t, k, 11000, 10000));
    slb_limit_table_deinit(&t);
}

Test(limit, a_full_probe_window_lets_sources_through_uncounted)
{
    struct slb_limit_table t;
    struct slb_limit_conf conf = {.conns = 1};
    cr_assert_eq(slb_limit_table_init(&t, &conf, &key, 64), 0);
    bool banned;
    /* 64 entries, each held by a connection: the 65th source and more find no entry. */
    int refused = 0;
    for (uint64_t s = 1; s <= 200; s++)
        refused += slb_limit_admit(&t, s * 0x9e3779b97f4a7c15ull | 1, 1000, &banned) !=
                   SLB_LIMIT_OK;
    cr_assert_eq(refused, 0, "distinct sources are never refused for lack of room");
    slb_limit_table_deinit(&t);
}

Test(limit, request_rate_per_source)
{
    struct slb_rate_table r;
    cr_assert_eq(slb_rate_table_init(&r, 50, 4096), 0);
    int ok = 0;
    for (int i = 0; i < 500; i++)
        ok += slb_rate_allow(&r, 77, 1000);
    cr_assert_eq(ok, 50);
    cr_assert(slb_rate_allow(&r, 78, 1000), "another source has its own bucket");
    cr_assert(slb_rate_allow(&r, 77, 1020), "one more every 20 ms");
    slb_rate_table_deinit(&r);
    struct slb_rate_table off;
    cr_assert_eq(slb_rate_table_init(&off, 0, 4096), 0);
    for (int i = 0; i < 1000; i++)
        cr_assert(slb_rate_allow(&off, 77, 1000));
    slb_rate_table_deinit(&off);
}
