/* Sessions: two in-memory sessions pumped into each other. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

TestSuite(tls_conn, .init = setup, .fini = teardown);

/* TLS 1.3 AES-GCM record: 5-byte header + plaintext + 1 inner content type + 16-byte tag. */
#define TLS13_GCM_OVERHEAD 22

static void fill(uint8_t *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (uint8_t)(seed >> 16);
    }
}

static int write_all(struct slb_tls_conn *c, const void *d, size_t n)
{
    struct iovec v = {.iov_base = (void *)d, .iov_len = n};
    return slb_tls_write(c, &v, 1);
}

/* Default contexts; the test frees them through this struct. */
struct fixture {
    struct slb_tls_ctx *sctx, *cctx;
    struct pair p;
};

static void fx_init(struct fixture *f, const struct slb_tls_server_opts *so,
                    const struct slb_tls_client_opts *co, const char *host)
{
    struct slb_tls_server_opts sdef = server_opts();
    struct slb_tls_client_opts cdef = client_opts();
    f->sctx = server_ctx(so ? so : &sdef);
    f->cctx = client_ctx(co ? co : &cdef);
    pair_init(&f->p, f->sctx, f->cctx, host);
}

static void fx_deinit(struct fixture *f)
{
    pair_deinit(&f->p);
    slb_tls_ctx_free(f->sctx);
    slb_tls_ctx_free(f->cctx);
}

Test(tls_conn, tls13_handshake_completes_and_verifies_server)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    cr_assert(f.p.s.events & SLB_TLS_EV_HANDSHAKE_DONE);
    cr_assert(f.p.c.events & SLB_TLS_EV_HANDSHAKE_DONE);
    cr_assert_eq(slb_tls_version(&f.p.c.conn), SLB_TLS_VERSION_1_3);
    cr_assert_eq(slb_tls_version(&f.p.s.conn), SLB_TLS_VERSION_1_3);
    cr_assert_str_eq(slb_tls_version_name(&f.p.s.conn), "TLSv1.3");
    cr_assert(strlen(slb_tls_cipher_name(&f.p.s.conn)) > 0);
    cr_assert(slb_tls_peer_verified(&f.p.c.conn), "client verified the server (and its name)");
    cr_assert_not(slb_tls_peer_verified(&f.p.s.conn), "no client certificate was asked for");
    cr_assert_not(slb_tls_resumed(&f.p.c.conn));
    cr_assert_eq(slb_tls_fail_reason(&f.p.s.conn), SLB_TLS_FAIL_NONE);
    fx_deinit(&f);
}

Test(tls_conn, tls12_handshake_completes)
{
    struct slb_tls_client_opts co = client_opts();
    co.max_version = SLB_TLS_VERSION_1_2;
    struct fixture f;
    fx_init(&f, NULL, &co, "localhost");
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    cr_assert_eq(slb_tls_version(&f.p.s.conn), SLB_TLS_VERSION_1_2);
    cr_assert_str_eq(slb_tls_version_name(&f.p.c.conn), "TLSv1.2");
    cr_assert(strstr(slb_tls_cipher_name(&f.p.s.conn), "ECDHE-ECDSA") != NULL, "%s",
              slb_tls_cipher_name(&f.p.s.conn));
    cr_assert(slb_tls_peer_verified(&f.p.c.conn));
    fx_deinit(&f);
}

Test(tls_conn, rsa_certificate_handshake_completes)
{
    struct slb_tls_server_opts so = server_opts();
    so.cert_file = cert("server-rsa.pem");
    so.key_file = cert("server-rsa.key");
    struct fixture f;
    fx_init(&f, &so, NULL, "localhost");
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    fx_deinit(&f);
}

Test(tls_conn, certificate_chain_file_verifies_against_root_only)
{
    struct slb_tls_server_opts so = server_opts();
    so.cert_file = cert("server-chain.pem");
    so.key_file = cert("server-chain.key");
    struct fixture f;
    fx_init(&f, &so, NULL, "localhost");
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    cr_assert(slb_tls_peer_verified(&f.p.c.conn));
    fx_deinit(&f);
}

Test(tls_conn, sip_uri_san_certificate_loads_and_verifies)
{
    /* server-ec.pem carries URI:sip:example.com next to DNS:localhost (RFC 5922 form):
     * wolfSSL without WOLFSSL_FPKI rejects such a certificate while parsing it. */
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    cr_assert(slb_tls_peer_verified(&f.p.c.conn));
    fx_deinit(&f);
}

Test(tls_conn, data_both_ways_is_byte_identical)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p));
    size_t n = 100000; /* several records each way */
    uint8_t *a = malloc(n), *b = malloc(n);
    fill(a, n, 1);
    fill(b, n, 2);
    cr_assert_eq(write_all(&f.p.c.conn, a, n), (int)n);
    cr_assert_eq(write_all(&f.p.s.conn, b, n), (int)n);
    pair_pump(&f.p);
    cr_assert_eq(f.p.s.plain_len, n);
    cr_assert_eq(f.p.c.plain_len, n);
    cr_assert_arr_eq(f.p.s.plain, a, n);
    cr_assert_arr_eq(f.p.c.plain, b, n);
    cr_assert_eq(f.p.s.rc, 0);
    cr_assert_eq(f.p.c.rc, 0);
    free(a);
    free(b);
    fx_deinit(&f);
}

Test(tls_conn, message_in_five_pieces_is_one_record_and_one_plaintext)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p));
    pair_pump(&f.p); /* let the TLS 1.3 ticket reach the client */
    const char *parts[5] = {"INVITE sip:bob@example.com SIP/2.0\r\n",
                            "Via: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK776asdhds\r\n",
                            "Call-ID: a84b4c76e66710@pc33.example.com\r\n",
                            "Content-Length: 4\r\n\r\n", "v=0\n"};
    struct iovec iov[5];
    size_t total = 0;
    for (int i = 0; i < 5; i++) {
        iov[i] = (struct iovec){.iov_base = (void *)parts[i], .iov_len = strlen(parts[i])};
        total += iov[i].iov_len;
    }
    size_t sends_before = f.p.c.out.sends;
    cr_assert_eq(slb_tls_write(&f.p.c.conn, iov, 5), (int)total);
    cr_assert_eq(f.p.c.out.sends - sends_before, 1, "one out call");
    cr_assert_eq(f.p.c.out.len, total + TLS13_GCM_OVERHEAD, "one record: %zu bytes", f.p.c.out.len);

    f.p.s.plain_len = 0;
    pair_pump(&f.p);
    cr_assert_eq(f.p.s.plain_len, total);
    size_t off = 0;
    for (int i = 0; i < 5; i++) {
        cr_assert_arr_eq(f.p.s.plain + off, parts[i], iov[i].iov_len);
        off += iov[i].iov_len;
    }
    fx_deinit(&f);
}

Test(tls_conn, large_message_in_pieces_uses_full_records)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p));
    pair_pump(&f.p);
    /* 40000 bytes in pieces of 1000 and an empty one: ceil(40000/16384) = 3 records. */
    size_t n = 40000;
    uint8_t *a = malloc(n);
    fill(a, n, 3);
    struct iovec iov[41];
    for (int i = 0; i < 40; i++)
        iov[i] = (struct iovec){.iov_base = a + i * 1000, .iov_len = 1000};
    iov[40] = (struct iovec){.iov_base = a, .iov_len = 0};
    size_t sends_before = f.p.c.out.sends;
    cr_assert_eq(slb_tls_write(&f.p.c.conn, iov, 41), (int)n);
    cr_assert_eq(f.p.c.out.sends - sends_before, 3);
    cr_assert_eq(f.p.c.out.len, n + 3 * TLS13_GCM_OVERHEAD);
    f.p.s.plain_len = 0;
    pair_pump(&f.p);
    cr_assert_eq(f.p.s.plain_len, n);
    cr_assert_arr_eq(f.p.s.plain, a, n);
    free(a);
    fx_deinit(&f);
}

Test(tls_conn, input_split_byte_by_byte_still_works)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    f.p.chunk = 1;
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    size_t n = 3000;
    uint8_t *a = malloc(n);
    fill(a, n, 4);
    cr_assert_eq(write_all(&f.p.c.conn, a, n), (int)n);
    cr_assert_eq(write_all(&f.p.s.conn, a, n), (int)n);
    pair_pump(&f.p);
    cr_assert_eq(f.p.s.plain_len, n);
    cr_assert_eq(f.p.c.plain_len, n);
    cr_assert_arr_eq(f.p.s.plain, a, n);
    cr_assert_arr_eq(f.p.c.plain, a, n);
    free(a);
    fx_deinit(&f);
}

Test(tls_conn, small_plaintext_buffer_holds_the_rest_until_read)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p));
    pair_pump(&f.p);
    /* Five records arrive in one chunk; the owner offers 700 bytes at a time: the chunk is
     * still consumed at once, the rest comes out through slb_tls_read. */
    size_t n = 5 * 16384;
    uint8_t *a = malloc(n);
    fill(a, n, 5);
    cr_assert_eq(write_all(&f.p.c.conn, a, n), (int)n);
    f.p.s.read_cap = 700;
    f.p.s.plain_len = 0;
    pair_pump(&f.p);
    cr_assert(f.p.s.events & SLB_TLS_EV_MORE);
    cr_assert_eq(f.p.s.rc, 0);
    cr_assert_eq(f.p.s.plain_len, n);
    cr_assert_arr_eq(f.p.s.plain, a, n);
    free(a);
    fx_deinit(&f);
}

Test(tls_conn, require_client_cert_without_one_fails_as_bad_cert)
{
    struct slb_tls_server_opts so = server_opts();
    so.verify_client = SLB_TLS_VERIFY_REQUIRE;
    so.ca_file = cert("ca.pem");
    struct fixture f;
    fx_init(&f, &so, NULL, "localhost");
    cr_assert_not(pair_handshake(&f.p));
    cr_assert_eq(f.p.s.rc, -EPROTO);
    cr_assert_eq(slb_tls_fail_reason(&f.p.s.conn), SLB_TLS_FAIL_BAD_CERT, "server: %s",
                 slb_tls_fail_name(slb_tls_fail_reason(&f.p.s.conn)));
    fx_deinit(&f);
}

Test(tls_conn, mutual_tls_verifies_client_cert)
{
    struct slb_tls_server_opts so = server_opts();
    so.verify_client = SLB_TLS_VERIFY_REQUIRE;
    so.ca_file = cert("ca.pem");
    struct slb_tls_client_opts co = client_opts();
    co.cert_file = cert("client.pem");
    co.key_file = cert("client.key");
    struct fixture f;
    fx_init(&f, &so, &co, "localhost");
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    cr_assert(slb_tls_peer_verified(&f.p.s.conn));
    fx_deinit(&f);
}

Test(tls_conn, optional_client_cert_absent_is_accepted_unverified)
{
    struct slb_tls_server_opts so = server_opts();
    so.verify_client = SLB_TLS_VERIFY_OPTIONAL;
    so.ca_file = cert("ca.pem");
    struct fixture f;
    fx_init(&f, &so, NULL, "localhost");
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    cr_assert_not(slb_tls_peer_verified(&f.p.s.conn));
    fx_deinit(&f);
}

Test(tls_conn, optional_client_cert_present_is_verified)
{
    struct slb_tls_server_opts so = server_opts();
    so.verify_client = SLB_TLS_VERIFY_OPTIONAL;
    so.ca_file = cert("ca.pem");
    struct slb_tls_client_opts co = client_opts();
    co.cert_file = cert("client.pem");
    co.key_file = cert("client.key");
    struct fixture f;
    fx_init(&f, &so, &co, "localhost");
    cr_assert(pair_handshake(&f.p), "s rc %d c rc %d", f.p.s.rc, f.p.c.rc);
    cr_assert(slb_tls_peer_verified(&f.p.s.conn));
    fx_deinit(&f);
}

Test(tls_conn, wrong_ca_fails_as_bad_cert)
{
    struct slb_tls_client_opts co = client_opts();
    co.ca_file = cert("other-ca.pem");
    struct fixture f;
    fx_init(&f, NULL, &co, "localhost");
    cr_assert_not(pair_handshake(&f.p));
    cr_assert_eq(f.p.c.rc, -EPROTO);
    char why[200];
    cr_assert_eq(slb_tls_fail_reason(&f.p.c.conn), SLB_TLS_FAIL_BAD_CERT, "%s",
                 slb_tls_error_string(&f.p.c.conn, why, sizeof(why)));
    /* The server hears an alert about its certificate. */
    cr_assert_eq(slb_tls_fail_reason(&f.p.s.conn), SLB_TLS_FAIL_BAD_CERT, "server: %s",
                 slb_tls_error_string(&f.p.s.conn, why, sizeof(why)));
    fx_deinit(&f);
}

Test(tls_conn, hostname_mismatch_fails_as_bad_cert)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "backend.example.org");
    cr_assert_not(pair_handshake(&f.p));
    char why[200];
    cr_assert_eq(slb_tls_fail_reason(&f.p.c.conn), SLB_TLS_FAIL_BAD_CERT, "%s",
                 slb_tls_error_string(&f.p.c.conn, why, sizeof(why)));
    fx_deinit(&f);
}

Test(tls_conn, verify_none_accepts_any_name_but_reports_unverified)
{
    struct slb_tls_client_opts co = client_opts();
    co.verify_server = SLB_TLS_VERIFY_NONE;
    co.ca_file = NULL;
    struct fixture f;
    fx_init(&f, NULL, &co, "backend.example.org");
    cr_assert(pair_handshake(&f.p));
    cr_assert_not(slb_tls_peer_verified(&f.p.c.conn));
    fx_deinit(&f);
}

Test(tls_conn, no_shared_cipher_is_classified)
{
    struct slb_tls_server_opts so = server_opts();
    so.ciphers = "TLS13-AES256-GCM-SHA384";
    struct slb_tls_client_opts co = client_opts();
    co.ciphers = "TLS13-AES128-GCM-SHA256";
    struct fixture f;
    fx_init(&f, &so, &co, "localhost");
    cr_assert_not(pair_handshake(&f.p));
    char why[200];
    cr_assert_eq(slb_tls_fail_reason(&f.p.s.conn), SLB_TLS_FAIL_NO_SHARED_CIPHER, "%s",
                 slb_tls_error_string(&f.p.s.conn, why, sizeof(why)));
    fx_deinit(&f);
}

Test(tls_conn, version_mismatch_is_classified_as_protocol)
{
    struct slb_tls_server_opts so = server_opts();
    so.min_version = SLB_TLS_VERSION_1_3;
    struct slb_tls_client_opts co = client_opts();
    co.max_version = SLB_TLS_VERSION_1_2;
    struct fixture f;
    fx_init(&f, &so, &co, "localhost");
    cr_assert_not(pair_handshake(&f.p));
    char why[200];
    cr_assert_eq(slb_tls_fail_reason(&f.p.s.conn), SLB_TLS_FAIL_PROTOCOL, "%s",
                 slb_tls_error_string(&f.p.s.conn, why, sizeof(why)));
    fx_deinit(&f);
}

Test(tls_conn, close_notify_is_reported_as_peer_closed)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p));
    cr_assert_eq(write_all(&f.p.c.conn, "bye", 3), 3);
    cr_assert_eq(slb_tls_close(&f.p.c.conn), 0);
    cr_assert_eq(write_all(&f.p.c.conn, "x", 1), -EPIPE, "no writes after close");
    pair_pump(&f.p);
    cr_assert(f.p.s.events & SLB_TLS_EV_PEER_CLOSED);
    cr_assert(slb_tls_peer_closed(&f.p.s.conn));
    cr_assert_eq(f.p.s.plain_len, 3, "data before close_notify is delivered");
    cr_assert_eq(f.p.s.rc, 0);
    cr_assert_eq(slb_tls_fail_reason(&f.p.s.conn), SLB_TLS_FAIL_NONE);
    /* The server answers with its own close_notify. */
    cr_assert_eq(slb_tls_close(&f.p.s.conn), 0);
    pair_pump(&f.p);
    cr_assert(slb_tls_peer_closed(&f.p.c.conn));
    fx_deinit(&f);
}

Test(tls_conn, close_during_handshake_is_peer_closed)
{
    /* TLS 1.2: the server answers the ClientHello with its first flight, then gives up with
     * close_notify: the client sees the peer close before the handshake could end. */
    struct slb_tls_client_opts co = client_opts();
    co.max_version = SLB_TLS_VERSION_1_2;
    struct fixture f;
    fx_init(&f, NULL, &co, "localhost");
    cr_assert_geq(slb_tls_start(&f.p.c.conn), 0);
    end_feed(&f.p, &f.p.s, f.p.c.out.buf, f.p.c.out.len);
    f.p.c.out.len = 0;
    cr_assert_eq(slb_tls_close(&f.p.s.conn), 0);
    pair_pump(&f.p);
    cr_assert_not(slb_tls_handshake_done(&f.p.c.conn));
    cr_assert_eq(f.p.c.rc, -EPROTO);
    char why[200];
    cr_assert_eq(slb_tls_fail_reason(&f.p.c.conn), SLB_TLS_FAIL_PEER_CLOSED, "%s",
                 slb_tls_error_string(&f.p.c.conn, why, sizeof(why)));
    fx_deinit(&f);
}

Test(tls_conn, garbage_before_handshake_is_fatal_not_a_crash)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    uint8_t junk[4096];
    fill(junk, sizeof(junk), 9);
    end_feed(&f.p, &f.p.s, junk, sizeof(junk));
    cr_assert_eq(f.p.s.rc, -EPROTO);
    cr_assert_eq(slb_tls_fail_reason(&f.p.s.conn), SLB_TLS_FAIL_PROTOCOL);
    /* Dead stays dead. */
    size_t got = 0;
    cr_assert_eq(slb_tls_feed(&f.p.s.conn, junk, 10, NULL, 0, &got), -EPROTO);
    fx_deinit(&f);
}

Test(tls_conn, garbage_after_handshake_is_fatal_not_a_crash)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p));
    /* A well-formed record header with a body that fails authentication. */
    uint8_t junk[5 + 200] = {0x17, 0x03, 0x03, 0x00, 200};
    fill(junk + 5, 200, 10);
    end_feed(&f.p, &f.p.s, junk, sizeof(junk));
    cr_assert_eq(f.p.s.rc, -EPROTO);
    cr_assert_eq(slb_tls_fail_reason(&f.p.s.conn), SLB_TLS_FAIL_PROTOCOL);
    cr_assert_eq(write_all(&f.p.s.conn, "x", 1), -EPROTO);
    fx_deinit(&f);
}

/* Handshake with sctx, return the client's resumable session. */
static struct slb_tls_session *first_session(struct slb_tls_ctx *sctx, struct slb_tls_ctx *cctx)
{
    struct pair p;
    pair_init(&p, sctx, cctx, "localhost");
    cr_assert(pair_handshake(&p), "s rc %d c rc %d", p.s.rc, p.c.rc);
    cr_assert(p.c.events & SLB_TLS_EV_NEW_SESSION, "client was told about its ticket");
    struct slb_tls_session *sess = slb_tls_session_get(&p.c.conn);
    cr_assert_not_null(sess);
    pair_deinit(&p);
    return sess;
}

static void resume_across_contexts(enum slb_tls_version max)
{
    struct slb_tls_server_opts so = server_opts();
    struct slb_tls_client_opts co = client_opts();
    co.max_version = max;
    /* Two server contexts, as two workers would have. */
    struct slb_tls_ctx *s1 = server_ctx(&so), *s2 = server_ctx(&so), *c = client_ctx(&co);
    struct slb_tls_session *sess = first_session(s1, c);

    struct pair p;
    pair_init(&p, s2, c, "localhost");
    cr_assert_eq(slb_tls_conn_set_session(&p.c.conn, sess), 0);
    cr_assert(pair_handshake(&p), "s rc %d c rc %d", p.s.rc, p.c.rc);
    cr_assert(slb_tls_resumed(&p.s.conn), "server resumed");
    cr_assert(slb_tls_resumed(&p.c.conn), "client resumed");
    cr_assert_eq(write_all(&p.c.conn, "ping", 4), 4);
    pair_pump(&p);
    cr_assert_eq(p.s.plain_len, 4);
    pair_deinit(&p);

    slb_tls_session_free(sess);
    slb_tls_ctx_free(s1);
    slb_tls_ctx_free(s2);
    slb_tls_ctx_free(c);
}

Test(tls_conn, tls13_ticket_resumes_on_another_server_context)
{
    resume_across_contexts(SLB_TLS_VERSION_1_3);
}

Test(tls_conn, tls12_ticket_resumes_on_another_server_context)
{
    resume_across_contexts(SLB_TLS_VERSION_1_2);
}

Test(tls_conn, ticket_under_another_key_falls_back_to_full_handshake)
{
    struct slb_tls_server_opts so = server_opts();
    struct slb_tls_client_opts co = client_opts();
    struct slb_tls_ctx *s1 = server_ctx(&so), *c = client_ctx(&co);
    struct slb_tls_session *sess = first_session(s1, c);
    uint8_t key[SLB_TLS_TICKET_KEY_BYTES];
    fill(key, sizeof(key), 77);
    cr_assert_eq(slb_tls_set_ticket_keys(key, 1), 0);

    struct pair p;
    pair_init(&p, s1, c, "localhost");
    cr_assert_eq(slb_tls_conn_set_session(&p.c.conn, sess), 0);
    cr_assert(pair_handshake(&p), "s rc %d c rc %d", p.s.rc, p.c.rc);
    cr_assert_not(slb_tls_resumed(&p.s.conn));
    pair_deinit(&p);
    slb_tls_session_free(sess);
    slb_tls_ctx_free(s1);
    slb_tls_ctx_free(c);
}

/* A rotation keeps the tickets already out: sealed under key A, opened after B became the
 * newest with A still listed; refused once A is dropped. */
Test(tls_conn, ticket_resumes_after_rotation_while_its_key_is_listed)
{
    uint8_t keys[2][SLB_TLS_TICKET_KEY_BYTES];
    fill(keys[1], sizeof(keys[1]), 31); /* A */
    fill(keys[0], sizeof(keys[0]), 32); /* B */
    cr_assert_eq(slb_tls_set_ticket_keys(keys[1], 1), 0);
    struct slb_tls_server_opts so = server_opts();
    struct slb_tls_client_opts co = client_opts();
    struct slb_tls_ctx *s1 = server_ctx(&so), *c = client_ctx(&co);
    struct slb_tls_session *sess = first_session(s1, c);
    cr_assert_eq(slb_tls_set_ticket_keys(keys, 2), 0); /* B newest, A still verifies */
    for (int round = 0; round < 2; round++) {
        if (round == 1)
            cr_assert_eq(slb_tls_set_ticket_keys(keys[0], 1), 0); /* A removed */
        struct pair p;
        pair_init(&p, s1, c, "localhost");
        cr_assert_eq(slb_tls_conn_set_session(&p.c.conn, sess), 0);
        cr_assert(pair_handshake(&p), "s rc %d c rc %d", p.s.rc, p.c.rc);
        cr_assert_eq(slb_tls_resumed(&p.s.conn), round == 0, "round %d", round);
        pair_deinit(&p);
    }
    slb_tls_session_free(sess);
    slb_tls_ctx_free(s1);
    slb_tls_ctx_free(c);
}

Test(tls_conn, blocked_output_is_retried_by_flush)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    /* The server's first flight is refused once: it must come out on flush, intact. */
    f.p.s.out.refuse = 1;
    cr_assert_geq(slb_tls_start(&f.p.c.conn), 0);
    pair_pump(&f.p);
    cr_assert(f.p.s.events & SLB_TLS_EV_WANT_WRITE);
    cr_assert(slb_tls_want_write(&f.p.s.conn));
    cr_assert_not(slb_tls_handshake_done(&f.p.c.conn));
    int rc = slb_tls_flush(&f.p.s.conn);
    cr_assert_geq(rc, 0);
    cr_assert_not(rc & SLB_TLS_EV_WANT_WRITE);
    pair_pump(&f.p);
    cr_assert(slb_tls_handshake_done(&f.p.c.conn) && slb_tls_handshake_done(&f.p.s.conn));

    /* A message whose record is refused is still taken; flush sends it once. */
    uint8_t a[5000], b[3000];
    fill(a, sizeof(a), 11);
    fill(b, sizeof(b), 12);
    f.p.c.out.refuse = 1;
    cr_assert_eq(write_all(&f.p.c.conn, a, sizeof(a)), (int)sizeof(a));
    cr_assert(slb_tls_want_write(&f.p.c.conn));
    f.p.c.out.refuse = 1; /* the queue is still full when the next message comes */
    cr_assert_eq(write_all(&f.p.c.conn, b, sizeof(b)), -EAGAIN, "still blocked: nothing taken");
    cr_assert_eq(f.p.c.out.refuse, 0, "the write retried the queued record first");
    rc = slb_tls_flush(&f.p.c.conn);
    cr_assert_geq(rc, 0);
    cr_assert_not(slb_tls_want_write(&f.p.c.conn));
    cr_assert_eq(write_all(&f.p.c.conn, b, sizeof(b)), (int)sizeof(b));
    f.p.s.plain_len = 0;
    pair_pump(&f.p);
    cr_assert_eq(f.p.s.plain_len, sizeof(a) + sizeof(b));
    cr_assert_arr_eq(f.p.s.plain, a, sizeof(a));
    cr_assert_arr_eq(f.p.s.plain + sizeof(a), b, sizeof(b));
    fx_deinit(&f);
}

Test(tls_conn, hard_output_error_fails_the_session)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert(pair_handshake(&f.p));
    f.p.c.out.hard_error = -EPIPE;
    cr_assert_eq(write_all(&f.p.c.conn, "x", 1), -EPIPE);
    cr_assert_eq(slb_tls_fail_reason(&f.p.c.conn), SLB_TLS_FAIL_OTHER);
    fx_deinit(&f);
}

Test(tls_conn, write_before_handshake_is_refused)
{
    struct fixture f;
    fx_init(&f, NULL, NULL, "localhost");
    cr_assert_eq(write_all(&f.p.c.conn, "x", 1), -ENOTCONN);
    fx_deinit(&f);
}

Test(tls_conn, p256_group_is_negotiated_when_asked)
{
    struct slb_tls_client_opts co = client_opts();
    co.groups = "P-256";
    struct fixture f;
    fx_init(&f, NULL, &co, "localhost");
    cr_assert(pair_handshake(&f.p));
    cr_assert_str_eq(slb_tls_group_name(&f.p.s.conn), "SECP256R1");
    fx_deinit(&f);
}
