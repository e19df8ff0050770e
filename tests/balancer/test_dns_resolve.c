/* Backends from DNS (RFC 3263 4.2): _sips._tcp SRV records and their targets' addresses, or
 * the name's own addresses, from a real dnsmasq on loopback that each test starts and stops
 * (SIGTERM, then waited for; it also gets SIGTERM if the test process dies). The weight and
 * priority helpers are pure. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "balancer/dns_resolve.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

enum {
    TIMEOUT_MS = 2000, /* per resolve against dnsmasq: generous, answers take ~1 ms */
    READY_MS = 3000,   /* how long dnsmasq may take to answer after its start */
    MANY = SLB_MAX_BACKENDS + 1,
};

/* The records dnsmasq serves (--local-ttl=7 unless a record says otherwise). */
static const char *const records[] = {
    "--srv-host=_sips._tcp.cluster.test,b1.cluster.test,5061,10,60",
    "--srv-host=_sips._tcp.cluster.test,b2.cluster.test,5062,10,30",
    "--srv-host=_sips._tcp.cluster.test,b3.cluster.test,5063,20,10",
    "--host-record=b1.cluster.test,127.0.0.11",
    "--host-record=b2.cluster.test,127.0.0.12",
    "--host-record=b3.cluster.test,127.0.0.13",
    "--host-record=plain.test,127.0.0.21",
    "--host-record=plain.test,127.0.0.22",
    /* No target: dnsmasq answers with "." (RFC 2782: decidedly not available). */
    "--srv-host=_sips._tcp.down.test",
    "--host-record=down.test,127.0.0.23",
    "--srv-host=_sips._tcp.dual.test,d1.dual.test,5061,0,50",
    "--srv-host=_sips._tcp.dual.test,d2.dual.test,5061,0,50",
    "--host-record=d1.dual.test,127.0.0.31,fd00::31",
    "--host-record=d2.dual.test,127.0.0.32",
    "--srv-host=_sips._tcp.partial.test,b1.cluster.test,5061,0,1",
    "--srv-host=_sips._tcp.partial.test,ghost.test,5061,0,1",
    "--srv-host=_sips._tcp.ghosts.test,ghost.test,5061,0,1",
    "--srv-host=_sips._tcp.slowaddr.test,t1.slowaddr.test,5061,0,1",
    "--host-record=t1.slowaddr.test,127.0.0.41,30",
    "--srv-host=_sips._tcp.fastaddr.test,t2.fastaddr.test,5061,0,1",
    "--host-record=t2.fastaddr.test,127.0.0.42,3",
    /* The SRV name exists with another type: NODATA, not NXDOMAIN. */
    "--txt-record=_sips._tcp.nodata.test,hello",
    "--host-record=nodata.test,127.0.0.51",
    "--txt-record=empty.test,hello",
};

/* The dnsmasq this test started; torn down in stop_dns. */
static pid_t dns_pid;
static char dns_addr[32];
static char many_records[MANY][48];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *dnsmasq_path(void)
{
    static const char *const where[] = {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq",
                                        "/usr/local/sbin/dnsmasq"};
    for (size_t i = 0; i < ARRAY_LEN(where); i++)
        if (access(where[i], X_OK) == 0)
            return where[i];
    return NULL;
}

/* A UDP socket bound to 127.0.0.1 on a free port, written to *port. */
static int udp_socket(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "bind: %s", strerror(errno));
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* A port free for both UDP and TCP on 127.0.0.1 just now (dnsmasq takes both). */
static uint16_t free_port(void)
{
    for (int tries = 0; tries < 20; tries++) {
        uint16_t port;
        int u = udp_socket(&port);
        int t = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bool ok = t >= 0 && bind(t, (struct sockaddr *)&sin, sizeof(sin)) == 0;
        close(u);
        if (t >= 0)
            close(t);
        if (ok)
            return port;
    }
    cr_assert_fail("no free UDP+TCP port on 127.0.0.1");
    return 0;
}

static pid_t spawn_dnsmasq(const char *path, uint16_t port)
{
    static char port_arg[32];
    snprintf(port_arg, sizeof(port_arg), "--port=%u", port);
    static const char *const fixed[] = {
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--local-ttl=7",
        "--local=/test/", /* names under .test not listed here: NXDOMAIN */
    };
    const char *argv[4 + ARRAY_LEN(fixed) + ARRAY_LEN(records) + MANY];
    size_t n = 0;
    argv[n++] = path;
    argv[n++] = port_arg;
    for (size_t i = 0; i < ARRAY_LEN(fixed); i++)
        argv[n++] = fixed[i];
    if (geteuid() == 0)
        argv[n++] = "--user=root"; /* no switch of user: keeps the parent-death signal */
    for (size_t i = 0; i < ARRAY_LEN(records); i++)
        argv[n++] = records[i];
    for (int i = 0; i < MANY; i++) {
        snprintf(many_records[i], sizeof(many_records[i]), "--host-record=many.test,127.0.1.%d",
                 i + 1);
        argv[n++] = many_records[i];
    }
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void stop_dns(void)
{
    if (dns_pid > 0) {
        kill(dns_pid, SIGTERM);
        waitpid(dns_pid, NULL, 0);
        dns_pid = 0;
    }
}

/* Starts dnsmasq and waits until it answers; another port if it could not bind its own. */
static void start_dns(void)
{
    const char *path = dnsmasq_path();
    cr_assert_not_null(path, "dnsmasq is not installed: these tests need it "
                             "(apt-get install dnsmasq; deploy/setup-deps.sh installs it)");
    for (int attempt = 0; attempt < 3; attempt++) {
        uint16_t port = free_port();
        snprintf(dns_addr, sizeof(dns_addr), "127.0.0.1:%u", port);
        dns_pid = spawn_dnsmasq(path, port);
        uint64_t until = now_ms() + READY_MS;
        while (now_ms() < until) {
            if (waitpid(dns_pid, NULL, WNOHANG) == dns_pid) {
                dns_pid = 0; /* exited: its port was taken meanwhile */
                break;
            }
            const char *servers[] = {dns_addr};
            struct slb_dns_result r;
            if (slb_dns_resolve("plain.test", 5061, servers, 1, 200, &r, NULL, 0) == 2)
                return;
            nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
        }
        stop_dns();
    }
    cr_assert_fail("dnsmasq (%s) did not answer on 127.0.0.1 within %d ms", path, READY_MS);
}

static int resolve(const char *name, uint16_t default_port, struct slb_dns_result *r, char *err,
                   size_t errlen)
{
    const char *servers[] = {dns_addr};
    return slb_dns_resolve(name, default_port, servers, 1, TIMEOUT_MS, r, err, errlen);
}

static void expect_target(const struct slb_dns_target *t, const char *host, const char *ip,
                          uint16_t port, uint16_t priority, uint16_t weight)
{
    cr_assert_str_eq(t->host, host);
    cr_assert_eq(t->port, port, "%s port", host);
    cr_assert_eq(t->priority, priority, "%s priority", host);
    cr_assert_eq(t->weight, weight, "%s weight", host);
    char text[INET6_ADDRSTRLEN];
    if (t->addr.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&t->addr;
        cr_assert_eq(t->addr_len, sizeof(*sin));
        cr_assert_eq(ntohs(sin->sin_port), port, "%s sockaddr port", host);
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
    } else {
        cr_assert_eq(t->addr.ss_family, AF_INET6);
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&t->addr;
        cr_assert_eq(t->addr_len, sizeof(*sin6));
        cr_assert_eq(ntohs(sin6->sin6_port), port, "%s sockaddr port", host);
        inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text));
    }
    cr_assert_str_eq(text, ip, "%s address", host);
}

TestSuite(dns_resolve, .init = start_dns, .fini = stop_dns, .timeout = 30);

Test(dns_resolve, srv_records_give_each_target_with_its_port_priority_and_weight)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("cluster.test", 5999, &r, err, sizeof(err)), 3, "%s", err);
    cr_assert_eq(r.n, 3);
    cr_assert(r.from_srv);
    cr_assert_eq(r.skipped, 0);
    cr_assert_str_empty(err);
    /* Best priority first, heaviest first within it. */
    expect_target(&r.t[0], "b1.cluster.test", "127.0.0.11", 5061, 10, 60);
    expect_target(&r.t[1], "b2.cluster.test", "127.0.0.12", 5062, 10, 30);
    expect_target(&r.t[2], "b3.cluster.test", "127.0.0.13", 5063, 20, 10);
    cr_assert_eq(r.ttl_s, 7);
}

Test(dns_resolve, ttl_is_the_smallest_of_the_srv_and_address_records)
{
    struct slb_dns_result r;
    char err[256];
    /* SRV 7 s (read from the raw answer), address 30 s. */
    cr_assert_eq(resolve("slowaddr.test", 5061, &r, err, sizeof(err)), 1, "%s", err);
    cr_assert_eq(r.ttl_s, 7);
    /* SRV 7 s, address 3 s. */
    cr_assert_eq(resolve("fastaddr.test", 5061, &r, err, sizeof(err)), 1, "%s", err);
    cr_assert_eq(r.ttl_s, 3);
}

Test(dns_resolve, a_dual_stack_target_gives_one_target_per_address_sharing_its_weight)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("dual.test", 5061, &r, err, sizeof(err)), 3, "%s", err);
    expect_target(&r.t[0], "d1.dual.test", "127.0.0.31", 5061, 0, 50);
    expect_target(&r.t[1], "d1.dual.test", "fd00::31", 5061, 0, 50);
    expect_target(&r.t[2], "d2.dual.test", "127.0.0.32", 5061, 0, 50);
    uint32_t w[SLB_MAX_BACKENDS];
    slb_dns_maglev_weights(&r, w);
    cr_assert_eq(w[0], SLB_MAX_WEIGHT / 2);
    cr_assert_eq(w[1], SLB_MAX_WEIGHT / 2);
    cr_assert_eq(w[2], SLB_MAX_WEIGHT, "each host gets the same share, as published");
}

Test(dns_resolve, without_srv_records_the_names_addresses_get_the_default_port)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("plain.test", 5070, &r, err, sizeof(err)), 2, "%s", err);
    cr_assert_not(r.from_srv);
    expect_target(&r.t[0], "plain.test", "127.0.0.21", 5070, 0, 1);
    expect_target(&r.t[1], "plain.test", "127.0.0.22", 5070, 0, 1);
    cr_assert_eq(r.ttl_s, 7);
    /* A final dot (fully qualified) is not part of the host name used for SNI. */
    cr_assert_eq(resolve("plain.test.", 5070, &r, err, sizeof(err)), 2, "%s", err);
    cr_assert_str_eq(r.t[0].host, "plain.test");
}

Test(dns_resolve, an_srv_name_with_other_records_only_falls_back_too)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("nodata.test", 5061, &r, err, sizeof(err)), 1, "%s", err);
    cr_assert_not(r.from_srv);
    expect_target(&r.t[0], "nodata.test", "127.0.0.51", 5061, 0, 1);
}

Test(dns_resolve, a_name_that_does_not_exist_is_enoent)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("nope.test", 5061, &r, err, sizeof(err)), -ENOENT);
    cr_assert_eq(r.n, 0);
    cr_assert_not_null(strstr(err, "nope.test does not exist"), "%s", err);
}

Test(dns_resolve, a_name_without_srv_a_or_aaaa_records_is_enoent)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("empty.test", 5061, &r, err, sizeof(err)), -ENOENT);
    cr_assert_not_null(strstr(err, "no SRV, A or AAAA"), "%s", err);
}

Test(dns_resolve, a_dot_srv_target_means_no_service_not_a_fallback)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("down.test", 5061, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.n, 0);
    cr_assert(r.from_srv);
    cr_assert_eq(r.ttl_s, 7);
    cr_assert_not_null(strstr(err, "not available"), "%s", err);
}

Test(dns_resolve, an_srv_target_without_an_address_is_left_out_and_counted)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("partial.test", 5061, &r, err, sizeof(err)), 1, "%s", err);
    expect_target(&r.t[0], "b1.cluster.test", "127.0.0.11", 5061, 0, 1);
    cr_assert_eq(r.skipped, 1);
    cr_assert_not_null(strstr(err, "ghost.test"), "%s", err);
}

Test(dns_resolve, srv_targets_none_of_which_has_an_address_are_enoent)
{
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("ghosts.test", 5061, &r, err, sizeof(err)), -ENOENT);
    cr_assert_eq(r.n, 0);
    cr_assert_not_null(strstr(err, "ghost.test"), "%s", err);
}

Test(dns_resolve, more_addresses_than_backends_is_e2big)
{
    /* 65 A records do not fit a 512-byte UDP answer: c-ares retries over TCP. */
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(resolve("many.test", 5061, &r, err, sizeof(err)), -E2BIG, "%s", err);
    cr_assert_eq(r.n, 0);
}

Test(dns_resolve, a_refusing_first_server_falls_through_to_the_next)
{
    uint16_t dead;
    close(udp_socket(&dead));
    char dead_addr[32];
    snprintf(dead_addr, sizeof(dead_addr), "127.0.0.1:%u", dead);
    const char *servers[] = {dead_addr, dns_addr};
    struct slb_dns_result r;
    char err[256];
    cr_assert_eq(
        slb_dns_resolve("cluster.test", 5061, servers, 2, TIMEOUT_MS, &r, err, sizeof(err)), 3,
        "%s", err);
}

/* No dnsmasq needed below. */

Test(dns_resolve_offline, a_server_that_never_answers_times_out_within_the_timeout)
{
    uint16_t port;
    int fd = udp_socket(&port); /* bound, never read: queries vanish */
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    const char *servers[] = {addr};
    struct slb_dns_result r;
    char err[256];
    uint64_t t0 = now_ms();
    int rc = slb_dns_resolve("cluster.test", 5061, servers, 1, 300, &r, err, sizeof(err));
    uint64_t took = now_ms() - t0;
    close(fd);
    cr_assert_eq(rc, -ETIMEDOUT, "%d: %s", rc, err);
    cr_assert_geq(took, 290, "gave up after %llu ms", (unsigned long long)took);
    cr_assert_leq(took, 300 + 500, "took %llu ms", (unsigned long long)took);
    cr_assert_not_null(strstr(err, "300 ms"), "%s", err);
}

Test(dns_resolve_offline, a_port_nobody_listens_on_is_refused)
{
    uint16_t port;
    close(udp_socket(&port));
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    const char *servers[] = {addr};
    struct slb_dns_result r;
    char err[256];
    int rc = slb_dns_resolve("cluster.test", 5061, servers, 1, 2000, &r, err, sizeof(err));
    cr_assert_eq(rc, -ECONNREFUSED, "%d: %s", rc, err);
}

Test(dns_resolve_offline, an_ip_address_is_used_as_it_is_without_a_query)
{
    const char *servers[] = {"127.0.0.1:1"}; /* never asked */
    struct slb_dns_result r;
    cr_assert_eq(slb_dns_resolve("192.0.2.7", 5061, servers, 1, 100, &r, NULL, 0), 1);
    expect_target(&r.t[0], "192.0.2.7", "192.0.2.7", 5061, 0, 1);
    cr_assert_not(r.from_srv);
    cr_assert_eq(r.ttl_s, UINT32_MAX);
    cr_assert_eq(slb_dns_resolve("[2001:db8::7]", 5062, servers, 1, 100, &r, NULL, 0), 1);
    expect_target(&r.t[0], "2001:db8::7", "2001:db8::7", 5062, 0, 1);
}

Test(dns_resolve_offline, bad_names_and_server_strings_are_einval)
{
    struct slb_dns_result r;
    char err[256];
    const char *bad[] = {"127.0.0.1", "127.0.0.1:0",  "127.0.0.1:70000", "[::1",
                         "[::1]x",    "localhost:53", "127.0.0.1:53x",   ""};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        const char *servers[] = {bad[i]};
        int rc = slb_dns_resolve("x.test", 5061, servers, 1, 100, &r, err, sizeof(err));
        if (i == 0) {
            cr_assert_neq(rc, -EINVAL, "an address without a port means port 53");
            continue;
        }
        cr_assert_eq(rc, -EINVAL, "server \"%s\"", bad[i]);
        cr_assert_not_null(strstr(err, "bad DNS server"), "%s", err);
    }
    const char *servers[] = {"127.0.0.1:1"};
    cr_assert_eq(slb_dns_resolve("", 5061, servers, 1, 100, &r, err, sizeof(err)), -EINVAL);
    char longname[260];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_eq(slb_dns_resolve(longname, 5061, servers, 1, 100, &r, err, sizeof(err)), -EINVAL);
    cr_assert_eq(slb_dns_resolve("x.test", 5061, servers, 1, 0, &r, err, sizeof(err)), -EINVAL,
                 "a timeout of 0");
}

/* A result of SRV targets with these weights and priorities, one address each. */
static void srv_result(struct slb_dns_result *r, const uint16_t *weight, const uint16_t *prio,
                       unsigned n)
{
    memset(r, 0, sizeof(*r));
    r->from_srv = true;
    r->n = n;
    for (unsigned i = 0; i < n; i++) {
        snprintf(r->t[i].host, sizeof(r->t[i].host), "h%u.test", i);
        r->t[i].port = 5061;
        r->t[i].weight = weight[i];
        r->t[i].priority = prio ? prio[i] : 0;
    }
}

Test(dns_weights, srv_weights_scale_proportionally_to_the_maglev_range)
{
    struct slb_dns_result r;
    uint32_t w[SLB_MAX_BACKENDS];
    srv_result(&r, (const uint16_t[]){60, 30, 10, 0}, NULL, 4);
    slb_dns_maglev_weights(&r, w);
    cr_assert_eq(w[0], SLB_MAX_WEIGHT);
    cr_assert_eq(w[1], SLB_MAX_WEIGHT / 2);
    cr_assert_eq(w[2], (SLB_MAX_WEIGHT + 3) / 6, "1/6 of the range, rounded");
    cr_assert_eq(w[3], 1, "weight 0: the smallest chance, not none");

    srv_result(&r, (const uint16_t[]){65535, 1, 32768}, NULL, 3);
    slb_dns_maglev_weights(&r, w);
    cr_assert_eq(w[0], SLB_MAX_WEIGHT, "the largest is at most SLB_MAX_WEIGHT");
    cr_assert_eq(w[1], 1, "too small to show: at least 1");
    cr_assert_eq(w[2], SLB_MAX_WEIGHT / 2);
}

Test(dns_weights, all_zero_weights_are_equal_and_a_or_aaaa_are_one_each)
{
    struct slb_dns_result r;
    uint32_t w[SLB_MAX_BACKENDS];
    srv_result(&r, (const uint16_t[]){0, 0, 0}, NULL, 3);
    slb_dns_maglev_weights(&r, w);
    for (unsigned i = 0; i < 3; i++)
        cr_assert_eq(w[i], 1);

    srv_result(&r, (const uint16_t[]){1, 1}, NULL, 2);
    r.from_srv = false;
    slb_dns_maglev_weights(&r, w);
    cr_assert_eq(w[0], 1);
    cr_assert_eq(w[1], 1);
}

Test(dns_weights, best_priority_is_the_lowest_value_among_up_targets)
{
    struct slb_dns_result r;
    srv_result(&r, (const uint16_t[]){1, 1, 1, 1}, (const uint16_t[]){20, 10, 10, 30}, 4);
    cr_assert_eq(slb_dns_best_priority(&r, (const bool[]){true, true, true, true}), 10);
    cr_assert_eq(slb_dns_best_priority(&r, (const bool[]){true, false, true, true}), 10);
    cr_assert_eq(slb_dns_best_priority(&r, (const bool[]){true, false, false, true}), 20,
                 "the whole best group down: the next group");
    cr_assert_eq(slb_dns_best_priority(&r, (const bool[]){false, false, false, true}), 30);
    cr_assert_eq(slb_dns_best_priority(&r, (const bool[]){false, false, false, false}), UINT32_MAX);
    r.n = 0;
    cr_assert_eq(slb_dns_best_priority(&r, NULL), UINT32_MAX);
}
