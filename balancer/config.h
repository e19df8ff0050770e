/* sipslb's configuration: the flag table, and the validated, derived form workers read.
 * Built once on the main thread before any worker starts; immutable afterwards. */
#ifndef SLB_BALANCER_CONFIG_H
#define SLB_BALANCER_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "core/flags-t.h"
#include "io/loop-t.h"

#define SLB_MAX_LISTEN        8u
#define SLB_MAX_DNS_GROUPS    8u /* --backend sips:NAME resolved through DNS */
#define SLB_MAX_BACKENDS      64u
#define SLB_MAX_CERTS         16u  /* --cert/--key pairs (chosen by SNI) */
#define SLB_MAX_WEIGHT        1000 /* a backend's ;weight=N (and the admin call's) */
#define SLB_CONFIG_FILE_LINES 512u /* flag lines in a --config file */
/* Workers take loop ids 0..SLB_MAX_WORKERS-1; the last id is the health checker's. */
#define SLB_MAX_WORKERS    (SLB_LOOPS_MAX - 1u)
#define SLB_HEALTH_LOOP_ID (SLB_LOOPS_MAX - 1u)

enum slb_verify_client {
    SLB_VERIFY_CLIENT_NONE,
    SLB_VERIFY_CLIENT_OPTIONAL,
    SLB_VERIFY_CLIENT_REQUIRE
};
enum slb_backend_verify { SLB_BACKEND_VERIFY_REQUIRE, SLB_BACKEND_VERIFY_NONE };
enum slb_tls_min { SLB_TLS_MIN_12, SLB_TLS_MIN_13 };

#define SLB_MAX_ALLOW SLB_FLAG_LIST_MAX /* --limit-allow entries */

/* An address prefix from --limit-allow: sources inside it are exempt from per-source
 * limits and bans. */
struct slb_cidr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bits;   /* prefix length */
    uint8_t addr[16];
};

/* A resolved socket address. */
struct slb_addr {
    struct sockaddr_storage sa;
    socklen_t len;
    char text[80]; /* as given, for logs */
    bool plain;    /* a tcp:// or ws:// listener: no TLS (lab interop, legacy clients) */
    bool ws;       /* a wss:// or ws:// listener: SIP over WebSocket (RFC 7118) */
};

/* One backend from --backend sips:HOST:PORT[;weight=N]. */
struct slb_backend_spec {
    char host[256]; /* name or address, for SNI and certificate checks */
    uint16_t port;
    uint32_t weight;
    bool drain;     /* ;drain: no new dialogs, existing ones still reach it */
    uint32_t token; /* hash of name: how our Record-Route names it (stable across reloads) */
    char name[320]; /* "host:port": the stable name Maglev hashes */
    struct slb_addr addr;
};

/* What a reload may change about the backends: which slots are in use
 * (slots only grow; a removed backend keeps its slot and gets it back if re-added), their
 * weights and drain flags. Owned by whoever built it; handed to the health checker whole. */
struct slb_backend_attrs {
    uint32_t n; /* slots 0..n-1 have been used */
    bool present[SLB_MAX_BACKENDS];
    uint32_t weight[SLB_MAX_BACKENDS];
    bool drain[SLB_MAX_BACKENDS];
    uint16_t priority[SLB_MAX_BACKENDS]; /* SRV priority: only the best group with a backend up
                                          * takes new dialogs (0 for every static backend) */
};

/* The backends in force: every slot ever used (a slot keeps its backend for the process's
 * life), which are present, their weights and drain flags. Immutable once built: a reload
 * builds a new one, the health checker publishes it with the routing tables, and workers
 * read it through the table they hold (router.h). Shared by reference count; the count is
 * its only mutable field. */
struct slb_backends {
    _Atomic unsigned refs;
    struct slb_backend_attrs attrs;
    bool from_file[SLB_MAX_BACKENDS];   /* listed in --backends-file (not a --backend flag) */
    uint8_t from_dns[SLB_MAX_BACKENDS]; /* 1 + the --backend sips:NAME group that found it */
    struct slb_backend_spec spec[SLB_MAX_BACKENDS];
};

struct slb_config {
    /* Flags, as parsed. */
    struct slb_flag_list listen;
    struct slb_flag_list cert, key; /* pairs, in order; the first is the default */
    const char *ca;
    int verify_client; /* enum slb_verify_client */
    int tls_min;       /* enum slb_tls_min */
    const char *ciphers;
    bool strict_sni;
    const char *crl;
    const char *groups;
    struct slb_flag_list backend;
    const char *backend_ca;
    int backend_verify; /* enum slb_backend_verify */
    const char *backend_cert, *backend_key;
    int64_t backend_conns;
    int64_t workers;
    bool pin;
    const char *advertise;
    int64_t max_conns;
    uint64_t handshake_timeout_ms;
    uint64_t idle_timeout_ms;
    int64_t max_message_size;
    int64_t maglev_size;
    int64_t retry_after_s;
    int64_t resend_max_requests; /* per link; 0: no copies */
    int64_t resend_max_bytes;    /* per link */
    uint64_t probe_interval_ms;
    uint64_t probe_timeout_ms;
    int64_t fall, rise;
    const char *probe_alive;
    uint64_t drain_idle_ms;
    int log_level;
    int log_format; /* enum slb_log_format */
    int log_target; /* enum slb_log_target */
    bool print_config;
    bool version; /* --version: main prints what this binary is and exits */
    const char *stats_file;
    const char *config_file; /* --config FILE */
    char **file_args;        /* its lines as arguments (owned: slb_config_free) */
    int n_file_args;
    const char *admin;            /* --admin ADDR:PORT, or NULL */
    const char *admin_token_file; /* --admin-token-file */
    bool log_connections;         /* --log-connections */
    const char *backends_file;
    const char *secret_file;                 /* --secret-file */
    struct slb_flag_list dns_server;         /* --dns-server ADDR:PORT */
    uint64_t dns_min_ttl_ms, dns_max_ttl_ms; /* bounds on the re-resolution period */
    char dns_names[SLB_MAX_DNS_GROUPS][256]; /* --backend sips:NAME (no port): from DNS */
    unsigned n_dns;
    uint64_t drain_timeout_ms;   /* --drain-timeout */
    const char *handover_socket; /* --handover-socket */
    bool no_path;
    bool sips_only;
    /* Limits and protection (README "Limits and protection"). */
    uint64_t message_timeout_ms;
    int64_t max_handshakes;
    int64_t client_out_max;
    uint64_t stall_timeout_ms;
    int64_t limit_conns;
    int64_t limit_conn_rate;
    int64_t limit_handshake_rate;
    int64_t limit_request_rate;
    struct slb_flag_list limit_allow;
    struct slb_flag_list proxy_protocol_from; /* --proxy-protocol-from */
    uint64_t proxy_protocol_timeout_ms;
    uint64_t ban_time_ms;
    int64_t ban_after;
    uint64_t tcp_keepalive_ms;
    int64_t spin_us; /* --spin-us */
    /* Derived by slb_config_load. */
    struct slb_addr listen_addrs[SLB_MAX_LISTEN];
    unsigned n_listen;
    struct slb_backend_spec backends[SLB_MAX_BACKENDS]; /* at start: slb_backends_new */
    unsigned n_backends; /* at start; a reload may use more slots (struct slb_backends) */
    bool from_file[SLB_MAX_BACKENDS]; /* listed in --backends-file (not a --backend flag) */
    unsigned n_workers;
    char advertise_hostport[128]; /* what goes into our Via and Record-Route */
    struct slb_addr admin_addr;   /* from --admin */
    char advertise_tcp[128];      /* the tcp:// side, for the second Record-Route; "" if none */
    char advertise_ws[128];       /* the wss:// (or ws://) side, for the browsers' Record-Route */
    bool advertise_ws_plain;      /* ... a ws:// listener: sip: URIs there */
    const char *ws_origin;        /* --ws-origin */
    uint8_t alive_class[7];       /* from --probe-alive: response classes 1..6 that count */
    bool alive_not_503;
    struct slb_cidr allow[SLB_MAX_ALLOW]; /* from --limit-allow */
    unsigned n_allow;
    struct slb_cidr proxy_from[SLB_MAX_ALLOW]; /* from --proxy-protocol-from */
    unsigned n_proxy_from;
};

/* Parses argv into cfg, checks every value, resolves addresses and checks that the
 * certificate files are readable. On a usage error prints one line naming the problem to
 * stderr and returns 2; on --help returns 1 (help printed), and on --version 1 with
 * cfg->version set (the caller prints it); 0 when cfg is ready. */
int slb_config_load(struct slb_config *cfg, int argc, char **argv);

/* Frees what slb_config_load allocated for --config (the flags point into it): at exit. */
void slb_config_free(struct slb_config *cfg);

/* The weights and drain flags as configured at start. */
void slb_config_attrs(const struct slb_config *cfg, struct slb_backend_attrs *attrs);

struct slb_dns_result;

/* A new backends object (*out, reference count 1) where DNS group `group` (its
 * --backend sips:NAME) has exactly the targets of r, with their weights and priorities:
 * new targets get new slots (dialled and probed like a reload's), targets no longer
 * published are removed (drained), the rest keep their slot. Returns 1 when something
 * changed, 0 when nothing did (*out NULL), or a negative errno with err set. */
int slb_config_dns_backends(const struct slb_backends *cur, unsigned group,
                            const struct slb_dns_result *r, struct slb_backends **out, char *err,
                            size_t errlen);

/* The backends as configured at start (reference count 1). NULL when out of memory. */
struct slb_backends *slb_backends_new(const struct slb_config *cfg);

/* Takes one more reference / drops one (the last frees it). Any thread. */
const struct slb_backends *slb_backends_ref(const struct slb_backends *b);
void slb_backends_unref(const struct slb_backends *b);

/* Re-reads --backends-file for a reload (SIGHUP) against the backends now in force (cur),
 * into a new object (*out, reference count 1): backends it no longer lists are removed
 * (their slots kept), new ones take new slots, weights and drain flags follow the file.
 * Nothing is written in place. A file that cannot be read or parsed, that names a
 * --backend flag's backend, or that needs more than SLB_MAX_BACKENDS slots is rejected
 * whole (err says why). Returns 0, -EINVAL or -ENOMEM (*out untouched then). */
int slb_config_reload_backends(const struct slb_config *cfg, const struct slb_backends *cur,
                               struct slb_backends **out, char *err, size_t errlen);

/* Whether the address (AF_INET or AF_INET6 sockaddr) lies inside one of the prefixes. */
bool slb_cidr_match(const struct slb_cidr *list, unsigned n, const struct sockaddr_storage *ss);

/* Parses "ADDR[/BITS]" (IPv4 or IPv6) into c. Returns 0 or -EINVAL. */
int slb_cidr_parse(const char *text, struct slb_cidr *c);

/* Prints the effective flags (re-parsable), for --print-config. */
void slb_config_print(const struct slb_config *cfg, FILE *out);

/* The flag table (static, read only) and its length in *n: for the man page. */
const struct slb_flag *slb_config_flags(size_t *n);

/* A socket address's IP as text (into ip, cap at least INET6_ADDRSTRLEN) and its port;
 * "0.0.0.0" and 0 for a family other than AF_INET/AF_INET6. Returns ip. */
const char *slb_sockaddr_text(const struct sockaddr *sa, char *ip, size_t cap, uint16_t *port);

/* Parses "HOST:PORT", "[V6]:PORT" into addr (numeric or resolved). Returns 0 or -EINVAL. */
int slb_config_parse_hostport(const char *text, struct slb_addr *addr, char *host, size_t host_cap,
                              uint16_t *port);

#endif
