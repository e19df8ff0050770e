/* --secret-file: parsing (comments, blanks, bad lines, duplicates, too many keys), the
 * permission check, and what a key becomes (deterministic, distinct per key and per use). */
#include "balancer/secrets.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define K1 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define K2 "ffeeddccbbaa99887766554433221100FFEEDDCCBBAA99887766554433221100"

static int parse(const char *text, struct slb_secrets *s, char *err)
{
    return slb_secrets_parse(text, strlen(text), s, err, 200);
}

Test(secrets, keys_newest_first_with_comments_and_blanks)
{
    struct slb_secrets s;
    char err[200] = "";
    const char *text = "# rotated 2026-12-07\n\n  " K1 "  # the new one\r\n" K2;
    cr_assert_eq(parse(text, &s, err), 2, "%s", err);
    cr_assert_eq(s.key[0][0], 0x00);
    cr_assert_eq(s.key[0][31], 0xff);
    cr_assert_eq(s.key[1][0], 0xff, "upper case hex is taken");
    cr_assert_eq(s.key[1][31], 0x00);
}

Test(secrets, bad_files_are_refused_with_the_line)
{
    struct slb_secrets s;
    char err[200];
    cr_assert_eq(parse("# nothing\n\n", &s, err), -EINVAL);
    cr_assert(strstr(err, "no key"), "%s", err);
    cr_assert_eq(parse(K1 "\n" K1 "0\n", &s, err), -EINVAL, "65 digits");
    cr_assert(strstr(err, "line 2"), "%s", err);
    char bad[] = K1;
    bad[10] = 'g';
    cr_assert_eq(parse(bad, &s, err), -EINVAL);
    cr_assert(strstr(err, "column 11"), "%s", err);
    cr_assert_eq(parse(K1 "\n" K1, &s, err), -EINVAL, "the same key twice");
    cr_assert(strstr(err, "same key"), "%s", err);
    char many[9 * 66 + 1] = "";
    for (int i = 0; i < 9; i++) {
        char line[67];
        snprintf(line, sizeof(line), "%064x\n", i + 1);
        strcat(many, line);
    }
    cr_assert_eq(parse(many, &s, err), -EINVAL, "more than SLB_SECRETS_MAX");
    cr_assert(strstr(err, "more than 8"), "%s", err);
    many[8 * 65] = 0;
    cr_assert_eq(parse(many, &s, err), 8);
}

Test(secrets, file_readable_by_others_is_refused)
{
    char path[] = "/tmp/slb-secret-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, K1 "\n", 65), 65);
    close(fd);
    struct slb_secrets s;
    char err[512];
    cr_assert_eq(chmod(path, 0600), 0);
    cr_assert_eq(slb_secrets_read(path, &s, err, sizeof(err)), 1, "%s", err);
    cr_assert_eq(chmod(path, 0640), 0);
    cr_assert_eq(slb_secrets_read(path, &s, err, sizeof(err)), -EPERM);
    cr_assert(strstr(err, "chmod 600"), "%s", err);
    cr_assert_eq(chmod(path, 0604), 0);
    cr_assert_eq(slb_secrets_read(path, &s, err, sizeof(err)), -EPERM);
    unlink(path);
    cr_assert_eq(slb_secrets_read(path, &s, err, sizeof(err)), -ENOENT);
}

Test(secrets, a_key_gives_stable_distinct_mac_and_ticket_keys)
{
    struct slb_secrets s;
    char err[200];
    cr_assert_eq(parse(K1 "\n" K2, &s, err), 2);
    struct slb_siphash_key a, a2, b;
    uint8_t t1[48], t2[48];
    cr_assert_eq(slb_secret_mac_key(s.key[0], &a), 0);
    cr_assert_eq(slb_secret_mac_key(s.key[0], &a2), 0);
    cr_assert_eq(slb_secret_mac_key(s.key[1], &b), 0);
    cr_assert(a.k0 == a2.k0 && a.k1 == a2.k1, "the same in every instance");
    cr_assert(a.k0 != b.k0 || a.k1 != b.k1);
    cr_assert_eq(slb_secret_ticket_key(s.key[0], t1), 0);
    cr_assert_eq(slb_secret_ticket_key(s.key[1], t2), 0);
    cr_assert_arr_neq(t1, t2, sizeof(t1));
    cr_assert_neq(memcmp(t1, &a, sizeof(a)), 0, "uses do not share bytes");
}
