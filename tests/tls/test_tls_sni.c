/* TLS policy of server contexts: several certificates chosen by SNI, strict SNI, client
 * certificates against CRLs, the default cipher list, key exchange groups. Two in-memory
 * sessions pumped into each other (tls_pair.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tls/tls.h"
#include "tls_pair.h"

static void setup(void)
{
    cr_assert_eq(slb_tls_init(), 0);
}

static void teardown(void)
{
    slb_tls_cleanup();
}

TestSuite(tls_policy, .init = setup, .fini = teardown);

static char err[512];

/* Certificate lists the tests pick from. */
static const char *certs2[2], *keys2[2];

/* Server options with server-ec.pem (localhost, the default) then server-other.pem
 * (other.test, *.wild.test). */
static struct slb_tls_server_opts two_certs(void)
{
    certs2[0] = cert("server-ec.pem");
    keys2[0] = cert("server-ec.key");
    certs2[1] = cert("server-other.pem");
    keys2[1] = cert("server-other.key");
    struct slb_tls_server_opts o = {.cert_files = certs2, .key_files = keys2, .n_certs = 2};
    return o;
}

static struct slb_tls_client_opts unverified_client(void)
{
    struct slb_tls_client_opts co = client_opts();
    co.verify_server = SLB_TLS_VERIFY_NONE;
    return co;
}

/* One handshake; returns whether it completed. The pair is left for the caller to inspect
 * and deinit. */
static bool shake(struct pair *p, struct slb_tls_ctx *s, struct slb_tls_ctx *c, const char *host)
{
    pair_init(p, s, c, host);
    return pair_handshake(p);
}

/* The certificate index a client sending host gets, or -1 when the handshake failed. */
static int index_for(struct slb_tls_ctx *s, struct slb_tls_ctx *c, const char *host)
{
    struct pair p;
    bool ok = shake(&p, s, c, host);
    int idx = ok ? (int)slb_tls_cert_index(&p.s.conn) : -1;
    pair_deinit(&p);
    return idx;
}

Test(tls_policy, sni_picks_the_certificate_whose_san_matches)
{
    struct slb_tls_server_opts so = two_certs();
    struct slb_tls_ctx *s = server_ctx(&so);
    for (int v = 0; v < 2; v++) {
        struct slb_tls_client_opts co = client_opts(); /* verifies the name: proof of the cert */
        co.max_version = v ? SLB_TLS_VERSION_1_2 : SLB_TLS_VERSION_1_3;
        struct slb_tls_ctx *c = client_ctx(&co);
        cr_assert_eq(index_for(s, c, "other.test"), 1, "TLS 1.%d", v ? 2 : 3);
        cr_assert_eq(index_for(s, c, "OTHER.Test"), 1, "names compare without case");
        cr_assert_eq(index_for(s, c, "localhost"), 0);
        slb_tls_ctx_free(c);
    }
    slb_tls_ctx_free(s);
}

Test(tls_policy, wildcard_san_covers_exactly_one_label)
{
    struct slb_tls_server_opts so = two_certs();
    struct slb_tls_ctx *s = server_ctx(&so);
    struct slb_tls_client_opts co = client_opts();
    struct slb_tls_ctx *verifying = client_ctx(&co);
    cr_assert_eq(index_for(s, verifying, "a.wild.test"), 1);
    co = unverified_client();
    struct slb_tls_ctx *c = client_ctx(&co);
    cr_assert_eq(index_for(s, c, "a.b.wild.test"), 0, "two labels: the default");
    cr_assert_eq(index_for(s, c, "wild.test"), 0, "no label: the default");
    slb_tls_ctx_free(verifying);
    slb_tls_ctx_free(c);
    slb_tls_ctx_free(s);
}

Test(tls_policy, unknown_or_missing_name_gets_the_first_certificate)
{
    struct slb_tls_server_opts so = two_certs();
    struct slb_tls_ctx *s = server_ctx(&so);
    struct slb_tls_client_opts co = unverified_client();
    struct slb_tls_ctx *c = client_ctx(&co);
    cr_assert_eq(index_for(s, c, "unknown.test"), 0);
    cr_assert_eq(index_for(s, c, NULL), 0, "no SNI at all");
    cr_assert_eq(index_for(s, c, "127.0.0.1"), 0, "an address sends no SNI");
    slb_tls_ctx_free(c);
    slb_tls_ctx_free(s);
}

static void expect_refused(struct slb_tls_ctx *s, struct slb_tls_ctx *c, const char *host)
{
    struct pair p;
    cr_assert_not(shake(&p, s, c, host), "%s was accepted", host ? host : "(no SNI)");
    cr_assert_eq(p.s.rc, -EPROTO);
    cr_assert_eq(slb_tls_fail_reason(&p.s.conn), SLB_TLS_FAIL_BAD_CERT);
    char why[200];
    slb_tls_error_string(&p.s.conn, why, sizeof(why));
    cr_assert(strstr(why, "-381") != NULL, "server says unknown SNI: %s", why);
    /* The client got an unrecognized_name alert (RFC 6066 3). */
    cr_assert_eq(p.c.rc, -EPROTO);
    cr_assert_eq(slb_tls_fail_reason(&p.c.conn), SLB_TLS_FAIL_BAD_CERT, "client: %s",
                 slb_tls_error_string(&p.c.conn, why, sizeof(why)));
    pair_deinit(&p);
}

Test(tls_policy, strict_sni_refuses_unknown_and_missing_names)
{
    struct slb_tls_server_opts so = two_certs();
    so.strict_sni = true;
    struct slb_tls_ctx *s = server_ctx(&so);
    for (int v = 0; v < 2; v++) {
        struct slb_tls_client_opts co = unverified_client();
        co.max_version = v ? SLB_TLS_VERSION_1_2 : SLB_TLS_VERSION_1_3;
        struct slb_tls_ctx *c = client_ctx(&co);
        expect_refused(s, c, "unknown.test");
        expect_refused(s, c, NULL);
        cr_assert_eq(index_for(s, c, "other.test"), 1);
        cr_assert_eq(index_for(s, c, "localhost"), 0);
        slb_tls_ctx_free(c);
    }
    slb_tls_ctx_free(s);
}

Test(tls_policy, strict_sni_works_with_a_single_certificate)
{
    struct slb_tls_server_opts so = server_opts();
    so.strict_sni = true;
    struct slb_tls_ctx *s = server_ctx(&so);
    struct slb_tls_client_opts co = unverified_client();
    struct slb_tls_ctx *c = client_ctx(&co);
    cr_assert_eq(index_for(s, c, "localhost"), 0);
    expect_refused(s, c, "other.test");
    slb_tls_ctx_free(c);
    slb_tls_ctx_free(s);
}

Test(tls_policy, rsa_default_and_ecdsa_by_sni_in_one_context)
{
    struct slb_tls_server_opts so = two_certs();
    certs2[0] = cert("server-rsa.pem");
    keys2[0] = cert("server-rsa.key");
    struct slb_tls_ctx *s = server_ctx(&so);
    for (int v = 0; v < 2; v++) {
        struct slb_tls_client_opts co = client_opts();
        co.max_version = v ? SLB_TLS_VERSION_1_2 : SLB_TLS_VERSION_1_3;
        struct slb_tls_ctx *c = client_ctx(&co);
        struct pair p;
        cr_assert(shake(&p, s, c, "other.test"), "TLS 1.%d: s %d c %d", v ? 2 : 3, p.s.rc, p.c.rc);
        if (v)
            cr_assert(strstr(slb_tls_cipher_name(&p.s.conn), "ECDSA"), "%s",
                      slb_tls_cipher_name(&p.s.conn));
        pair_deinit(&p);
        cr_assert(shake(&p, s, c, "localhost"), "RSA default, TLS 1.%d", v ? 2 : 3);
        if (v)
            cr_assert(strstr(slb_tls_cipher_name(&p.s.conn), "RSA"), "%s",
                      slb_tls_cipher_name(&p.s.conn));
        pair_deinit(&p);
        slb_tls_ctx_free(c);
    }
    slb_tls_ctx_free(s);
}

static void resume_with_sni(enum slb_tls_version max)
{
    struct slb_tls_server_opts so = two_certs();
    struct slb_tls_client_opts co = client_opts();
    co.max_version = max;
    struct slb_tls_ctx *s1 = server_ctx(&so), *s2 = server_ctx(&so), *c = client_ctx(&co);
    struct pair p;
    cr_assert(shake(&p, s1, c, "other.test"));
    struct slb_tls_session *sess = slb_tls_session_get(&p.c.conn);
    cr_assert_not_null(sess);
    pair_deinit(&p);

    pair_init(&p, s2, c, "other.test");
    cr_assert_eq(slb_tls_conn_set_session(&p.c.conn, sess), 0);
    cr_assert(pair_handshake(&p), "s rc %d c rc %d", p.s.rc, p.c.rc);
    cr_assert(slb_tls_resumed(&p.s.conn), "a ticket from another worker's context resumes");
    cr_assert_eq(slb_tls_cert_index(&p.s.conn), 1);
    pair_deinit(&p);
    slb_tls_session_free(sess);
    slb_tls_ctx_free(s1);
    slb_tls_ctx_free(s2);
    slb_tls_ctx_free(c);
}

Test(tls_policy, tls13_tickets_resume_across_contexts_with_several_certificates)
{
    resume_with_sni(SLB_TLS_VERSION_1_3);
}

Test(tls_policy, tls12_tickets_resume_across_contexts_with_several_certificates)
{
    resume_with_sni(SLB_TLS_VERSION_1_2);
}

Test(tls_policy, every_key_is_checked_against_its_certificate)
{
    struct slb_tls_server_opts so = two_certs();
    keys2[1] = cert("wrong.key");
    cr_assert_null(slb_tls_server_ctx_new(&so, err, sizeof(err)));
    cr_assert(strstr(err, "wrong.key") && strstr(err, "server-other.pem"), "%s", err);
}

Test(tls_policy, a_later_certificate_without_dns_names_is_refused)
{
    struct slb_tls_server_opts so = two_certs();
    certs2[1] = cert("client.pem"); /* a certificate with no subjectAltName at all */
    keys2[1] = cert("client.key");
    cr_assert_null(slb_tls_server_ctx_new(&so, err, sizeof(err)));
    cr_assert(strstr(err, "client.pem") && strstr(err, "subjectAltName"), "%s", err);
}

/* --- CRL ------------------------------------------------------------------------------ */

static struct slb_tls_server_opts crl_server(const char *crl)
{
    struct slb_tls_server_opts so = server_opts();
    so.ca_file = cert("ca.pem");
    so.verify_client = SLB_TLS_VERIFY_REQUIRE;
    so.crl_file = crl;
    return so;
}

static struct slb_tls_ctx *client_with(const char *name, enum slb_tls_version max)
{
    char pem[64], key[64];
    snprintf(pem, sizeof(pem), "%s.pem", name);
    snprintf(key, sizeof(key), "%s.key", name);
    struct slb_tls_client_opts co = client_opts();
    co.cert_file = cert(pem);
    co.key_file = cert(key);
    co.max_version = max;
    return client_ctx(&co);
}

/* Handshake of client NAME against s: true when accepted; a refusal must be bad-cert on
 * both sides. */
static bool client_accepted(struct slb_tls_ctx *s, const char *name, enum slb_tls_version max)
{
    struct slb_tls_ctx *c = client_with(name, max);
    struct pair p;
    bool ok = shake(&p, s, c, "localhost");
    if (ok) {
        cr_assert(slb_tls_peer_verified(&p.s.conn));
    } else {
        char why[200];
        cr_assert_eq(slb_tls_fail_reason(&p.s.conn), SLB_TLS_FAIL_BAD_CERT, "server: %s",
                     slb_tls_error_string(&p.s.conn, why, sizeof(why)));
        cr_assert_eq(slb_tls_fail_reason(&p.c.conn), SLB_TLS_FAIL_BAD_CERT, "client: %s",
                     slb_tls_error_string(&p.c.conn, why, sizeof(why)));
    }
    pair_deinit(&p);
    slb_tls_ctx_free(c);
    return ok;
}

Test(tls_policy, crl_revoked_client_certificate_is_refused_and_another_passes)
{
    struct slb_tls_server_opts so = crl_server(cert("crl.pem")); /* revokes client2 */
    struct slb_tls_ctx *s = server_ctx(&so);
    for (int v = 0; v < 2; v++) {
        enum slb_tls_version max = v ? SLB_TLS_VERSION_1_2 : SLB_TLS_VERSION_1_3;
        cr_assert(client_accepted(s, "client", max), "TLS 1.%d", v ? 2 : 3);
        cr_assert_not(client_accepted(s, "client2", max), "TLS 1.%d", v ? 2 : 3);
    }
    slb_tls_ctx_free(s);

    so = crl_server(cert("crl2.pem")); /* revokes client instead */
    s = server_ctx(&so);
    cr_assert_not(client_accepted(s, "client", SLB_TLS_VERSION_1_3));
    cr_assert(client_accepted(s, "client2", SLB_TLS_VERSION_1_3));
    slb_tls_ctx_free(s);
}

Test(tls_policy, crl_applies_to_every_certificate_of_the_context)
{
    struct slb_tls_server_opts so = two_certs();
    so.ca_file = cert("ca.pem");
    so.verify_client = SLB_TLS_VERIFY_REQUIRE;
    so.crl_file = cert("crl.pem");
    struct slb_tls_ctx *s = server_ctx(&so);
    struct slb_tls_ctx *c = client_with("client2", SLB_TLS_VERSION_1_3);
    struct pair p;
    cr_assert_not(shake(&p, s, c, "other.test"));
    cr_assert_eq(slb_tls_fail_reason(&p.s.conn), SLB_TLS_FAIL_BAD_CERT);
    pair_deinit(&p);
    slb_tls_ctx_free(c);
    c = client_with("client", SLB_TLS_VERSION_1_3);
    cr_assert(shake(&p, s, c, "other.test"));
    cr_assert_eq(slb_tls_cert_index(&p.s.conn), 1);
    pair_deinit(&p);
    slb_tls_ctx_free(c);
    slb_tls_ctx_free(s);
}

/* Concatenates files into one under the certs directory; returns its path. */
static const char *concat(const char *name, const char *a, const char *b)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", SLB_TLS_TEST_CERTS, name);
    FILE *out = fopen(path, "w");
    cr_assert_not_null(out);
    const char *parts[] = {a, b};
    for (int i = 0; i < 2; i++) {
        FILE *in = fopen(parts[i], "r");
        cr_assert_not_null(in);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
            cr_assert_eq(fwrite(buf, 1, n, out), n);
        fclose(in);
    }
    fclose(out);
    return path;
}

Test(tls_policy, every_crl_of_a_file_is_loaded)
{
    /* The intermediate's CRL first, the root's (revoking client2) second: the second block
     * must count too. */
    char cas[512], crls[512];
    snprintf(cas, sizeof(cas), "%s", concat("test-cas.pem", cert("ca.pem"), cert("inter.pem")));
    snprintf(crls, sizeof(crls), "%s",
             concat("test-crls.pem", cert("inter-crl.pem"), cert("crl.pem")));
    struct slb_tls_server_opts so = crl_server(crls);
    so.ca_file = cas;
    struct slb_tls_ctx *s = server_ctx(&so);
    cr_assert(client_accepted(s, "client", SLB_TLS_VERSION_1_3));
    cr_assert_not(client_accepted(s, "client2", SLB_TLS_VERSION_1_3));
    slb_tls_ctx_free(s);
    remove(cas);
    remove(crls);
}

Test(tls_policy, bad_crl_options_are_refused_with_the_file_named)
{
    struct slb_tls_server_opts so = crl_server("/nonexistent/crl.pem");
    cr_assert_null(slb_tls_server_ctx_new(&so, err, sizeof(err)));
    cr_assert(strstr(err, "/nonexistent/crl.pem") && strstr(err, "No such file"), "%s", err);

    so = crl_server(cert("ca.pem")); /* a certificate, not a CRL */
    cr_assert_null(slb_tls_server_ctx_new(&so, err, sizeof(err)));
    cr_assert(strstr(err, "ca.pem") && strstr(err, "no usable CRL"), "%s", err);

    so = crl_server(cert("crl.pem"));
    so.ca_file = cert("other-ca.pem"); /* the CRL's issuer is not a trusted CA */
    cr_assert_null(slb_tls_server_ctx_new(&so, err, sizeof(err)));
    cr_assert(strstr(err, "crl.pem") && strstr(err, "refused"), "%s", err);

    so = server_opts();
    so.crl_file = cert("crl.pem"); /* without client verification */
    cr_assert_null(slb_tls_server_ctx_new(&so, err, sizeof(err)));
    cr_assert(strstr(err, "CRL"), "%s", err);
}

/* --- ciphers and groups ------------------------------------------------------------------ */

Test(tls_policy, default_cipher_list_refuses_cbc_and_sha1_suites)
{
    struct slb_tls_server_opts so = server_opts(); /* ciphers NULL: the default list */
    struct slb_tls_ctx *s = server_ctx(&so);
    static const char *const old[] = {"ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA",
                                      "ECDHE-ECDSA-AES256-SHA"};
    for (size_t i = 0; i < sizeof(old) / sizeof(old[0]); i++) {
        struct slb_tls_client_opts co = client_opts();
        co.max_version = SLB_TLS_VERSION_1_2;
        co.ciphers = old[i];
        struct slb_tls_ctx *c = client_ctx(&co);
        struct pair p;
        cr_assert_not(shake(&p, s, c, "localhost"), "%s was accepted", old[i]);
        cr_assert_eq(slb_tls_fail_reason(&p.s.conn), SLB_TLS_FAIL_NO_SHARED_CIPHER, "%s", old[i]);
        pair_deinit(&p);
        slb_tls_ctx_free(c);

        /* The suite itself works when the server lists it: the refusal is the policy's. */
        struct slb_tls_server_opts lax = server_opts();
        lax.ciphers = old[i];
        struct slb_tls_ctx *ls = server_ctx(&lax);
        c = client_ctx(&co);
        cr_assert(shake(&p, ls, c, "localhost"), "%s with a server that lists it", old[i]);
        pair_deinit(&p);
        slb_tls_ctx_free(c);
        slb_tls_ctx_free(ls);
    }
    slb_tls_ctx_free(s);
}

Test(tls_policy, default_cipher_list_negotiates_aead_suites)
{
    struct slb_tls_server_opts so = server_opts();
    struct slb_tls_ctx *s = server_ctx(&so);
    for (int v = 0; v < 2; v++) {
        struct slb_tls_client_opts co = client_opts();
        co.max_version = v ? SLB_TLS_VERSION_1_2 : SLB_TLS_VERSION_1_3;
        co.ciphers = "ALL"; /* the library's whole list: the server's policy decides */
        struct slb_tls_ctx *c = client_ctx(&co);
        struct pair p;
        cr_assert(shake(&p, s, c, "localhost"));
        const char *name = slb_tls_cipher_name(&p.s.conn);
        cr_assert(strstr(name, "GCM") || strstr(name, "CHACHA20"), "%s", name);
        if (v)
            cr_assert(strncmp(name, "ECDHE-", 6) == 0, "%s", name);
        pair_deinit(&p);
        slb_tls_ctx_free(c);
    }
    slb_tls_ctx_free(s);
}

Test(tls_policy, server_groups_limit_key_exchange)
{
    struct slb_tls_server_opts so = server_opts();
    so.groups = "P-384";
    struct slb_tls_ctx *s = server_ctx(&so);
    for (int v = 0; v < 2; v++) {
        struct slb_tls_client_opts co = client_opts();
        co.max_version = v ? SLB_TLS_VERSION_1_2 : SLB_TLS_VERSION_1_3;
        co.groups = "X25519:P-256:P-384"; /* key share X25519: a HelloRetryRequest in 1.3 */
        struct slb_tls_ctx *c = client_ctx(&co);
        struct pair p;
        cr_assert(shake(&p, s, c, "localhost"), "TLS 1.%d: s %d c %d", v ? 2 : 3, p.s.rc, p.c.rc);
        cr_assert_str_eq(slb_tls_group_name(&p.s.conn), "SECP384R1", "TLS 1.%d", v ? 2 : 3);
        pair_deinit(&p);
        slb_tls_ctx_free(c);

        /* No group in common: TLS 1.3 fails. (TLS 1.2 in wolfSSL 5.5.4 falls back to a
         * curve the client offered, P-256: the README says so.) */
        co.groups = "X25519:P-256";
        c = client_ctx(&co);
        bool ok = shake(&p, s, c, "localhost");
        if (v == 0) {
            cr_assert_not(ok, "TLS 1.3: no shared group, got %s", slb_tls_group_name(&p.s.conn));
        }
        pair_deinit(&p);
        slb_tls_ctx_free(c);
    }
    slb_tls_ctx_free(s);
}

Test(tls_policy, post_quantum_groups_are_refused_by_name)
{
    /* wolfSSL 5.5.4 has no ML-KEM (nor hybrid X25519MLKEM768). */
    static const char *const lists[] = {"X25519MLKEM768", "P-256:ML-KEM-768"};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        struct slb_tls_server_opts so = server_opts();
        so.groups = lists[i];
        cr_assert_null(slb_tls_server_ctx_new(&so, err, sizeof(err)), "%s", lists[i]);
        cr_assert(strstr(err, "groups") && strstr(err, lists[i]), "%s", err);
    }
}

/* --- reading the ClientHello's server_name ------------------------------------------------- */

/* The first flight of a client sending host as SNI (NULL: none), in *len bytes (malloc'd). */
static uint8_t *client_hello(const char *host, enum slb_tls_version max, size_t *len)
{
    struct slb_tls_client_opts co = unverified_client();
    co.max_version = max;
    struct slb_tls_ctx *c = client_ctx(&co);
    struct slb_tls_server_opts so = server_opts();
    struct slb_tls_ctx *s = server_ctx(&so);
    struct pair p;
    pair_init(&p, s, c, host);
    cr_assert_geq(slb_tls_start(&p.c.conn), 0);
    *len = p.c.out.len;
    uint8_t *hello = malloc(*len);
    cr_assert_not_null(hello);
    memcpy(hello, p.c.out.buf, *len);
    pair_deinit(&p);
    slb_tls_ctx_free(c);
    slb_tls_ctx_free(s);
    return hello;
}

/* Copies n bytes so that they end at a PROT_NONE page: an over-read faults. */
static const uint8_t *guarded(const uint8_t *src, size_t n)
{
    static uint8_t *area;
    static size_t page;
    if (area == NULL) {
        page = (size_t)sysconf(_SC_PAGESIZE);
        area = mmap(NULL, 64 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        cr_assert(area != MAP_FAILED);
        cr_assert_eq(mprotect(area + 63 * page, page, PROT_NONE), 0);
    }
    cr_assert_leq(n, 63 * page);
    uint8_t *dst = area + 63 * page - n;
    memcpy(dst, src, n);
    return dst;
}

static int sni_of(const uint8_t *data, size_t n, char *name, size_t *name_len, size_t *need)
{
    return slb_tls_client_hello_sni(guarded(data, n), n, name, 256, name_len, need);
}

Test(tls_policy, client_hello_name_is_read_from_every_prefix)
{
    for (int v = 0; v < 2; v++) {
        size_t len;
        uint8_t *hello =
            client_hello("Other.Test", v ? SLB_TLS_VERSION_1_2 : SLB_TLS_VERSION_1_3, &len);
        char name[256];
        size_t name_len, need;
        cr_assert_eq(sni_of(hello, len, name, &name_len, &need), 1);
        cr_assert_eq(name_len, 10);
        cr_assert_str_eq(name, "Other.Test");
        bool seen = false;
        for (size_t n = 0; n < len; n++) {
            int rc = sni_of(hello, n, name, &name_len, &need);
            cr_assert(rc == 0 || rc == 1, "prefix %zu: %d", n, rc);
            if (rc == 0) {
                cr_assert_not(seen, "once read, a longer prefix still reads it");
                cr_assert(need > n && need <= len, "prefix %zu: need %zu of %zu", n, need, len);
            } else {
                seen = true;
                cr_assert_str_eq(name, "Other.Test");
            }
        }
        free(hello);
    }
}

Test(tls_policy, client_hello_without_sni_has_no_name)
{
    size_t len;
    uint8_t *hello = client_hello(NULL, SLB_TLS_VERSION_1_3, &len);
    char name[256];
    size_t name_len = 99, need;
    cr_assert_eq(sni_of(hello, len, name, &name_len, &need), 1);
    cr_assert_eq(name_len, 0);
    free(hello);
}

/* The handshake message of a one-record hello re-cut into records of `size` payload bytes. */
static uint8_t *refragment(const uint8_t *hello, size_t len, size_t size, size_t *out_len)
{
    size_t msg = (size_t)hello[3] << 8 | hello[4];
    cr_assert_eq(msg + 5, len, "the client sent one record");
    size_t records = (msg + size - 1) / size;
    uint8_t *out = malloc(msg + 5 * records);
    cr_assert_not_null(out);
    size_t o = 0;
    for (size_t off = 0; off < msg; off += size) {
        size_t k = msg - off < size ? msg - off : size;
        out[o++] = 22;
        out[o++] = 3;
        out[o++] = 1;
        out[o++] = (uint8_t)(k >> 8);
        out[o++] = (uint8_t)k;
        memcpy(out + o, hello + 5 + off, k);
        o += k;
    }
    *out_len = o;
    return out;
}

Test(tls_policy, client_hello_split_over_records_is_read_within_limits)
{
    size_t len;
    uint8_t *hello = client_hello("other.test", SLB_TLS_VERSION_1_3, &len);
    char name[256];
    size_t name_len, need, n;
    uint8_t *frag = refragment(hello, len, 7, &n); /* the name straddles records */
    cr_assert_leq(len / 7 + 1, SLB_TLS_HELLO_MAX_RECORDS);
    cr_assert_eq(sni_of(frag, n, name, &name_len, &need), 1);
    cr_assert_str_eq(name, "other.test");
    free(frag);
    frag = refragment(hello, len, 1, &n); /* hundreds of one-byte records: refused */
    cr_assert_eq(sni_of(frag, n, name, &name_len, &need), -EMSGSIZE);
    free(frag);
    free(hello);
}

Test(tls_policy, malformed_client_hellos_are_refused_without_over_reads)
{
    size_t len;
    uint8_t *hello = client_hello("other.test", SLB_TLS_VERSION_1_3, &len);
    uint8_t *bad = malloc(len);
    char name[256];
    size_t name_len, need;
    /* Every byte set to a few hostile values, each at every prefix length that ends there. */
    static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    for (size_t i = 0; i < len; i++) {
        for (size_t k = 0; k < sizeof(vals); k++) {
            memcpy(bad, hello, len);
            bad[i] = vals[k];
            int rc = sni_of(bad, len, name, &name_len, &need);
            cr_assert(rc == 1 || rc == 0 || rc == -EPROTO || rc == -EMSGSIZE, "%d", rc);
            cr_assert(rc != 1 || name_len < 256);
            cr_assert(rc != 0 || need > len, "more wanted only past what is there");
            rc = sni_of(bad, i + 1, name, &name_len, &need);
            cr_assert(rc == 1 || rc == 0 || rc == -EPROTO || rc == -EMSGSIZE, "%d", rc);
        }
    }
    static const uint8_t http[] = "GET / HTTP/1.1\r\n\r\n";
    cr_assert_eq(sni_of(http, sizeof(http) - 1, name, &name_len, &need), -EPROTO);
    static const uint8_t sslv2[] = {0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15};
    cr_assert_eq(sni_of(sslv2, sizeof(sslv2), name, &name_len, &need), -EPROTO);
    static const uint8_t huge[] = {22, 3, 1, 0x40, 0x00, 1, 0x10, 0x00, 0x00};
    cr_assert_eq(sni_of(huge, sizeof(huge), name, &name_len, &need), -EMSGSIZE);
    free(bad);
    free(hello);
}

Test(tls_policy, several_certificates_work_with_input_dribbled_byte_by_byte)
{
    struct slb_tls_server_opts so = two_certs();
    struct slb_tls_ctx *s = server_ctx(&so);
    struct slb_tls_client_opts co = client_opts();
    struct slb_tls_ctx *c = client_ctx(&co);
    struct pair p;
    pair_init(&p, s, c, "other.test");
    p.chunk = 1;
    cr_assert(pair_handshake(&p), "s %d c %d", p.s.rc, p.c.rc);
    cr_assert_eq(slb_tls_cert_index(&p.s.conn), 1);
    struct iovec v = {.iov_base = "hello", .iov_len = 5};
    cr_assert_eq(slb_tls_write(&p.c.conn, &v, 1), 5);
    pair_pump(&p);
    cr_assert_eq(p.s.plain_len, 5);
    pair_deinit(&p);
    slb_tls_ctx_free(c);
    slb_tls_ctx_free(s);
}

static int never_out(void *arg, const void *data, size_t len)
{
    (void)arg;
    (void)data;
    cr_assert_fail("%zu bytes sent before the ClientHello was read", len);
    return -EPIPE;
}

Test(tls_policy, session_waiting_for_its_client_hello_flushes_and_closes_quietly)
{
    struct slb_tls_server_opts so = two_certs();
    struct slb_tls_ctx *s = server_ctx(&so);
    struct slb_tls_conn conn;
    uint8_t sink[64];
    size_t got;
    cr_assert_eq(slb_tls_conn_init(&conn, s, NULL, never_out, NULL), 0);
    cr_assert_eq(slb_tls_feed(&conn, "\x16\x03\x01", 3, sink, sizeof(sink), &got), 0);
    cr_assert_eq(slb_tls_flush(&conn), 0);
    cr_assert_not(slb_tls_handshake_done(&conn));
    struct iovec v = {.iov_base = "x", .iov_len = 1};
    cr_assert_eq(slb_tls_write(&conn, &v, 1), -ENOTCONN);
    cr_assert_eq(slb_tls_close(&conn), 0);
    slb_tls_conn_deinit(&conn);
    slb_tls_ctx_free(s);
}
