/* Reloading --backends-file (SIGHUP): new backends take new slots, removed ones keep theirs
 * and get it back when re-added, weights and drain flags follow the file, and a file that
 * cannot be read or parsed, names a --backend flag's backend or needs more than
 * SLB_MAX_BACKENDS slots over the process's life is rejected whole. */
#include "balancer/config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "balancer/maglev.h"

static struct slb_config cfg, before;
static struct slb_backend_attrs cur, out; /* in_force's attributes, before and after */
static const struct slb_backends *in_force;
static char cert_path[64], key_path[64], file_path[64];
static char err[1024];

static void make_file(char *path, const char *name)
{
    snprintf(path, 64, "/tmp/slb-test-config-%s-XXXXXX", name);
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
}

static void setup(void)
{
    make_file(cert_path, "cert"); /* slb_config_load only checks they are readable */
    make_file(key_path, "key");
    make_file(file_path, "backends");
}

static void teardown(void)
{
    slb_backends_unref(in_force);
    in_force = NULL;
    unlink(cert_path);
    unlink(key_path);
    unlink(file_path);
}

TestSuite(config, .init = setup, .fini = teardown);

static void write_file(const char *text)
{
    FILE *f = fopen(file_path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

/* One --backend flag (127.0.0.1:5061, slot 0) and, if with_file, --backends-file with the
 * given contents; cur holds the attributes at start. The config keeps pointers into argv:
 * it is static. */
static void load(bool with_file, const char *file_text)
{
    static char *argv[] = {"sipslb",          "--backend",        "sips:127.0.0.1:5061",
                           "--cert",          cert_path,          "--key",
                           key_path,          "--backend-verify", "none",
                           "--backends-file", file_path};
    if (with_file)
        write_file(file_text);
    int argc = (int)(sizeof(argv) / sizeof(argv[0])) - (with_file ? 0 : 2);
    cr_assert_eq(slb_config_load(&cfg, argc, argv), 0);
    in_force = slb_backends_new(&cfg);
    cr_assert_not_null(in_force);
    cur = in_force->attrs;
}

/* One reload against in_force; a new backends object replaces it on success. */
static int reload_now(void)
{
    struct slb_backends *fresh = NULL;
    static struct slb_backends copy;
    memcpy(&copy, in_force, sizeof(copy));
    int rc = slb_config_reload_backends(&cfg, in_force, &fresh, err, sizeof(err));
    /* Workers may be reading the object in force: a reload never writes it. */
    cr_assert_eq(memcmp(&copy, in_force, sizeof(copy)), 0, "the backends in force changed");
    if (rc == 0) {
        cr_assert_neq(fresh, in_force, "a reload builds a new object");
        out = fresh->attrs;
        slb_backends_unref(in_force);
        in_force = fresh;
    }
    return rc;
}

/* Re-reads the file against cur; on success the result becomes cur. */
static int reload(const char *file_text)
{
    write_file(file_text);
    err[0] = 0;
    int rc = reload_now();
    if (rc == 0)
        cur = out;
    return rc;
}

/* The backend in a slot, as the backends in force name it. */
static const struct slb_backend_spec *spec(unsigned slot)
{
    return &in_force->spec[slot];
}

Test(config, the_file_backends_follow_the_flag_ones_at_start)
{
    load(true, "# lab\nsips:127.0.0.1:5071\n\n  sips:127.0.0.1:5072;weight=3  # big\n");
    cr_assert_eq(cur.n, 3);
    for (unsigned i = 0; i < 3; i++)
        cr_assert(cur.present[i]);
    cr_assert_str_eq(spec(0)->name, "127.0.0.1:5061");
    cr_assert_str_eq(spec(1)->name, "127.0.0.1:5071");
    cr_assert_str_eq(spec(2)->name, "127.0.0.1:5072");
    cr_assert_eq(cur.weight[2], 3);
}

Test(config, a_new_backend_takes_a_new_slot)
{
    load(true, "sips:127.0.0.1:5071\nsips:127.0.0.1:5072;weight=3\n");
    cr_assert_eq(reload("sips:127.0.0.1:5073\nsips:127.0.0.1:5071\nsips:127.0.0.1:5072;"
                        "weight=3\n"),
                 0, "%s", err);
    cr_assert_eq(out.n, 4);
    for (unsigned i = 0; i < 4; i++)
        cr_assert(out.present[i], "slot %u", i);
    cr_assert_eq(out.weight[3], 1);
    cr_assert_not(out.drain[3]);
    cr_assert_eq(out.weight[2], 3, "the others keep their slots");
    const struct slb_backend_spec *b = spec(3);
    cr_assert_str_eq(b->name, "127.0.0.1:5073");
    cr_assert_str_eq(b->host, "127.0.0.1");
    cr_assert_eq(b->port, 5073);
    cr_assert_eq(b->token, (uint32_t)slb_route_hash((struct slb_slice){b->name, strlen(b->name)}),
                 "the token a Record-Route names it by");
}

Test(config, a_removed_backend_keeps_its_slot_and_gets_it_back)
{
    load(true, "sips:127.0.0.1:5071\nsips:127.0.0.1:5072\n");
    cr_assert_eq(reload("sips:127.0.0.1:5072\n"), 0, "%s", err);
    cr_assert_eq(out.n, 3, "no slot is given up");
    cr_assert(out.present[0], "a --backend flag's backend stays");
    cr_assert_not(out.present[1]);
    cr_assert(out.present[2]);
    /* Another new one takes a fresh slot, not the free one. */
    cr_assert_eq(reload("sips:127.0.0.1:5072\nsips:127.0.0.1:5073\n"), 0, "%s", err);
    cr_assert_eq(out.n, 4);
    cr_assert_not(out.present[1]);
    cr_assert_str_eq(spec(3)->name, "127.0.0.1:5073");
    /* Back in the file: its old slot. */
    cr_assert_eq(reload("sips:127.0.0.1:5071;weight=2\nsips:127.0.0.1:5073\n"), 0, "%s", err);
    cr_assert_eq(out.n, 4);
    cr_assert(out.present[1]);
    cr_assert_eq(out.weight[1], 2);
    cr_assert_not(out.present[2]);
    cr_assert(out.present[3]);
    cr_assert_str_eq(spec(1)->name, "127.0.0.1:5071");
}

Test(config, an_empty_file_removes_every_file_backend)
{
    load(true, "sips:127.0.0.1:5071\n");
    cr_assert_eq(reload("# none for now\n"), 0, "%s", err);
    cr_assert_eq(out.n, 2);
    cr_assert(out.present[0]);
    cr_assert_not(out.present[1]);
}

Test(config, weights_and_drain_flags_follow_the_file)
{
    load(true, "sips:127.0.0.1:5071\nsips:127.0.0.1:5072;weight=3\n");
    cr_assert_eq(reload("sips:127.0.0.1:5071;weight=7;drain\nsips:127.0.0.1:5072\n"), 0, "%s", err);
    cr_assert_eq(out.n, 3);
    cr_assert_eq(out.weight[1], 7);
    cr_assert(out.drain[1]);
    cr_assert_eq(out.weight[2], 1, "a weight no longer given is the default");
    cr_assert_not(out.drain[2]);
    cr_assert_eq(reload("sips:127.0.0.1:5071;weight=7\nsips:127.0.0.1:5072;drain\n"), 0, "%s", err);
    cr_assert_not(out.drain[1]);
    cr_assert(out.drain[2]);
    cr_assert_eq(out.weight[0], 1, "a --backend flag's backend is not the file's to change");
    cr_assert_not(out.drain[0]);
}

/* A rejected reload: -EINVAL, err naming the problem, the configuration untouched. */
static void rejected(const char *file_text, const char *why)
{
    memcpy(&before, &cfg, sizeof(cfg));
    struct slb_backend_attrs was = cur;
    const struct slb_backends *was_in_force = in_force;
    struct slb_backends copy;
    memcpy(&copy, in_force, sizeof(copy));
    cr_assert_eq(reload(file_text), -EINVAL, "accepted: %s", file_text);
    cr_assert(strstr(err, why), "err '%s' does not say '%s'", err, why);
    cr_assert_eq(memcmp(&before, &cfg, sizeof(cfg)), 0, "the configuration changed");
    cr_assert_eq(in_force, was_in_force);
    cr_assert_eq(memcmp(&copy, in_force, sizeof(copy)), 0, "the backends in force changed");
    cr_assert_eq(memcmp(&was, &cur, sizeof(cur)), 0);
}

Test(config, a_bad_file_is_rejected_whole)
{
    load(true, "sips:127.0.0.1:5071\n");
    rejected("sips:127.0.0.1:5072\nsips:127.0.0.1:5073;weight=0\n", "line 2");
    rejected("sips:127.0.0.1:5072\nsip:127.0.0.1:5074\n", "line 2");
    rejected("sips:127.0.0.1:5072;colour=blue\n", "line 1");
    rejected("sips:127.0.0.1:5072\nsips:127.0.0.1:5061\n", "also a --backend flag");
    rejected("sips:127.0.0.1:5072\nsips:127.0.0.1:5072;weight=2\n", "listed twice");
    /* None of the new backends took a slot: the next new one gets slot 2. */
    cr_assert_eq(reload("sips:127.0.0.1:5075\n"), 0, "%s", err);
    cr_assert_eq(out.n, 3);
    cr_assert_str_eq(spec(2)->name, "127.0.0.1:5075");
}

Test(config, an_unreadable_file_is_rejected)
{
    load(true, "sips:127.0.0.1:5071\n");
    memcpy(&before, &cfg, sizeof(cfg));
    cr_assert_eq(unlink(file_path), 0);
    cr_assert_eq(reload_now(), -EINVAL);
    cr_assert(strstr(err, "--backends-file"), "%s", err);
    cr_assert(strstr(err, strerror(ENOENT)), "%s", err);
    cr_assert_eq(memcmp(&before, &cfg, sizeof(cfg)), 0);
}

Test(config, without_a_backends_file_there_is_nothing_to_reload)
{
    load(false, NULL);
    cr_assert_eq(reload_now(), -EINVAL);
    cr_assert(strstr(err, "no --backends-file"), "%s", err);
}

/* A file of n backends on ports from first. */
static char *many(unsigned first, unsigned n)
{
    static char text[SLB_MAX_BACKENDS * 2 * 32];
    size_t len = 0;
    text[0] = 0;
    for (unsigned i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len, "sips:127.0.0.1:%u\n", first + i);
    cr_assert_lt(len, sizeof(text));
    return text;
}

Test(config, more_than_max_backends_in_the_file_is_rejected)
{
    load(true, "sips:127.0.0.1:5071\n");
    rejected(many(6000, SLB_MAX_BACKENDS + 1), "too many backends");
}

Test(config, more_than_max_slots_over_the_process_life_is_rejected)
{
    /* The flag's backend and SLB_MAX_BACKENDS - 2 from the file: one slot left. */
    load(true, many(6000, SLB_MAX_BACKENDS - 2));
    cr_assert_eq(cur.n, SLB_MAX_BACKENDS - 1);
    /* Two new ones (the old ones removed) need two slots. */
    rejected(many(7000, 2), "more than 64 backends");
    cr_assert_eq(reload(many(7000, 1)), 0, "%s", err);
    cr_assert_eq(out.n, SLB_MAX_BACKENDS);
    cr_assert_str_eq(spec(SLB_MAX_BACKENDS - 1)->name, "127.0.0.1:7000");
    /* Every slot has been used: removed backends free none of them. */
    rejected(many(7001, 1), "more than 64 backends");
    cr_assert_eq(reload(many(6000, 3)), 0, "known backends come back: %s", err);
    cr_assert_eq(out.n, SLB_MAX_BACKENDS);
    cr_assert(out.present[1] && out.present[2] && out.present[3]);
    cr_assert_not(out.present[SLB_MAX_BACKENDS - 1]);
}

/* With only tcp:// listeners, our Via and Record-Route name the first of them as
 * HOST:PORT (once "tcp://127.0.0.1:5070" itself, a Via the scanner rejects). */
Test(config, only_tcp_listeners_advertise_the_first_as_host_port)
{
    static char *argv[] = {"sipslb",
                           "--listen",
                           "tcp://127.0.0.1:5070",
                           "--backend",
                           "sips:127.0.0.1:5061",
                           "--cert",
                           cert_path,
                           "--key",
                           key_path,
                           "--backend-verify",
                           "none"};
    cr_assert_eq(slb_config_load(&cfg, (int)(sizeof(argv) / sizeof(argv[0])), argv), 0);
    cr_assert_str_eq(cfg.advertise_hostport, "127.0.0.1:5070");
}

/* --config FILE feeds the same flag table as the command line, which has the last word. */
Test(config, a_config_file_is_flags_and_the_command_line_wins)
{
    char path[64] = "/tmp/slb-test-conf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "# sipslb\nbackend = sips:127.0.0.1:5061\ncert = %s\nkey = %s\n"
            "backend-verify = none   # lab\n\nworkers = 3\npin = true\n",
            cert_path, key_path);
    fclose(f);
    static char conf_arg[80];
    snprintf(conf_arg, sizeof(conf_arg), "--config=%s", path);
    char *argv[] = {"sipslb", conf_arg, "--workers", "2"};
    cr_assert_eq(slb_config_load(&cfg, 4, argv), 0);
    cr_assert_eq(cfg.n_backends, 1);
    cr_assert_eq(cfg.workers, 2, "the command line wins");
    cr_assert(cfg.pin);
    cr_assert_eq(cfg.backend_verify, SLB_BACKEND_VERIFY_NONE);
    slb_config_free(&cfg);
    /* A line that is not "flag = value" is refused with the line number. */
    f = fopen(path, "w");
    fprintf(f, "backend sips:127.0.0.1:5061\n");
    fclose(f);
    cr_assert_eq(slb_config_load(&cfg, 2, argv), 2);
    unlink(path);
}
