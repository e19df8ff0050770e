/* TLS over memory buffers: wolfSSL contexts and per-connection sessions.
 *
 * io_uring does all socket I/O; wolfSSL never touches a socket. The owner hands received
 * ciphertext to slb_tls_feed, gets plaintext back in its own buffer, and receives outgoing
 * ciphertext through the slb_tls_out_fn it set at init.
 *
 * Return convention: >= 0 success (an event mask or a count), negative errno on failure.
 * After a session failed, every call on it returns the same negative errno (-EPROTO for a
 * TLS failure: see slb_tls_fail_reason) until slb_tls_conn_deinit. */
#ifndef SLB_TLS_TLS_H
#define SLB_TLS_TLS_H

#include <sys/uio.h>

#include "tls/tls-t.h"

/* --- process ---------------------------------------------------------------------------- */

/* Initialise wolfSSL and draw a random ticket key. Call once at boot, before any context is
 * created and before worker threads start. Returns 0 or a negative errno. */
int slb_tls_init(void);

/* Replace the process-wide ticket keys: n (1..SLB_TLS_TICKET_KEYS_MAX) keys of
 * SLB_TLS_TICKET_KEY_BYTES bytes each (16 name, 32 key), newest first. The newest seals new
 * tickets; every one opens tickets that name it, so instances sharing keys resume each
 * other's sessions and a rotation keeps the tickets already out. Any thread, any time (the
 * swap is atomic). Returns 0, -EINVAL or -ENOMEM. The bytes are copied. */
int slb_tls_set_ticket_keys(const void *keys, unsigned n);

/* HKDF-SHA256 (RFC 5869, no salt) of secret with the label info into out_len bytes: how
 * --secret-file's keys become ticket and MAC keys. Returns 0 or a negative errno. */
int slb_tls_hkdf_sha256(const void *secret, size_t secret_len, const char *info, void *out,
                        size_t out_len);

/* Free per-thread wolfSSL caches (the fixed-point ECC cache). Call on each worker's exit. */
void slb_tls_thread_cleanup(void);

/* Undo slb_tls_init after every context is freed; wipes the ticket key. */
void slb_tls_cleanup(void);

/* The linked wolfSSL: version string and whether its x86-64 speed-ups are compiled in. */
const char *slb_tls_library_version(void);
bool slb_tls_library_has_asm(void);

/* --- contexts --------------------------------------------------------------------------- */

/* Server (listener) context from PEM files. Checks that each key matches its certificate.
 * With several certificates, the SNI name a client sends picks the one whose DNS
 * subjectAltNames match it (exact names before "*.domain" wildcards, which cover one label;
 * then the order given); no SNI or no match gets the first, or with strict_sni an
 * unrecognized_name alert. Every other certificate needs a DNS subjectAltName.
 * With crl_file, client certificates are checked against its CRLs (PEM blocks or one DER
 * CRL, each signed by a CA of ca_file and not expired; a client whose issuer has no CRL
 * there is refused). ciphers NULL means SLB_TLS_CIPHERS_DEFAULT.
 * Every server context issues tickets under the process-wide key, so a ticket issued by one
 * worker's context resumes on another's. Returns NULL on failure with one line in err
 * naming the file or option at fault. */
struct slb_tls_ctx *slb_tls_server_ctx_new(const struct slb_tls_server_opts *opts, char *err,
                                           size_t errlen);

/* Client (backend-side) context. Same error convention; ciphers NULL means
 * SLB_TLS_CIPHERS_DEFAULT here too. */
struct slb_tls_ctx *slb_tls_client_ctx_new(const struct slb_tls_client_opts *opts, char *err,
                                           size_t errlen);

/* Free a context; NULL is fine. Sessions made from it must have been deinit'd. */
void slb_tls_ctx_free(struct slb_tls_ctx *ctx);

/* --- sessions --------------------------------------------------------------------------- */

/* Prepare conn (embedded in the caller's connection) for one TLS connection. The side comes
 * from ctx. For a client, host (may be NULL) is sent as SNI unless it is an IP literal and,
 * when the context verifies, the server certificate must match it (DNS name or IP). Servers
 * ignore host. out/arg receive all outgoing ciphertext. Only allocation: wolfSSL_new.
 * conn must stay at the same address until deinit: wolfSSL's I/O callbacks point at it.
 * Returns 0, -ENOMEM, or -EINVAL. */
int slb_tls_conn_init(struct slb_tls_conn *conn, struct slb_tls_ctx *ctx, const char *host,
                      slb_tls_out_fn out, void *arg);

/* Release everything the session holds; never calls out. Safe on a zeroed or deinit'd conn. */
void slb_tls_conn_deinit(struct slb_tls_conn *conn);

/* Bounds the ciphertext this session holds for its owner (see slb_tls_feed) at bytes
 * instead of SLB_TLS_STASH_MAX_BYTES; past it the session fails with -ENOBUFS. 0 restores
 * the default. An owner that pauses its receive while output is blocked or its plaintext
 * buffer is full needs only what the kernel may still deliver after the pause. */
void slb_tls_conn_set_stash_max(struct slb_tls_conn *conn, uint32_t bytes);

/* Server side, before the handshake: ask this client for no certificate whatever the
 * context's --verify-client says. For browsers (wss:// listeners): they never hold one for
 * us, and Chromium answers a CertificateRequest by asking its user, which a headless or
 * kiosk browser cancels. */
void slb_tls_conn_no_client_cert(struct slb_tls_conn *conn);

/* Client: offer a session from slb_tls_session_get for resumption. Before the first feed/start
 * only. The session stays owned by the caller. Returns 0 or -EINVAL. */
int slb_tls_conn_set_session(struct slb_tls_conn *conn, struct slb_tls_session *sess);

/* Client: send the ClientHello (through out). Returns an event mask like slb_tls_feed or a
 * negative errno. Servers need no start: their first feed carries the ClientHello. */
int slb_tls_start(struct slb_tls_conn *conn);

/* Hand over received ciphertext: all len bytes are consumed during the call, so the caller may
 * recycle its receive buffer right after. Drives the handshake, then decrypts into
 * plain_out[0..cap) and sets *plain_len. Output produced meanwhile (handshake flights,
 * tickets, KeyUpdate, alerts) goes to out before this returns.
 * Returns an event mask (enum slb_tls_event) or a negative errno: -EPROTO the session failed
 * (slb_tls_fail_reason says why; an alert may have been sent to out), -ENOBUFS more than
 * SLB_TLS_STASH_MAX_BYTES of undelivered ciphertext, -EPIPE out failed hard.
 * When plain_out fills first, the rest of the ciphertext is kept (in wolfSSL's record buffer,
 * or copied to a stash allocated only then) and SLB_TLS_EV_MORE is set: call slb_tls_read.
 * An owner that drains SLB_TLS_EV_MORE first and offers cap >= len + SLB_TLS_RECORD_PLAIN_MAX
 * never fills up: decryption only shrinks data, and wolfSSL holds at most one partial record
 * from earlier calls. */
int slb_tls_feed(struct slb_tls_conn *conn, const void *cipher, size_t len, void *plain_out,
                 size_t cap, size_t *plain_len);

/* Continue delivering plaintext held back by an earlier SLB_TLS_EV_MORE. */
static inline int slb_tls_read(struct slb_tls_conn *conn, void *plain_out, size_t cap,
                               size_t *plain_len)
{
    return slb_tls_feed(conn, NULL, 0, plain_out, cap, plain_len);
}

/* Encrypt one message given as iovcnt pieces into as few records as possible: pieces are
 * gathered (per-thread scratch, no allocation) into records of up to SLB_TLS_RECORD_PLAIN_MAX
 * bytes, so a message of up to 16 KiB is exactly one record and one out call.
 * Returns the number of plaintext bytes taken: the whole message normally; fewer when out
 * blocked midway through a message above 16 KiB (write the rest after slb_tls_flush);
 * -EAGAIN when output was already blocked and nothing was taken; -ENOTCONN before the
 * handshake completed; -EMSGSIZE if the total overflows; -EPROTO/-EPIPE on failure. */
int slb_tls_write(struct slb_tls_conn *conn, const struct iovec *iov, int iovcnt);

/* Retry output that out refused earlier. Returns an event mask: SLB_TLS_EV_WANT_WRITE if still
 * blocked, SLB_TLS_EV_MORE if input is waiting for slb_tls_read, SLB_TLS_EV_HANDSHAKE_DONE if the
 * retried flight completed it; or a negative errno. */
int slb_tls_flush(struct slb_tls_conn *conn);

/* Send close_notify (RFC 8446 6.1) through out. Does not wait for the peer's. Returns 0,
 * -EAGAIN if out was blocked (the alert is queued: slb_tls_flush), or a negative errno. */
int slb_tls_close(struct slb_tls_conn *conn);

/* --- state ------------------------------------------------------------------------------ */

bool slb_tls_handshake_done(const struct slb_tls_conn *conn);
bool slb_tls_peer_closed(const struct slb_tls_conn *conn);
bool slb_tls_want_write(const struct slb_tls_conn *conn);

/* True when the peer presented a certificate that was verified against the context's CAs
 * (and, for a client, matched the host). False with verification off or no client cert. */
bool slb_tls_peer_verified(const struct slb_tls_conn *conn);

/* Memory the session holds for undelivered input (its stash), for the owner's budgets. */
static inline size_t slb_tls_stash_bytes(const struct slb_tls_conn *conn)
{
    return conn->stash_cap;
}

/* Server: which certificate of the context the session presents (0: the first, the default;
 * others chosen by SNI). 0 before the ClientHello. */
unsigned slb_tls_cert_index(const struct slb_tls_conn *conn);

/* True when the handshake resumed a session (ticket) instead of a full key exchange. */
bool slb_tls_resumed(const struct slb_tls_conn *conn);

/* Negotiated protocol: SLB_TLS_VERSION_1_2/1_3, or 0 before the handshake. */
enum slb_tls_version slb_tls_version(const struct slb_tls_conn *conn);

/* "TLSv1.3"..., negotiated cipher suite name (wolfSSL naming), key exchange group ("SECP256R1",
 * "X25519"). Static strings, "" when unknown. */
const char *slb_tls_version_name(const struct slb_tls_conn *conn);
const char *slb_tls_cipher_name(const struct slb_tls_conn *conn);
const char *slb_tls_group_name(const struct slb_tls_conn *conn);

/* Why the session failed (SLB_TLS_FAIL_NONE while it has not). */
enum slb_tls_fail slb_tls_fail_reason(const struct slb_tls_conn *conn);

/* Short stable name of a reason ("protocol", "bad-cert", ...) for counters and logs. */
const char *slb_tls_fail_name(enum slb_tls_fail reason);

/* One line describing the last wolfSSL error of conn (code and text) into buf. Returns buf. */
const char *slb_tls_error_string(const struct slb_tls_conn *conn, char *buf, size_t len);

/* --- ClientHello ----------------------------------------------------------------------- */

/* Pure: the SNI host name in the TLS ClientHello at the start of data, the first bytes a
 * client sent (record headers included; the ClientHello may span several handshake records).
 * Returns 1 when it could be read: the first host_name, NUL-terminated, in name[0..cap) with
 * *name_len bytes, or *name_len 0 when there is none (or it is empty, holds a NUL, or does not
 * fit cap). 0 when more bytes are needed: *need is the total length worth waiting for.
 * -EPROTO when data does not start with a well-formed ClientHello; -EMSGSIZE past
 * SLB_TLS_HELLO_MAX_BYTES or SLB_TLS_HELLO_MAX_RECORDS. Reads nothing past data + len. */
int slb_tls_client_hello_sni(const void *data, size_t len, char *name, size_t cap,
                             size_t *name_len, size_t *need);

/* --- client sessions (resumption) ------------------------------------------------------- */

/* Client: a reference to the current resumable session (after SLB_TLS_EV_NEW_SESSION, or any
 * time after the handshake), or NULL. The caller owns it. Keep one per backend: a session
 * only resumes with the server that issued it. */
struct slb_tls_session *slb_tls_session_get(struct slb_tls_conn *conn);
void slb_tls_session_free(struct slb_tls_session *sess);

#endif
