/* Contexts: what loads, and how refusals read. */
#include <errno.h>
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

TestSuite(tls_ctx, .init = setup, .fini = teardown);

static char err[512];

static struct slb_tls_ctx *try_server(struct slb_tls_server_opts o)
{
    err[0] = '\0';
    return slb_tls_server_ctx_new(&o, err, sizeof(err));
}

Test(tls_ctx, ecdsa_and_rsa_server_certs_load)
{
    struct slb_tls_ctx *ec = try_server(server_opts());
    cr_assert_not_null(ec, "%s", err);
    struct slb_tls_server_opts o = server_opts();
    o.cert_file = cert("server-rsa.pem");
    o.key_file = cert("server-rsa.key");
    struct slb_tls_ctx *rsa = try_server(o);
    cr_assert_not_null(rsa, "%s", err);
    slb_tls_ctx_free(ec);
    slb_tls_ctx_free(rsa);
}

Test(tls_ctx, key_not_matching_cert_is_rejected_with_clear_message)
{
    struct slb_tls_server_opts o = server_opts();
    o.key_file = cert("wrong.key");
    cr_assert_null(try_server(o));
    cr_assert(strstr(err, "wrong.key") != NULL, "err: %s", err);
    cr_assert(strstr(err, "does not match") != NULL, "err: %s", err);
    cr_assert(strstr(err, "server-ec.pem") != NULL, "err: %s", err);
    cr_assert(strchr(err, '\n') == NULL, "one line: %s", err);
}

Test(tls_ctx, missing_files_are_named_with_os_reason)
{
    struct slb_tls_server_opts o = server_opts();
    o.cert_file = "/nonexistent/cert.pem";
    cr_assert_null(try_server(o));
    cr_assert(strstr(err, "/nonexistent/cert.pem") && strstr(err, "No such file"), "%s", err);

    o = server_opts();
    o.verify_client = SLB_TLS_VERIFY_REQUIRE;
    o.ca_file = "/nonexistent/ca.pem";
    cr_assert_null(try_server(o));
    cr_assert(strstr(err, "CA file /nonexistent/ca.pem"), "%s", err);
}

Test(tls_ctx, key_file_given_as_cert_is_rejected)
{
    struct slb_tls_server_opts o = server_opts();
    o.cert_file = cert("server-ec.key");
    cr_assert_null(try_server(o));
    cr_assert(strstr(err, "certificate file") && strstr(err, "server-ec.key"), "%s", err);
}

Test(tls_ctx, client_verification_needs_a_ca)
{
    struct slb_tls_server_opts o = server_opts();
    o.verify_client = SLB_TLS_VERIFY_REQUIRE;
    cr_assert_null(try_server(o));
    cr_assert(strstr(err, "CA file"), "%s", err);

    struct slb_tls_client_opts c = client_opts();
    c.ca_file = NULL;
    cr_assert_null(slb_tls_client_ctx_new(&c, err, sizeof(err)));
    cr_assert(strstr(err, "CA file"), "%s", err);
}

Test(tls_ctx, bad_versions_ciphers_and_groups_are_rejected)
{
    struct slb_tls_server_opts o = server_opts();
    o.min_version = SLB_TLS_VERSION_1_3;
    o.max_version = SLB_TLS_VERSION_1_2;
    cr_assert_null(try_server(o));
    cr_assert(strstr(err, "minimum TLS version"), "%s", err);

    o = server_opts();
    o.ciphers = "NO-SUCH-CIPHER";
    cr_assert_null(try_server(o));
    cr_assert(strstr(err, "NO-SUCH-CIPHER"), "%s", err);

    o = server_opts();
    o.groups = "P-256:brainpool";
    cr_assert_null(try_server(o));
    cr_assert(strstr(err, "groups"), "%s", err);
}

Test(tls_ctx, client_cert_needs_its_key)
{
    struct slb_tls_client_opts c = client_opts();
    c.cert_file = cert("client.pem");
    cr_assert_null(slb_tls_client_ctx_new(&c, err, sizeof(err)));
    cr_assert(strstr(err, "key"), "%s", err);
    c.key_file = cert("client.key");
    struct slb_tls_ctx *ctx = slb_tls_client_ctx_new(&c, err, sizeof(err));
    cr_assert_not_null(ctx, "%s", err);
    slb_tls_ctx_free(ctx);
}

Test(tls_ctx, ticket_key_count_is_checked)
{
    unsigned char k[SLB_TLS_TICKET_KEYS_MAX + 1][SLB_TLS_TICKET_KEY_BYTES] = {{1}};
    cr_assert_eq(slb_tls_set_ticket_keys(k, 0), -EINVAL);
    cr_assert_eq(slb_tls_set_ticket_keys(k, SLB_TLS_TICKET_KEYS_MAX + 1), -EINVAL);
    cr_assert_eq(slb_tls_set_ticket_keys(NULL, 1), -EINVAL);
    cr_assert_eq(slb_tls_set_ticket_keys(k, 1), 0);
    cr_assert_eq(slb_tls_set_ticket_keys(k, SLB_TLS_TICKET_KEYS_MAX), 0);
}

Test(tls_ctx, hkdf_matches_rfc5869_and_labels_differ)
{
    /* RFC 5869 A.3 (SHA-256, no salt, no info) gives 8da4e775a563c18f715f802a063c5a31... */
    uint8_t ikm[22], okm[42];
    memset(ikm, 0x0b, sizeof(ikm));
    cr_assert_eq(slb_tls_hkdf_sha256(ikm, sizeof(ikm), "", okm, sizeof(okm)), 0);
    const uint8_t want[8] = {0x8d, 0xa4, 0xe7, 0x75, 0xa5, 0x63, 0xc1, 0x8f};
    cr_assert_arr_eq(okm, want, sizeof(want));
    uint8_t a[32], b[32];
    cr_assert_eq(slb_tls_hkdf_sha256(ikm, sizeof(ikm), "a", a, sizeof(a)), 0);
    cr_assert_eq(slb_tls_hkdf_sha256(ikm, sizeof(ikm), "b", b, sizeof(b)), 0);
    cr_assert_arr_neq(a, b, sizeof(a));
}

Test(tls_ctx, library_reports_itself)
{
    cr_assert(strlen(slb_tls_library_version()) > 0);
}
